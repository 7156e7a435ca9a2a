"""The release wheel: one abi3 manylinux2014 build (scripts/build_wheel.sh, as `make wheel`)
that auditwheel accepts, and that installs into a fresh environment and imports without the
source tree, on every Python from 3.10 up that this machine has."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARCH = platform.machine()

# Runs in the fresh environment, from a folder outside the repository.
SMOKE = """
import sys, numpy as np
import tuned_lens, tuned_lens.lens_stats as ls
assert "site-packages" in tuned_lens.__file__, tuned_lens.__file__
lp = np.log(np.array([[0.5, 0.25, 0.25]], dtype=np.float32))
h = float(ls.entropy(lp)[0])
assert abs(h - (0.5 * np.log(2) + 0.5 * np.log(4))) < 1e-6, h
ids, probs = ls.top_k(lp, 2)
assert ids.tolist() == [[0, 1]], ids
print("ok", sys.version_info[:2], ls.simd_level())
"""


def _interpreters() -> list[str]:
    """Python 3.10+ interpreters on this machine (PATH and pyenv's versions), one per minor."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [sys.executable]
    candidates += [shutil.which(f"python3.{minor}") or "" for minor in range(10, 14)]
    candidates += sorted(str(p) for p in pyenv_root.glob("versions/3.1*/bin/python3"))
    by_minor: dict[int, str] = {}
    for exe in filter(None, candidates):
        probe = subprocess.run(
            [exe, "-c", "import sys, venv; print(sys.version_info[1])"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip().isdigit():
            minor = int(probe.stdout)
            if 10 <= minor <= 13:
                by_minor.setdefault(minor, exe)
    return [by_minor[m] for m in sorted(by_minor)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # The build tool, not a runtime dependency: the lowest-versions environment has none.
    pytest.importorskip("maturin", reason="building the wheel needs maturin (not installed)")
    out = tmp_path_factory.mktemp("wheel")
    venv = Path(sys.executable).parent.parent
    subprocess.run(
        ["bash", "scripts/build_wheel.sh", ARCH, str(out)],
        cwd=REPO,
        env={**os.environ, "VENV": str(venv)},
        check=True,
    )
    (built,) = out.glob("*.whl")
    return built


def test_wheel_is_abi3_and_ships_types(wheel: Path):
    assert "-cp310-abi3-" in wheel.name, wheel.name
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "tuned_lens/py.typed",
        "tuned_lens/lens_stats/_native.pyi",
        "tuned_lens/lens_stats/__init__.py",
        "tuned_lens/lens_stats/errors.py",
        "tuned_lens/explorer/static/explorer.js",
        "tuned_lens/explorer/static/explorer.css",
    ):
        assert expected in names, f"{expected} missing from {wheel.name}"
    assert any(n.startswith("tuned_lens/lens_stats/_native.") and n.endswith(".so") for n in names)


def test_wheel_is_manylinux_and_auditwheel_accepts_it(wheel: Path):
    # The tag pip matches against the system's glibc: 2.17 (manylinux2014) and its PEP 600 name.
    assert f"-manylinux2014_{ARCH}.manylinux_2_17_{ARCH}.whl" in wheel.name, wheel.name
    auditwheel = Path(sys.executable).with_name("auditwheel")
    report = subprocess.run(
        [str(auditwheel), "show", str(wheel)], capture_output=True, text=True, check=True
    ).stdout
    # auditwheel's own reading of the ELF symbol versions and needed libraries.
    consistent = re.search(r'consistent with the following platform tag:\s*"([^"]+)"', report)
    assert consistent is not None, report
    assert consistent.group(1) == f"manylinux_2_17_{ARCH}", report
    glibc = {tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_(\d+\.\d+)", report)}
    assert glibc and max(glibc) <= (2, 17), report


@pytest.mark.slow
def test_wheel_installs_and_imports_in_a_fresh_venv(wheel: Path, tmp_path: Path):
    ran = []
    for exe in _interpreters():
        venv = tmp_path / f"venv-{len(ran)}"
        subprocess.run([exe, "-m", "venv", str(venv)], check=True)
        py = venv / "bin" / "python"
        # numpy is the only import the array statistics need; torch and the rest stay out.
        subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel), "numpy"],
            check=True,
        )
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        result = subprocess.run(
            [str(py), "-c", SMOKE], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{exe}: {result.stderr}"
        ran.append(result.stdout.strip())
    assert ran, "no interpreter ran the smoke test"
    print("\n".join(ran))
