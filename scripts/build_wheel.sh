#!/usr/bin/env bash
# Build the release wheel: one abi3 (CPython >= 3.10) manylinux2014 (glibc >= 2.17) wheel per
# architecture, linked by zig (ziglang from PyPI) so that it needs no old-glibc build image, and
# checked with auditwheel (`auditwheel show` must find it consistent with its platform tag).
#
#   scripts/build_wheel.sh [x86_64|aarch64] [OUT_DIR]     (defaults: x86_64, dist)
#
# x86_64 uses the rustup toolchain. aarch64 cross-compiles with Debian's rustc-web and its arm64
# std (rustup has no aarch64 std offline; scripts/test_aarch64.sh installs them), by putting
# Debian's cargo and rustc first on PATH for maturin. VENV (default .venv) must hold maturin;
# ziglang and auditwheel are installed into it when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

ARCH="${1:-x86_64}"
OUT="${2:-dist}"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"

"$PY" -c "import ziglang, auditwheel" 2>/dev/null \
  || "$PY" -m pip install --quiet "ziglang>=0.13" "auditwheel>=6"

# maturin finds zig as `python -m ziglang` with the first python on PATH.
PATH="$(cd "$VENV/bin" && pwd):$PATH"
# Built into a fresh folder, checked there, then moved to OUT.
built="$(mktemp -d)"
trap 'rm -rf "$built"' EXIT
args=(build --release --quiet --zig --compatibility manylinux2014 --out "$built")
case "$ARCH" in
  x86_64)
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/wheel-x86_64}"
    ;;
  aarch64)
    [[ -x /usr/bin/rustc && -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ]] \
      || bash scripts/test_aarch64.sh --install-only
    shims="$(pwd)/target/debian-rust-bin"
    mkdir -p "$shims"
    ln -sf /usr/bin/cargo "$shims/cargo"
    ln -sf /usr/bin/rustc "$shims/rustc"
    PATH="$shims:$PATH"
    export RUSTC=/usr/bin/rustc
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/wheel-aarch64}"
    args+=(--target aarch64-unknown-linux-gnu)
    ;;
  *)
    echo "build_wheel.sh: unknown architecture '$ARCH' (x86_64 or aarch64)" >&2
    exit 2
    ;;
esac
export PATH

"$PY" -m maturin "${args[@]}"
mkdir -p "$OUT"
for wheel in "$built"/*.whl; do
  # auditwheel reads the ELF files of the wheel (any architecture) and names the most
  # compatible tag their symbol versions and libraries allow.
  report=$("$VENV/bin/auditwheel" show "$wheel")
  if ! grep -q "manylinux_2_17_$ARCH" <<<"$report"; then
    echo "build_wheel.sh: auditwheel does not accept $wheel as manylinux_2_17_$ARCH:" >&2
    echo "$report" >&2
    exit 1
  fi
  mv -f "$wheel" "$OUT/"
  echo "$OUT/$(basename "$wheel")"
done
