#!/usr/bin/env bash
# The long fuzz run: the fuzz tests (tests/test_fuzz_*.py) with FUZZ_SCALE (default 25)
# times the inputs of the test suite's bounded run (a few minutes at the default), then
# how many inputs of which kinds were tried. Extra arguments go to pytest (e.g. -k sip).
#   scripts/fuzz.sh                  # FUZZ_SCALE=25
#   FUZZ_SCALE=10 scripts/fuzz.sh -x
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export HYPOTHESIS_PROFILE=long FUZZ_SCALE=${FUZZ_SCALE:-25}
export PYTHONPATH="$PWD/tests:$PWD:$PWD/plugins${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m pytest tests/test_fuzz_*.py -p fuzzing -p no:cacheprovider -q \
    --hypothesis-show-statistics "$@"
