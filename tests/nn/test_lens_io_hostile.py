"""Hostile and unlucky lens files (issue 16): concurrent writers, crafted archives and configs.

Every test writes real files; the concurrency tests run real writer processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tuned_lens.errors import InvalidInputError
from tuned_lens.lens_io import (
    LensFileError,
    read_lens_config,
    read_lens_params,
    read_torch_zip_state_dict,
)
from tuned_lens.load_artifacts import load_lens_artifacts
from tuned_lens.nn import TunedLens, TunedLensConfig, Unembed
from tuned_lens.testing import tiny_model

D = 32  # the tiny models' hidden size


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "python")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def _config(**overrides) -> dict:
    base = {"base_model_name_or_path": "tiny", "d_model": D, "num_hidden_layers": 2}
    return {**base, **overrides}


# -- 1: one read per file ----------------------------------------------------------------------

_PARAMS_WRITER = """
    import sys, time, torch
    from tuned_lens.lens_io import write_lens_params
    path, seconds = sys.argv[1], float(sys.argv[2])
    dtypes = [torch.float32, torch.float16, torch.float64, torch.bfloat16]
    k, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        k += 1
        dtype = dtypes[k % 4]
        n = 1 + k % 3  # the header changes length with the number of tensors
        state = {f"{i}.weight": torch.full((64, 64), float(k % 200), dtype=dtype) for i in range(n)}
        write_lens_params(path, state)
