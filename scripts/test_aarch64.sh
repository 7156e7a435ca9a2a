#!/usr/bin/env bash
# Cross-compile lens_stats for aarch64-unknown-linux-gnu and run its `cargo test` (kernels,
# rayon pool, every IsaKind::available() copy: Portable and Neon) under qemu-user.
#
# rustup cannot fetch an aarch64 std offline, so this uses Debian's own Rust (bookworm-security
# `rustc-web`/`cargo-web`, 1.96 at the time of writing) with its multiarch aarch64 std
# (`libstd-rust-web-dev:arm64`), the GNU cross linker and qemu-user. Missing packages are
# installed once (needs root and Debian apt); later runs only build and test.
#
# The runner is `qemu-aarch64 -L /`: the arm64 std pulls in Debian's multiarch libc6:arm64
# (/lib/ld-linux-aarch64.so.1, /lib/aarch64-linux-gnu). `-L /usr/aarch64-linux-gnu` would mix
# the cross package's ld.so (a different 2.36 build) with that libc, and pthread_create then
# spins forever in the loader's stack list.
#
# `--install-only` stops after the packages (scripts/build_wheel.sh uses it).
# Environment: CARGO_TARGET_DIR (default target/aarch64, so the main build is untouched),
# AARCH64_TEST_ARGS (extra arguments to `cargo test`, e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
PACKAGES=(rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu
  libc6-dev-arm64-cross qemu-user)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "test_aarch64: installing ${missing[*]}" >&2
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  dpkg --print-foreign-architectures | grep -qx arm64 || $SUDO dpkg --add-architecture arm64
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

[[ "${1:-}" == --install-only ]] && exit 0

# Debian's compiler and cargo, not rustup's proxies (which have no aarch64 std here).
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/aarch64}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /"
# The workspace's rust-version follows the x86 AVX-512 intrinsics (1.89), which are cfg'd out
# on aarch64; Debian's compiler may be older or newer than rustup's. The release profile's fat
# LTO with one codegen unit is for the shipped library; the tests keep opt-level 3 but skip it
# (a much shorter build, same arithmetic). Examples (benchmarks) are not built.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
# shellcheck disable=SC2086
/usr/bin/cargo test --quiet --release --ignore-rust-version -p lens_stats --lib --tests \
  --target "$TARGET" ${AARCH64_TEST_ARGS:-}
