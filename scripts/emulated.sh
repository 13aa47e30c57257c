#!/usr/bin/env bash
# The C tests on CPUs other than this one, under QEMU's user-mode emulation:
#   1. x86-64 CPU models without AVX-512: Haswell (AVX2, FMA, F16C) and Nehalem (SSE4.2, no AVX).
#      The native release build's test programs run unchanged; the library's run-time choice
#      must be avx2 and ref, and every test must pass there. An AVX-512 or AVX2 instruction
#      outside its own kernel file would stop the program with SIGILL. On a CPU with AVX2, FMA
#      and F16C but without AVX-512 (this project's CI machine) the native ctest run already
#      chose avx2 and ran every program on it, so the Haswell model runs only test_api, for its
#      choice: the whole set there took three minutes and repeated the native run.
#   2. arm64: a cross build with warnings as errors (the portable C and the reference kernels;
#      no x86 file is compiled) and its ctest run.
#   3. On an x86-64 CPU with AVX2 but without AVX-512 (where the AVX-512 kernels are built but
#      never run): the AVX-512 kernel file compiled against SIMDe instead of the AVX-512
#      instructions (CMake IFA_EMULATE_AVX512, tests/emulated/avx512_simde.h), then the C tests
#      and the Python suite with that table chosen as avx512. Not QEMU: its user mode has no
#      AVX-512. One generic copy of each kernel (IFA_KERNELS_ONE_COPY), as the sanitizer builds,
#      which keeps the two builds near a minute each.
# Tools (Debian): qemu-user for parts 1 and 2; gcc-aarch64-linux-gnu and libc6-dev-arm64-cross
# for the second; libsimde-dev for the third. A part whose tools are missing is skipped with a
# message.
# Usage: bash scripts/emulated.sh [--install-tools]   (after the release build of
#   scripts/test.sh, build/release). --install-tools first installs the missing tools with
#   apt-get where it runs as root (scripts/test.sh passes it); a failed install only skips
#   the parts that need them.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-2}
NATIVE=${NATIVE:-build/release}

install_tools() {
  local need=()
  command -v qemu-x86_64 >/dev/null 2>&1 || need+=(qemu-user)
  command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu)
  [ -d /usr/aarch64-linux-gnu/lib ] || need+=(libc6-dev-arm64-cross)
  [ -f /usr/include/simde/x86/avx512.h ] || need+=(libsimde-dev)
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "not installing ${need[*]}: that needs root and apt-get"
    return 0
  fi
  # At most 3 + 2 + 3 minutes, so that a slow mirror cannot hold CI for long.
  echo "installing ${need[*]} with apt-get (IFA_EMULATED=0 skips this step)"
  mkdir -p build
  { DEBIAN_FRONTEND=noninteractive timeout 180 apt-get install -y -q --no-install-recommends "${need[@]}" ||
    { timeout 120 apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive timeout 180 apt-get install -y -q --no-install-recommends "${need[@]}"; }
  } > build/emulated-apt.log 2>&1 || echo "could not install them (build/emulated-apt.log); their parts are skipped"
}

[ "${1:-}" = "--install-tools" ] && install_tools

