#!/usr/bin/env bash
# Installs the package with its test extras and runs every test of the project:
#   1. the C library with warnings as errors, and its C tests (ctest); an experiment build of
#      ifa_bench (-DIFA_EXPERIMENT_KERNELS=ON, one copy of each kernel) and one short --ab run;
#   2. the same C tests against an ASan+UBSan build;
#   3. the fuzz corpus (tests/fuzz/corpus) replayed under ASan+UBSan, without libFuzzer;
#   4. the threading test (tests/c/test_threads.c) under ThreadSanitizer;
#   5. the Python package (pip install ".[test]", torch pinned to 2.13.0) and its pytest suite,
#      including the stress test (IFA_STRESS_SECONDS, default 15) and the LeakSanitizer check;
#   6. the same pytest suite against an ASan+UBSan build of the extension and library;
#   7. only where clang is installed (not in plain CI): a short libFuzzer run of each target,
#      IFA_FUZZ_SECONDS seconds each (default 20; 0 skips it);
#   8. scripts/emulated.sh: the C tests on emulated x86-64 CPUs without AVX-512 and without AVX,
#      and an arm64 cross build with its C tests, under QEMU (about 2.5 minutes); on a CPU with
#      AVX2 but without AVX-512, the C tests and the Python suite on the AVX-512 kernels compiled
#      against SIMDe (about 2.5 minutes). It installs its Debian packages (qemu-user,
#      gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, libsimde-dev) where it runs as root, and
#      skips what their absence prevents; IFA_EMULATED=0 skips the step.
# docs/reliability.md says what each sanitizer step guarantees and how to run longer checks.
# Usage: bash scripts/test.sh            (from anywhere; it works in the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-2}

# Each step fails the script on its first error (set -e), so reaching the end means every step
# passed; the last line counts them in the plain "N passed, N failed" form CI reads.
STEPS=0
step() {
  echo "== $*"
  STEPS=$((STEPS + 1))
}
SAN_ENV=(ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
         UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)

step "C library, warnings as errors, and the C tests"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DIFA_WERROR=ON >/dev/null
cmake --build build/release -j"$JOBS"
ctest --test-dir build/release --output-on-failure -j"$JOBS"

step "Experiment build: ifa_bench --ab runs (docs/benchmarks.md, A/B in one process)"
# One generic copy of each kernel (IFA_KERNELS_ONE_COPY): this step checks that the experiment
# machinery builds and runs, and the release build above compiled the copies per group size.
# With them, its four kernel files took 106 s to build; without, 28 s.
cmake -S . -B build/experiment -DCMAKE_BUILD_TYPE=Release -DIFA_WERROR=ON -DIFA_EXPERIMENT_KERNELS=ON \
      -DIFA_BUILD_TESTS=OFF -DCMAKE_C_FLAGS=-DIFA_KERNELS_ONE_COPY=1 >/dev/null
cmake --build build/experiment -j"$JOBS" --target ifa_bench
build/experiment/bench/ifa_bench --ab --no-fixed-cost --bw-mib 16 --bw-reps 1 --budget 0 \
    --min-reps 20 --max-reps 20 --shape llama3-8b:1:512:128:fp16:dense > build/experiment/ab.txt
cat build/experiment/ab.txt
grep "ab: " build/experiment/ab.txt > /dev/null

step "C tests under AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIFA_WERROR=ON \
      -DIFA_SANITIZE=address,undefined >/dev/null
cmake --build build/asan -j"$JOBS"
env "${SAN_ENV[@]}" ctest --test-dir build/asan --output-on-failure -j"$JOBS"

step "Fuzz corpus replayed under AddressSanitizer + UndefinedBehaviorSanitizer"
# Already part of the ctest run above when the top-level CMakeLists.txt adds tests/fuzz;
# otherwise the fuzz directory is built on its own (it builds libifa from the parent).
if ctest --test-dir build/asan -N 2>/dev/null | grep -q fuzz_replay; then
  echo "(replayed by the ctest run above)"
else
  cmake -S tests/fuzz -B build/fuzz-replay -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DIFA_SANITIZE=address,undefined \
        -DCMAKE_C_FLAGS="-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla -Werror" \
        >/dev/null
  cmake --build build/fuzz-replay -j"$JOBS"
  env "${SAN_ENV[@]}" ctest --test-dir build/fuzz-replay --output-on-failure -j"$JOBS"
fi

step "Threads under ThreadSanitizer"
cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIFA_WERROR=ON \
      -DIFA_SANITIZE=thread >/dev/null
cmake --build build/tsan -j"$JOBS" --target test_threads test_api
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 ./build/tsan/tests/c/test_threads
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 ./build/tsan/tests/c/test_api

step "Python package and its tests"
"$PYTHON" -m pip install --quiet ".[test]"
# Run from the tests folder so that `import custom_ops` finds the installed package, not the
# source tree.
"$PYTHON" -m pytest tests/python -q -p no:cacheprovider

step "Python tests against an ASan+UBSan build of the extension"
# A second copy of the package, built with the sanitizers, in its own folder; libasan must be
# the first library loaded, hence LD_PRELOAD. CPython itself leaks at exit, so leak detection
# is off here (test_stress.py runs its own LeakSanitizer check on the plain build).
"$PYTHON" -m pip install --quiet --no-deps --upgrade --target build/py-asan \
  -C cmake.define.IFA_SANITIZE=address,undefined -C cmake.build-type=RelWithDebInfo \
  -C build-dir=build/py-asan-build .
LIBASAN=$(gcc -print-file-name=libasan.so)
PYTHONPATH="$PWD/build/py-asan" LD_PRELOAD="$LIBASAN" PYTHONMALLOC=malloc IFA_STRESS_SECONDS=5 \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$PYTHON" -c "import custom_ops, sys; assert 'py-asan' in custom_ops.__file__, custom_ops.__file__"
PYTHONPATH="$PWD/build/py-asan" LD_PRELOAD="$LIBASAN" PYTHONMALLOC=malloc IFA_STRESS_SECONDS=5 \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$PYTHON" -m pytest tests/python -q -p no:cacheprovider

FUZZ_SECONDS=${IFA_FUZZ_SECONDS:-20}
if command -v clang >/dev/null 2>&1 && [ "$FUZZ_SECONDS" != 0 ]; then
  step "libFuzzer, ${FUZZ_SECONDS} s per target (clang found)"
  cmake -S tests/fuzz -B build/fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DIFA_FUZZ=ON -DIFA_SANITIZE=address,undefined >/dev/null
  cmake --build build/fuzz -j"$JOBS" --target fuzz_validate fuzz_pages
  for target in validate pages; do
    # New inputs go to a scratch folder; the committed corpus is only read.
    mkdir -p "build/fuzz/new-$target"
    ./build/fuzz/fuzz_"$target" -max_total_time="$FUZZ_SECONDS" -timeout=20 -max_len=2048 \
      -artifact_prefix="build/fuzz/" "build/fuzz/new-$target" "tests/fuzz/corpus/$target" \
      2>&1 | tail -n 3
  done
else
  echo "== libFuzzer skipped (no clang, or IFA_FUZZ_SECONDS=0); the corpus replay above ran"
fi

if [ "${IFA_EMULATED:-1}" != 0 ]; then
  step "C tests on emulated CPUs: x86-64 without AVX-512 or AVX, arm64 (QEMU)"
  JOBS="$JOBS" bash scripts/emulated.sh --install-tools
else
  echo "== emulated CPUs skipped (IFA_EMULATED=0); the tests above ran every ISA this CPU has"
fi

echo "test.sh: $STEPS passed, 0 failed"
