#!/usr/bin/env bash
# Mutation testing of model/ and impl/ with mutmut. By hand only (slow: tens of minutes), never
# in CI. Results: .ci/mutation/RESULTS.md (written by hand from the summary this prints).
#
#   .ci/mutation/run.sh                 run everything (JOBS=2 workers by default)
#   .ci/mutation/run.sh show NAME       the diff of one mutant (after a run)
#   .ci/mutation/run.sh 'iohandler.impl.wakeup.*'   only the mutants matching (fnmatch) these
#
# It works on a scratch copy ($MUTATION_WORKDIR, default /tmp/iohandler-mutation) so the checkout
# is never touched, with this folder's setup.cfg as mutmut's configuration.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${MUTATION_WORKDIR:-/tmp/iohandler-mutation}
BIN=$ROOT/.venv/bin
export HYPOTHESIS_PROFILE=dev IOHANDLER_BUDGET=mutation

if [[ ${1:-} == show ]]; then
    cd "$WORK" && exec "$BIN/mutmut" show "$2"
fi

"$BIN/python" -c "import mutmut, pytest_timeout" 2>/dev/null ||
    "$BIN/python" -m pip install --quiet 'mutmut>=3.3,<4' 'pytest-timeout>=2.3'
rm -rf "$WORK"
mkdir -p "$WORK"
# The tracked files as they are in the working tree (untracked work in progress would make
# tests such as the SPEC table check see files the commit does not have).
git -C "$ROOT" ls-files -z | tar -C "$ROOT" --null -T - -cf - | tar -C "$WORK" -xf -
cp "$ROOT/.ci/mutation/setup.cfg" "$WORK/setup.cfg"
cd "$WORK"
# The tests import iohandler.model, .impl and .specs. mutmut names a mutant after its file's path
# and puts mutants/ first on sys.path, so the copy it mutates is laid out as the package:
# iohandler/{model,impl,specs} (setup.cfg). The top-level folders stay, unmutated, for the tests
# that read files by path (SPEC.md, the vectors, the sources).
mkdir -p iohandler
cp -r model impl specs iohandler/
# MainLoop.__del__ runs inside garbage collection; mutmut's trampoline there (a ContextVar set
# nested in another one's) crashed CPython 3.11.7 with a segfault in the stats run. The
# finalizer is left unmutated (its behaviour is tested by test_reliability_lifecycle).
sed -i 's/^\(    def __del__(self.*:\)$/\1  # pragma: no mutate block/' iohandler/impl/loop.py
grep -q 'def __del__.*no mutate block' iohandler/impl/loop.py
# The copy's generated SPEC table must be fresh, or test_regen_check_is_clean fails for a reason
# no mutant caused; the unmutated model rewrites nothing else.
PYTHONPATH="$WORK" "$BIN/python" -m iohandler.model.regen >/dev/null
"$BIN/mutmut" run --max-children "${JOBS:-2}" "$@" || true   # non-zero when mutants survive
# Had the tests imported the checkout, mutmut would have stopped early ("tests import the
# source under a different module path"): the summary then counts no mutants.
"$BIN/mutmut" results --all true > "$WORK/results.txt" 2>&1 || "$BIN/mutmut" results > "$WORK/results.txt" 2>&1 || true
# Code that only a forked child runs is invisible to mutmut's test mapping: survivors are run
# once more against the tests that fork (recheck.py; summary.py counts what they kill).
"$BIN/python" "$ROOT/.ci/mutation/recheck.py" "$WORK" || true
"$BIN/python" "$ROOT/.ci/mutation/summary.py" "$WORK"
