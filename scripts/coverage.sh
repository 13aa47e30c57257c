#!/usr/bin/env bash
# Line and branch coverage of the C library and the Python extension by the C tests (ctest) and
# the Python suite together, so that code no test runs is found (docs/reliability.md, Coverage).
# Not part of scripts/test.sh or CI: it adds two instrumented builds and a third pass over the
# tests (about 5 minutes here) and proves nothing the tests do not; it shows what they miss.
#   1. build/cov: the library and C tests with gcc --coverage; ctest;
#   2. build/py-cov: the package with the same flags, imported through PYTHONPATH; pytest;
#   3. gcovr (from PyPI, installed if missing) merges both and prints the lines and branches
#      never run, per file; COVERAGE_HTML=1 also writes html/index.html in the C build folder;
#      coverage.py (PyPI too) does the same for the package's Python files.
# The AVX-512 kernel file shows 0% on a CPU without AVX-512. COVERAGE_SIMDE=1 (on an AVX2 CPU,
# with libsimde-dev installed, as scripts/emulated.sh installs it) builds both with that file
# compiled against SIMDe instead (IFA_EMULATE_AVX512), in build/cov-emu and build/py-cov-emu,
# so that its lines are counted too (about 5 minutes more to build).
# Usage: bash scripts/coverage.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-2}
# -fprofile-update=atomic: the counters are shared by the library's worker threads, and plain
# increments lose counts (gcov then reports negative branch counts and gcovr stops).
FLAGS="--coverage -fprofile-update=atomic -O1"
SUFFIX="" EMULATE=OFF
if [ "${COVERAGE_SIMDE:-0}" = 1 ]; then
  SUFFIX="-emu" EMULATE=ON
fi
CBUILD=build/cov$SUFFIX PYTARGET=build/py-cov$SUFFIX PYBUILD=build/py-cov$SUFFIX-build

"$PYTHON" -m gcovr --version >/dev/null 2>&1 || "$PYTHON" -m pip install --quiet gcovr
"$PYTHON" -m coverage --version >/dev/null 2>&1 || "$PYTHON" -m pip install --quiet coverage

echo "== C library and C tests with coverage"
cmake -S . -B "$CBUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS="$FLAGS" \
      -DCMAKE_EXE_LINKER_FLAGS=--coverage -DIFA_EMULATE_AVX512=$EMULATE >/dev/null
cmake --build "$CBUILD" -j"$JOBS"
find "$CBUILD" -name '*.gcda' -delete
ctest --test-dir "$CBUILD" --output-on-failure -j"$JOBS"

echo "== Python package and its tests with coverage"
"$PYTHON" -m pip install --quiet --no-deps --upgrade --target "$PYTARGET" \
  -C cmake.define.CMAKE_C_FLAGS="$FLAGS" -C cmake.define.CMAKE_MODULE_LINKER_FLAGS=--coverage \
  -C cmake.define.IFA_EMULATE_AVX512=$EMULATE -C cmake.build-type=RelWithDebInfo \
  -C build-dir="$PYBUILD" .
find "$PYBUILD" -name '*.gcda' -delete
# coverage.py counts the package's Python layer (__init__.py, __main__.py) in the same run.
PYTHONPATH="$PWD/$PYTARGET" "$PYTHON" -m coverage run --data-file="$PYBUILD/.coverage" \
  --include="$PWD/$PYTARGET/custom_ops/*" -m pytest tests/python -q -p no:cacheprovider

echo "== Coverage (lines, then branches; the branches include those the compiler adds)"
REPORT=(-r . "$CBUILD" "$PYBUILD" --filter 'src/' --filter 'python/')
"$PYTHON" -m gcovr "${REPORT[@]}"
"$PYTHON" -m gcovr "${REPORT[@]}" --txt-metric branch
echo "== Coverage of the Python layer (coverage.py)"
"$PYTHON" -m coverage report -m --data-file="$PYBUILD/.coverage"
if [ "${COVERAGE_HTML:-0}" = 1 ]; then
  "$PYTHON" -m gcovr "${REPORT[@]}" --html-details "$CBUILD/html/index.html"
  echo "coverage.sh: $CBUILD/html/index.html"
fi
