#!/usr/bin/env bash
# Installs the package with its test extras and runs every test of the project:
#   1. the C library with warnings as errors, and its C tests (ctest);
#   2. the same C tests against an ASan+UBSan build;
#   3. the Python package (pip install ".[test]", torch pinned to 2.13.0) and its pytest suite.
# Usage: bash scripts/test.sh            (from anywhere; it works in the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-2}

echo "== C library, warnings as errors, and the C tests"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DIFA_WERROR=ON >/dev/null
cmake --build build/release -j"$JOBS"
ctest --test-dir build/release --output-on-failure -j"$JOBS"

echo "== C tests under AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIFA_WERROR=ON \
      -DIFA_SANITIZE=address,undefined >/dev/null
cmake --build build/asan -j"$JOBS"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/asan --output-on-failure -j"$JOBS"

echo "== Python package and its tests"
"$PYTHON" -m pip install --quiet ".[test]"
# Run from the tests folder so that `import custom_ops` finds the installed package, not the
# source tree.
"$PYTHON" -m pytest tests/python -q -p no:cacheprovider
