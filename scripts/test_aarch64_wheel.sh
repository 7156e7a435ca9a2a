#!/usr/bin/env bash
# Install-and-import check of the aarch64 wheel under qemu-user, without an ARM machine:
# Debian's arm64 CPython 3.11 (the .debs fetched with `apt-get download` and unpacked into a
# folder, not installed: python3:arm64 would replace the system's python3) and numpy's
# manylinux aarch64 wheel from PyPI, with the wheel unpacked beside it. The smoke test
# (scripts/aarch64_wheel_smoke.py) compares entropy, KL, logsumexp, total variation and top-k on
# float32, half and bfloat16 rows of 50,304 entries with float64 numpy, in the NEON copy (which
# must be the one in use) and again with TUNED_LENS_SIMD=portable.
#
#   scripts/test_aarch64_wheel.sh [WHEEL]   (default: build one with scripts/build_wheel.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
ROOT="$(pwd)/target/aarch64-python"
wheel="${1:-}"
if [[ -z "$wheel" ]]; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
  wheel=$(VENV="$VENV" bash scripts/build_wheel.sh aarch64 "$out" | tail -1)
fi
bash scripts/test_aarch64.sh --install-only

DEBS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libffi8 zlib1g libexpat1
  libbz2-1.0 liblzma5 libssl3 libsqlite3-0 libncursesw6 libtinfo6 libreadline8 libuuid1
  libdb5.3 libcrypt1 libnsl2 libtirpc3)
if [[ ! -x "$ROOT/sysroot/usr/bin/python3.11" ]]; then
  mkdir -p "$ROOT/debs" "$ROOT/sysroot"
  (cd "$ROOT/debs" && apt-get download -qq "${DEBS[@]/%/:arm64}" 2>/dev/null)
  for deb in "$ROOT"/debs/*.deb; do dpkg -x "$deb" "$ROOT/sysroot"; done
fi
rm -rf "$ROOT/site" && mkdir -p "$ROOT/site" "$ROOT/dl"
"$VENV/bin/python" -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp "numpy>=1.24" \
  -d "$ROOT/dl"
numpy_wheel=$(ls -t "$ROOT"/dl/numpy-*aarch64*.whl | head -1)
"$VENV/bin/python" -m zipfile -e "$numpy_wheel" "$ROOT/site"
"$VENV/bin/python" -m zipfile -e "$wheel" "$ROOT/site"

# qemu looks up every path in the unpacked root first, then on the host: the loader and libc
# are the host's multiarch libc6:arm64 (see test_aarch64.sh), the rest comes from the debs.
# -S: no site-packages; PYTHONPATH holds only the unpacked numpy and wheel.
smoke() {
  PYTHONNOUSERSITE=1 PYTHONPATH="$ROOT/site" qemu-aarch64 -L "$ROOT/sysroot" \
    "$ROOT/sysroot/usr/bin/python3.11" -S scripts/aarch64_wheel_smoke.py "$@"
}
out=$(smoke neon)
echo "$out"
grep -q "tuned_lens from $ROOT/site/" <<<"$out"
TUNED_LENS_SIMD=portable smoke portable
echo "ok: $(basename "$wheel")"