"""


def test_params_read_while_rewritten_is_one_whole_version(tmp_path):
    path = tmp_path / "params.safetensors"
    save_file({"0.weight": torch.zeros(64, 64)}, str(path))
    writer = subprocess.Popen(_python(_PARAMS_WRITER) + [str(path), "4"], env=_env())
    wrong, errors, reads = [], 0, 0
    try:
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            try:
                state = read_lens_params(path)
            except LensFileError:
                errors += 1
                continue
            reads += 1
            values = {float(v.float().min()) for v in state.values()}
            values |= {float(v.float().max()) for v in state.values()}
            if len(values) != 1 or len({v.dtype for v in state.values()}) != 1:
                wrong.append(values)
    finally:
        writer.wait(timeout=30)
    assert writer.returncode == 0
    assert reads > 50
    assert not wrong, f"{len(wrong)} of {reads} reads mixed versions, e.g. {wrong[:3]}"
    assert errors == 0, f"{errors} reads failed although every write is atomic"


# -- 3: hostile params.pt ------------------------------------------------------------------------


def test_stride_zero_and_overlapping_views_are_refused(tmp_path):
    path = tmp_path / "params.pt"
    torch.save({"0.weight": torch.zeros(1).expand(2000, 2000)}, path)
    with pytest.raises(LensFileError, match="overlap"):
        read_torch_zip_state_dict(path)
    base = torch.arange(10.0)
    torch.save({"0.weight": base.as_strided((4, 4), (2, 1))}, path)  # rows overlap
    with pytest.raises(LensFileError, match="overlap"):
        read_torch_zip_state_dict(path)
    torch.save({"0.weight": base.as_strided((2, 5), (5, 1))}, path)  # a plain view is fine
    assert torch.equal(read_torch_zip_state_dict(path)["0.weight"], base.view(2, 5))


_MAXRSS = """
    import resource, sys, warnings
    import torch
    from tuned_lens.nn import TunedLens
    from tuned_lens.testing import tiny_model
    model = tiny_model("llama")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        TunedLens.from_model_and_pretrained(model, sys.argv[1])
    except ValueError as err:
        print(type(err).__name__, str(err)[:200], file=sys.stderr)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(grown // 1024)  # MiB
"""


def _peak_growth_mib(folder: Path) -> int:
    done = subprocess.run(
        _python(_MAXRSS) + [str(folder)], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def test_a_tiny_hostile_params_pt_allocates_nothing_big(tmp_path):
    folder = tmp_path / "lens"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(_config()))
    huge = torch.zeros(1).expand(6000, 6000)  # 144 MB per record if cloned
    torch.save(
        {"0.weight": huge, "1.weight": huge, "0.bias": huge[0], "1.bias": huge[0]},
        folder / "params.pt",
    )
    assert (folder / "params.pt").stat().st_size < 4096
    assert _peak_growth_mib(folder) < 60


# -- 4: absurd layer counts and widths ------------------------------------------------------------


@pytest.mark.parametrize("layers", [20_000, 10**12])
def test_a_huge_layer_count_is_refused_before_anything_is_built(tmp_path, layers):
    folder = tmp_path / "lens"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(_config(num_hidden_layers=layers)))
    save_file(
        {"0.weight": torch.zeros(D, D), "0.bias": torch.zeros(D)},
        str(folder / "params.safetensors"),
    )
    assert _peak_growth_mib(folder) < 30


def test_layer_count_and_file_size_are_checked_before_construction(tmp_path, model):
    folder = tmp_path / "lens"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(_config(num_hidden_layers=20_000)))
    save_file({"0.weight": torch.zeros(D, D)}, str(folder / "params.safetensors"))
    began = time.perf_counter()
    with pytest.raises(LensFileError, match="20000"):
        TunedLens.from_unembed_and_pretrained(Unembed(model), str(folder))
    assert time.perf_counter() - began < 1.0  # 20,000 translators take seconds to build
    with pytest.raises(LensFileError, match="layers"):
        TunedLens.from_model_and_pretrained(model, str(folder))


# -- 8: lens.save is one unit; concurrent savers and loaders --------------------------------------

_SAVER = """
    import sys, torch
    from tuned_lens.nn import TunedLens
    from tuned_lens.testing import tiny_model
    folder, who, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    lens = TunedLens.from_model(tiny_model("llama"))
    print("ready", flush=True)
    for j in range(count):
        version = who * 1000 + j
        lens.config.base_model_revision = str(version)
        with torch.no_grad():
            for p in lens.parameters():
                if p.requires_grad:
                    p.fill_(version / 4096)
        lens.save(folder)
"""


def _check_consistent(lens: TunedLens) -> None:
    version = int(lens.config.base_model_revision)
    for name, tensor in lens.layer_translators.state_dict().items():
        assert torch.all(tensor == version / 4096), (name, version, tensor.flatten()[:3])


def test_concurrent_savers_and_loaders_never_mix_two_lenses(tmp_path, model):
    folder = tmp_path / "lens"
    TunedLens.from_model(model).save(folder)
    savers = [
        subprocess.Popen(
            _python(_SAVER) + [str(folder), str(who), "60"],
            env=_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for who in (1, 2)
    ]
    for saver in savers:
        assert saver.stdout.readline().strip() == "ready"
    unembed, loads, refusals = Unembed(model), 0, 0
    while any(s.poll() is None for s in savers):
        try:
            lens = TunedLens.from_unembed_and_pretrained(unembed, str(folder))
        except LensFileError:
            refusals += 1
            continue
        loads += 1
        if lens.config.base_model_revision is not None:
            _check_consistent(lens)
    for saver in savers:
        assert saver.wait(timeout=60) == 0
    _check_consistent(TunedLens.from_unembed_and_pretrained(unembed, str(folder)))
    assert loads > 0
    assert refusals == 0, f"{refusals} loads refused although readers take the shared lock"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "lens_manifest.json",
        "params.safetensors",
    ]


def test_a_save_killed_midway_is_refused_or_whole(tmp_path, model):
    """Swap in a foreign config after a save (as a kill between two renames would leave it)."""
    folder = tmp_path / "lens"
    lens = TunedLens.from_model(model)
    lens.save(folder)
    other = dict(lens.config.to_dict(), base_model_revision="other")
    (folder / "config.json").write_text(json.dumps(other))
    with pytest.raises(LensFileError, match="manifest"):
        TunedLens.from_unembed_and_pretrained(Unembed(model), str(folder))


# -- 7: stale temp files of killed writers ---------------------------------------------------------

_KILLED_SAVER = """
    import sys, torch
    from tuned_lens.nn import TunedLens
    from tuned_lens.testing import tiny_model
    lens = TunedLens.from_model(tiny_model("llama"))
    print("ready", flush=True)
    while True:
        lens.save(sys.argv[1])
"""


def test_temp_files_of_a_killed_saver_are_removed_by_the_next_save(tmp_path, model):
    folder = tmp_path / "lens"
    folder.mkdir()
    # What a writer killed inside write_lens_params leaves behind (pid 2**22 + 1 is not alive).
    dead_pid = 4194305
    stale = folder / f".params.safetensors.tmp-{dead_pid}"
    stale.write_bytes(b"x" * 1000)
    foreign = folder / f".notes.txt.tmp-{dead_pid}"
    foreign.write_text("not ours")
    saver = subprocess.Popen(
        _python(_KILLED_SAVER) + [str(folder)], env=_env(), stdout=subprocess.PIPE, text=True
    )
    assert saver.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    saver.send_signal(signal.SIGKILL)
    saver.wait(timeout=30)
    saver.stdout.close()
    # Leave one of the killed saver's own temporaries, in case the kill came between writes.
    (folder / f".config.json.tmp-{saver.pid}").write_text("{")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = folder / f".config.json.tmp-{alive.pid}"  # a writer that is still running
        live.write_text("{")
        TunedLens.from_model(model).save(folder)
        leftovers = sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)
        # Kept: the live writer's file, and another program's file that is not a lens file.
        assert leftovers == [live.name, foreign.name], leftovers
    finally:
        alive.kill()
        alive.wait()


# -- 10: crafted files ---------------------------------------------------------------------------


def _zip_with(path: Path, name: str, data: bytes, flag_bits: int = 0, method: int = 0) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(name, data)
    raw = bytearray(path.read_bytes())
    central = raw.rfind(b"PK\x01\x02")
    # flags and compression method of the local header (offsets 6, 8) and central record (8, 10)
    for flags_at in (6, central + 8):
        raw[flags_at] |= flag_bits
        if method:
            raw[flags_at + 2 : flags_at + 4] = method.to_bytes(2, "little")
    path.write_bytes(bytes(raw))


def _bad_zip_name(path: Path) -> None:
    _zip_with(path, "archive/data.pkl", b"\x80\x02}q\x00.")
    raw = bytearray(path.read_bytes())
    for marker in (b"PK\x03\x04", b"PK\x01\x02"):
        start = raw.find(marker)
        offset = start + (30 if marker == b"PK\x03\x04" else 46)
        raw[offset] = 0xFF  # an invalid UTF-8 byte in the name
        flag = start + (6 if marker == b"PK\x03\x04" else 8)
        raw[flag + 1] |= 0x08  # bit 11: the name is UTF-8
    path.write_bytes(bytes(raw))


CRAFTED_PARAMS = {
    "utf8-flag-on-a-bad-name": _bad_zip_name,
    "unknown-compression": lambda p: _zip_with(p, "a/data.pkl", b"\x80\x02}.", method=99),
    "encrypted-entry": lambda p: _zip_with(p, "a/data.pkl", b"\x80\x02}.", flag_bits=0x1),
    "empty-zip": lambda p: zipfile.ZipFile(p, "w").close(),
    "truncated-safetensors": lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{"),
    "huge-header-length": lambda p: p.write_bytes(b"\xff" * 8 + b"{}"),
}


@pytest.mark.parametrize("name", sorted(CRAFTED_PARAMS))
def test_crafted_parameter_files_give_a_lens_file_error(tmp_path, name, model):
    folder = tmp_path / "lens"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(_config()))
    params = folder / "params.pt"
    CRAFTED_PARAMS[name](params)
    with pytest.raises(LensFileError, match="params.pt"):
        read_lens_params(params)
    with pytest.raises(LensFileError, match="params.pt"):
        TunedLens.from_unembed_and_pretrained(Unembed(model), str(folder))


CRAFTED_CONFIGS = {
    "d_model-as-text": (
        '{"base_model_name_or_path": "m", "d_model": "32", "num_hidden_layers": 2}',
        "d_model",
    ),
    "name-as-number": (
        '{"base_model_name_or_path": 5, "d_model": 32, "num_hidden_layers": 2}',
        "base_model_name_or_path",
    ),
    "revision-as-object": (
        json.dumps(_config(base_model_revision={"a": 1})),
        "base_model_revision",
    ),
    "hash-as-list": (json.dumps(_config(unembed_hash=[1])), "unembed_hash"),
    "bias-as-text": (json.dumps(_config(bias="yes")), "bias"),
    "lens-type-as-list": (json.dumps(_config(lens_type=["x"])), "lens_type"),
    "5000-digit-layers": (
        '{"base_model_name_or_path": "m", "d_model": 32, "num_hidden_layers": ' + "9" * 5000 + "}",
        "JSON",
    ),
    "deep-nesting": ('{"base_model_name_or_path": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON"),
    "float-layers": (json.dumps(_config(num_hidden_layers=2.5)), "num_hidden_layers"),
    "not-utf8": ('{"base_model_name_or_path": "\udcff"}', "JSON"),
}


@pytest.mark.parametrize("name", sorted(CRAFTED_CONFIGS))
def test_crafted_configs_give_a_lens_file_error_naming_file_and_field(tmp_path, name):
    text, field = CRAFTED_CONFIGS[name]
    path = tmp_path / "config.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(LensFileError) as caught:
        read_lens_config(path)
    message = str(caught.value)
    assert str(path) in message and field in message, message


# -- 11: NaN biases and empty lens ids ----------------------------------------------------------


def test_a_lens_with_nan_parameters_is_refused_at_save(tmp_path, model):
    lens = TunedLens.from_model(model)
    with torch.no_grad():
        lens.layer_translators[1].bias[3] = float("nan")
    with pytest.raises(InvalidInputError, match=r"1\.bias"):
        lens.save(tmp_path / "lens")
    assert not (tmp_path / "lens" / "params.safetensors").exists()


@pytest.mark.parametrize("lens_id", ["", "   "])
def test_an_empty_lens_id_is_refused_not_the_current_folder(tmp_path, monkeypatch, lens_id):
    TunedLens.from_model(tiny_model("llama")).save(tmp_path)
    monkeypatch.chdir(tmp_path)  # a lens in the current folder must not be picked up
    with pytest.raises(InvalidInputError, match="resource_id"):
        load_lens_artifacts(lens_id)


def test_the_config_dataclass_still_builds_from_keywords():
    config = TunedLensConfig(base_model_name_or_path="m", d_model=4, num_hidden_layers=1)
    assert config.to_dict()["lens_type"] == "linear_tuned_lens"
