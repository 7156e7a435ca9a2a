# One entry point for set-up, tests, the demo and the benchmarks.
#   make demo    set everything up, then run the main job on the embedded default
#   make test    set everything up, then run the whole test suite (cargo test + pytest)
#   make bench   the benchmark suite (not part of the tests)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-installed

.PHONY: setup build test test-rust test-python demo bench lint wheel clean

setup: $(STAMP)

# Dependencies change rarely: reinstall only when pyproject.toml changes. pip's cache is reused.
$(STAMP): pyproject.toml scripts/setup.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

# Compile the Rust extension (release, runtime SIMD dispatch) into the source tree, editable.
build: setup
	VIRTUAL_ENV=$(abspath $(VENV)) $(PY) -m maturin develop --release --quiet

test-rust:
	cargo test --workspace --release

test-python: build
	$(PY) -m pytest

test: build test-rust test-python

demo: build
	$(PY) -m tuned_lens demo $(ARGS)

bench: build
	$(PY) benches/run_all.py $(ARGS)

lint: setup
	$(VENV)/bin/ruff check python tests benches
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

wheel: setup
	$(PY) -m maturin build --release --out dist

clean:
	rm -rf target dist $(VENV) python/tuned_lens/*.so
