#!/usr/bin/env bash
# The C tests on CPUs other than this one, under QEMU's user-mode emulation:
#   1. x86-64 CPU models without AVX-512: Haswell (AVX2, FMA, F16C) and Nehalem (SSE4.2, no AVX).
#      The native release build's test programs run unchanged; the library's run-time choice
#      must be avx2 and ref, and every test must pass there. An AVX-512 or AVX2 instruction
#      outside its own kernel file would stop the program with SIGILL.
#   2. arm64: a cross build with warnings as errors (the portable C and the reference kernels;
#      no x86 file is compiled) and its ctest run.
# Tools (Debian): qemu-user for both parts; gcc-aarch64-linux-gnu and libc6-dev-arm64-cross
# for the second. A part whose tools are missing is skipped with a message.
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
      for t in "$NATIVE"/tests/c/test_*; do
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
