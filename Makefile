# The README's two commands. Both create .venv on first use (Python 3.11+, pip, make only).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: verify test bench venv lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The main job: mypy strict, ruff, CrossHair, lockstep, exhaustive, catalogue, vectors; one summary.
verify: $(STAMP)
	$(BIN)/iohandler verify

# The tests (what CI runs), with the bounded, derandomized `ci` Hypothesis profile unless told otherwise.
test: $(STAMP)
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci} $(BIN)/python -m pytest -q

# Side-by-side benchmarks (about 3 min; BENCH_ARGS=--quick for about 20 s). Results in bench/results/.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/python -m mypy --strict
	$(BIN)/python -m ruff check .

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