cpu_flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
has_flag() { case " ${cpu_flags#*:} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
# The native CPU has what the AVX2 kernels need: x86-64 with AVX2, FMA and F16C.
native_has_avx2() { [ "$(uname -m)" = x86_64 ] && has_flag avx2 && has_flag fma && has_flag f16c; }
# ... and runs them itself: no AVX-512F.
native_is_avx2() { native_has_avx2 && ! has_flag avx512f; }

if ! command -v qemu-x86_64 >/dev/null 2>&1; then
  echo "x86-64 models: skipped (no qemu-x86_64; Debian package qemu-user)"
else
  case "$(uname -m)" in
  x86_64)
    for model in Haswell:avx2 Nehalem:ref; do
      cpu=${model%%:*} want=${model##*:}
      out=$(IFA_ISA_VERBOSE=1 qemu-x86_64 -cpu "$cpu" "$NATIVE/tests/c/test_api" 2>&1 >/dev/null || true)
      line=$(printf '%s\n' "$out" | grep '^ifa:' || true)
      case "$line" in
      *"chosen: $want") echo "$cpu: $line" ;;
      *) printf '%s\n' "$out" | tail -n 5
         echo "$cpu: expected the $want kernels to be chosen" >&2; exit 1 ;;
      esac
      programs=("$NATIVE"/tests/c/test_*)
      if [ "$cpu" = Haswell ] && native_is_avx2; then
        echo "$cpu: test_api only; the native ctest run chose avx2 on this CPU and ran the rest there"
        programs=("$NATIVE/tests/c/test_api")
      fi
      for t in "${programs[@]}"; do
        [ -f "$t" ] && [ -x "$t" ] || continue
        qemu-x86_64 -cpu "$cpu" "$t" > "$NATIVE/emulated-$cpu-$(basename "$t").log" 2>&1 ||
          { tail -n 20 "$NATIVE/emulated-$cpu-$(basename "$t").log"; echo "$cpu: $(basename "$t") failed" >&2; exit 1; }
        echo "$cpu: $(basename "$t"): $(tail -n 1 "$NATIVE/emulated-$cpu-$(basename "$t").log")"
      done
    done
    ;;
  *) echo "x86-64 models: skipped (this machine is $(uname -m))" ;;
  esac
fi

if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || ! command -v qemu-aarch64 >/dev/null 2>&1 ||
   [ ! -d /usr/aarch64-linux-gnu/lib ]; then
  echo "arm64: skipped (needs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user)"
else
  cmake -S . -B build/arm64 -DCMAKE_TOOLCHAIN_FILE=scripts/toolchains/aarch64-linux-gnu.cmake \
        -DCMAKE_BUILD_TYPE=Release -DIFA_WERROR=ON >/dev/null
  cmake --build build/arm64 -j"$JOBS"
  ctest --test-dir build/arm64 --output-on-failure -j"$JOBS"
fi

if ! native_has_avx2; then
  echo "AVX-512 through SIMDe: skipped (needs an x86-64 CPU with AVX2, FMA and F16C)"
elif has_flag avx512f; then
  echo "AVX-512 through SIMDe: skipped (this CPU runs the AVX-512 kernels themselves)"
elif [ ! -f /usr/include/simde/x86/avx512.h ]; then
  echo "AVX-512 through SIMDe: skipped (no SIMDe headers; Debian package libsimde-dev)"
else
  cmake -S . -B build/emulated-avx512 -DCMAKE_BUILD_TYPE=Release -DIFA_WERROR=ON -DIFA_EMULATE_AVX512=ON \
        -DCMAKE_C_FLAGS=-DIFA_KERNELS_ONE_COPY=1 >/dev/null
  cmake --build build/emulated-avx512 -j"$JOBS"
  line=$(IFA_ISA_VERBOSE=1 build/emulated-avx512/tests/c/test_api 2>&1 >/dev/null | grep '^ifa:' || true)
  case "$line" in
  *"chosen: avx512") echo "AVX-512 through SIMDe: $line" ;;
  *) echo "AVX-512 through SIMDe: expected the avx512 kernels to be chosen, got: $line" >&2; exit 1 ;;
  esac
  ctest --test-dir build/emulated-avx512 --output-on-failure -j"$JOBS"
  PYTHON=${PYTHON:-python3}
  if "$PYTHON" -c "import numpy, pytest" >/dev/null 2>&1; then
    "$PYTHON" -m pip install --quiet --no-deps --upgrade --target build/py-emulated-avx512 \
      -C cmake.define.IFA_EMULATE_AVX512=ON -C cmake.define.CMAKE_C_FLAGS=-DIFA_KERNELS_ONE_COPY=1 \
      -C build-dir=build/py-emulated-avx512-build .
    PYTHONPATH="$PWD/build/py-emulated-avx512" "$PYTHON" -c "import custom_ops as c
f = c.__file__
assert 'py-emulated-avx512' in f, f
assert c.isa() == 'avx512', c.isa()"
    PYTHONPATH="$PWD/build/py-emulated-avx512" IFA_STRESS_SECONDS=5 \
      "$PYTHON" -m pytest tests/python -q -p no:cacheprovider
  else
    echo "AVX-512 through SIMDe, Python suite: skipped (numpy and pytest not installed)"
  fi
fi
