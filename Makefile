# The README's two commands. Both create .venv on first use (Python 3.11+, pip, make only).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: verify test test-matrix bench venv lint clean FORCE

# The checkout is installed as the package `iohandler` (model/ -> iohandler.model, ...). The
# "strict" editable mode links each file into build/, which mypy can follow (the default mode's
# import hook it cannot); a new or removed file in a package folder needs a reinstall, so the
# stamp also depends on the list of those files.
PKG_FILES := $(shell find model impl specs -type f -not -path '*/__pycache__/*' 2>/dev/null | sort)

$(VENV)/.pkgfiles: FORCE
	@mkdir -p $(VENV)
	@echo '$(PKG_FILES)' | cmp -s - $@ || echo '$(PKG_FILES)' > $@

$(STAMP): pyproject.toml $(VENV)/.pkgfiles
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	rm -rf build/__editable__.*
	$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=strict
	touch $(STAMP)

FORCE:

venv: $(STAMP)

# The main job: mypy strict, ruff, CrossHair, lockstep, exhaustive, catalogue, vectors; one summary.
verify: $(STAMP)
	$(BIN)/iohandler verify --json verify-report.json

# The tests (what CI runs), with the bounded, derandomized `ci` Hypothesis profile unless told
# otherwise, on both cores: a test file stays on one worker (module-level caches, stats files).
test: $(STAMP)
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci} $(BIN)/python -m pytest -q -n 2 --dist loadfile

# The unit and vector suites under every CPython 3.11+ on the machine, each installed as a wheel
# would be (.ci/test-matrix says which it found); CI runs it after `make test`.
test-matrix:
	bash .ci/test-matrix

# Side-by-side benchmarks (about 3 min; BENCH_ARGS=--quick for about 20 s). Results in bench/results/.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/python -m mypy --strict
	$(BIN)/python -m ruff check .

clean:
	rm -rf $(VENV) .venv-matrix .mypy_cache .pytest_cache .ruff_cache .hypothesis
