"""Lens files: safetensors and the original's params.pt, read without running pickled code."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file
from tuned_lens.lens_io import (
    LensFileError,
    UnsafeLensFileError,
    read_lens_config,
    read_lens_params,
    read_torch_zip_state_dict,
    validate_lens_params,
)
from tuned_lens.nn import TunedLens, TunedLensConfig
from tuned_lens.testing import tiny_input_ids, tiny_model


def random_state(n_layers=2, d=32, bias=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for i in range(n_layers):
        state[f"{i}.weight"] = torch.randn(d, d, generator=generator) * 0.05
        if bias:
            state[f"{i}.bias"] = torch.randn(d, generator=generator) * 0.05
    return state


def write_original_layout(folder, model, state, *, legacy_hash_key=True, with_hash=True):
    """A lens folder as the original library wrote it: torch.save'd state dict + config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "params.pt")
    config = {
        "base_model_name_or_path": model.config.name_or_path,
        "d_model": 32,
        "num_hidden_layers": 2,
        "bias": True,
        "base_model_revision": None,
        "lens_type": "linear_tuned_lens",
    }
    if with_hash:
        from tuned_lens.nn import Unembed

        key = "unemebd_hash" if legacy_hash_key else "unembed_hash"
        config[key] = Unembed(model).unembedding_hash()
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("legacy_hash_key, with_hash", [(True, True), (False, True), (True, False)])
def test_original_layout_loads_and_gives_the_same_logits(tmp_path, legacy_hash_key, with_hash):
    import warnings

    model = tiny_model("gpt2")
    state = random_state()
    write_original_layout(
        tmp_path / "lens", model, state, legacy_hash_key=legacy_hash_key, with_hash=with_hash
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matching hash, known keys: no warning at all
        lens = TunedLens.from_model_and_pretrained(model, tmp_path / "lens")
    reference = TunedLens.from_model(model)
    with torch.no_grad():
        reference.layer_translators.load_state_dict(state)
        hidden = model(tiny_input_ids(), output_hidden_states=True).hidden_states
        for i in range(2):
            assert torch.equal(lens(hidden[i], i), reference(hidden[i], i))


def test_safetensors_preferred_over_pickle(tmp_path):
    model = tiny_model("gpt2")
    write_original_layout(tmp_path, model, random_state(seed=1))
    lens = TunedLens.from_model(model)
    lens.save(tmp_path)  # adds params.safetensors (zeros) next to params.pt
    loaded = TunedLens.from_model_and_pretrained(model, tmp_path)
    assert all(not p.any() for p in loaded.layer_translators.parameters())


def test_torch_zip_reader_matches_torch_load(tmp_path):
    state = OrderedDict(
        [
            ("a", torch.randn(3, 4)),
            ("b", torch.randn(5).half()),
            ("c", torch.randn(2, 2).bfloat16()),
            ("d", torch.randn(4, 3).T),  # non-contiguous
            ("e", torch.arange(12.0)[3:9]),  # storage offset
            ("f", torch.randn(2, 3).double()),
        ]
    )
    shared = torch.randn(6)
    state["g"], state["h"] = shared[:3], shared[3:]  # two views of one storage
    torch.save(state, tmp_path / "x.pt")
    ours = read_torch_zip_state_dict(tmp_path / "x.pt")
    theirs = torch.load(tmp_path / "x.pt", weights_only=True)
    assert list(ours) == list(theirs)
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype
        assert torch.equal(ours[key], theirs[key]), key


def _rewrite_zip(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, edit(info.filename, zin.read(info.filename)))


def test_tensors_pickled_on_cuda_load_on_cpu(tmp_path):
    torch.save(random_state(), tmp_path / "cpu.pt")

    def to_cuda(name, data):
        if not name.endswith("data.pkl"):
            return data
        # BINUNICODE 'cpu' -> 'cuda:0' (length-prefixed; pickle has no absolute offsets).
        return data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")

    _rewrite_zip(tmp_path / "cpu.pt", tmp_path / "cuda.pt", to_cuda)
    assert b"cuda:0" in zipfile.ZipFile(tmp_path / "cuda.pt").read("cpu/data.pkl")
    loaded = read_lens_params(tmp_path / "cuda.pt")
    for key, value in random_state().items():
        assert loaded[key].device.type == "cpu"
        assert torch.equal(loaded[key], value)


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _hostile_zip(path, payload):
    data = pickle.dumps({"0.weight": payload}, protocol=2)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("params/data.pkl", data)
        archive.writestr("params/version", "3\n")


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    _hostile_zip(tmp_path / "params.pt", _Payload(marker))
    with pytest.raises(UnsafeLensFileError, match=r"refusing to load .*(posix|os|nt)\.system"):
        read_lens_params(tmp_path / "params.pt")
    assert not marker.exists()


def test_hostile_lens_folder_is_refused(tmp_path):
    model = tiny_model("gpt2")
    write_original_layout(tmp_path, model, random_state())
    marker = tmp_path / "pwned"
    _hostile_zip(tmp_path / "params.pt", _Payload(marker))
    with pytest.raises(UnsafeLensFileError, match="refusing to load"):
        TunedLens.from_model_and_pretrained(model, tmp_path)
    assert not marker.exists()


def test_other_globals_are_refused(tmp_path):
    for module, name in [("builtins", "eval"), ("torch", "load"), ("torch", "IntStorage")]:
        data = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."
        with zipfile.ZipFile(tmp_path / "x.pt", "w") as archive:
            archive.writestr("x/data.pkl", data)
        with pytest.raises(UnsafeLensFileError, match=f"{module}.{name}"):
            read_torch_zip_state_dict(tmp_path / "x.pt")


def test_plain_pickle_files_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "params.pt").write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(UnsafeLensFileError, match="bare \\(non-zip\\) pickle"):
        read_lens_params(tmp_path / "params.pt")
    assert not marker.exists()


def test_corrupt_archives_are_clear_errors(tmp_path):
    torch.save(random_state(), tmp_path / "ok.pt")
    _rewrite_zip(
        tmp_path / "ok.pt",
        tmp_path / "short.pt",
        lambda name, data: data[:-8] if "/data/" in name else data,
    )
    with pytest.raises(LensFileError, match="corrupt archive"):
        read_lens_params(tmp_path / "short.pt")
    raw = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(LensFileError):
        read_lens_params(tmp_path / "cut.pt")
    with zipfile.ZipFile(tmp_path / "nopkl.pt", "w") as archive:
        archive.writestr("x/version", "3")
    with pytest.raises(LensFileError, match="expected one data.pkl"):
        read_lens_params(tmp_path / "nopkl.pt")


def test_truncated_or_corrupt_safetensors(tmp_path):
    save_file(dict(random_state()), str(tmp_path / "ok.safetensors"))
    raw = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[:-100])
    with pytest.raises(LensFileError, match="not a valid safetensors file"):
        read_lens_params(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}xxxxxx")
    with pytest.raises(LensFileError, match="not a valid safetensors file"):
        read_lens_params(tmp_path / "junk.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(b"abc")
    with pytest.raises(LensFileError, match="truncated"):
        read_lens_params(tmp_path / "tiny.safetensors")
    with pytest.raises(LensFileError, match="cannot read"):
        read_lens_params(tmp_path / "missing.safetensors")


def test_map_location_and_weights_only_are_accepted(tmp_path):
    save_file(dict(random_state()), str(tmp_path / "p.safetensors"))
    loaded = read_lens_params(tmp_path / "p.safetensors", map_location="cpu", weights_only=False)
    assert loaded["0.weight"].device.type == "cpu"


CONFIG = TunedLensConfig(base_model_name_or_path="m", d_model=32, num_hidden_layers=2)


def test_validation_accepts_the_exact_schema():
    validate_lens_params(random_state(), CONFIG)
    no_bias = TunedLensConfig(
        base_model_name_or_path="m", d_model=32, num_hidden_layers=2, bias=False
    )
    validate_lens_params(random_state(bias=False), no_bias)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s.pop("1.bias"), "missing keys \\['1.bias'\\]"),
        (lambda s: s.__setitem__("2.weight", torch.zeros(32, 32)), "unexpected keys"),
        (lambda s: s.__setitem__("0.weight", torch.zeros(31, 32)), "shape \\(31, 32\\)"),
        (lambda s: s.__setitem__("0.bias", torch.zeros(32, dtype=torch.int64)), "dtype"),
        (lambda s: s["1.weight"].__setitem__((0, 0), float("nan")), "NaN or infinite"),
        (lambda s: s["0.bias"].__setitem__(3, float("inf")), "NaN or infinite"),
    ],
)
def test_validation_rejects(mutate, message):
    state = random_state()
    mutate(state)
    with pytest.raises(LensFileError, match=message):
        validate_lens_params(state, CONFIG)


def test_nan_lens_file_is_refused_on_load(tmp_path):
    model = tiny_model("gpt2")
    lens = TunedLens.from_model(model)
    lens.save(tmp_path)  # a NaN lens is refused at save; write its file as another tool would
    state = {k: v.clone() for k, v in lens.layer_translators.state_dict().items()}
    state["0.weight"][0, 0] = float("nan")
    save_file(state, str(tmp_path / "params.safetensors"))
    (tmp_path / "lens_manifest.json").unlink()
    with pytest.raises(LensFileError, match="NaN"):
        TunedLens.from_model_and_pretrained(model, tmp_path)


def test_wrong_layer_count_in_file_is_refused(tmp_path):
    model = tiny_model("gpt2")
    TunedLens.from_model(model).save(tmp_path)
    save_file(dict(random_state(n_layers=3)), str(tmp_path / "params.safetensors"))
    (tmp_path / "lens_manifest.json").unlink()  # as in a folder the original library wrote
    with pytest.raises(LensFileError, match="unexpected keys \\['2.bias', '2.weight'\\]"):
        TunedLens.from_model_and_pretrained(model, tmp_path)


def test_config_reader_errors(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("[1, 2]")
    with pytest.raises(LensFileError, match="JSON object"):
        read_lens_config(path)
    path.write_text("{not json")
    with pytest.raises(LensFileError, match="not valid JSON"):
        read_lens_config(path)
    path.write_text(json.dumps({"d_model": 4}))
    with pytest.raises(LensFileError, match="missing required keys"):
        read_lens_config(path)
    path.write_text(
        json.dumps(
            {
                "base_model_name_or_path": "m",
                "d_model": 4,
                "num_hidden_layers": 1,
                "lens_type": "other",
            }
        )
    )
    with pytest.raises(LensFileError, match="lens_type"):
        read_lens_config(path)
    with pytest.raises(LensFileError, match="cannot read"):
        read_lens_config(tmp_path / "absent.json")


def test_saved_safetensors_layout(tmp_path):
    from safetensors import safe_open

    lens = TunedLens.from_model(tiny_model("llama", dtype=torch.bfloat16))
    lens.save(tmp_path)
    with safe_open(str(tmp_path / "params.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["0.bias", "0.weight", "1.bias", "1.weight"]
        assert f.get_tensor("0.weight").dtype == torch.bfloat16
    assert not any(p.suffix == ".pt" for p in tmp_path.iterdir())
    buffer = io.BytesIO((tmp_path / "config.json").read_bytes())
    assert json.load(buffer)["unembed_hash"] == lens.config.unembed_hash


def test_oversized_files_are_refused_before_reading(tmp_path):
    from tuned_lens.lens_io import check_params_size

    model = tiny_model("gpt2")
    TunedLens.from_model(model).save(tmp_path)
    check_params_size(tmp_path / "params.safetensors", CONFIG)
    # A lens for a much wider model in the folder of a small one.
    save_file(dict(random_state(d=512)), str(tmp_path / "params.safetensors"))
    with pytest.raises(LensFileError, match="refusing to read"):
        TunedLens.from_model_and_pretrained(model, tmp_path)
    # A zip whose storage entry claims far more than the lens needs (a compression bomb).
    with zipfile.ZipFile(tmp_path / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr("bomb/data/0", bytes(64 << 20))
    assert (tmp_path / "bomb.pt").stat().st_size < 1 << 20
    with pytest.raises(LensFileError, match="declare 67108"):
        check_params_size(tmp_path / "bomb.pt", CONFIG)


def test_save_leaves_no_temporary_files_and_overwrites(tmp_path):
    model = tiny_model("gpt2")
    TunedLens.from_model(model).save(tmp_path)
    lens = TunedLens.from_model(model)
    with torch.no_grad():
        lens[0].bias.fill_(0.5)
    lens.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".lens.lock",
        "config.json",
        "lens_manifest.json",
        "params.safetensors",
    ]
    loaded = TunedLens.from_model_and_pretrained(model, tmp_path)
    assert torch.all(loaded[0].bias == 0.5)


def test_saved_lens_files_get_ordinary_permissions(tmp_path):
    """Atomic writes go through a temporary file; the result must still be world-readable."""
    import os
    import stat

    from tuned_lens.nn import TunedLens
    from tuned_lens.testing import tiny_model

    lens = TunedLens.from_model(tiny_model("llama"))
    lens.save(tmp_path / "lens")
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "params.safetensors"):
        mode = stat.S_IMODE((tmp_path / "lens" / name).stat().st_mode)
        assert mode == 0o666 & ~umask, (name, oct(mode))


def test_tuned_lens_config_lives_with_the_lens_files_and_is_re_exported():
    import tuned_lens
    import tuned_lens.errors as errors
    import tuned_lens.lens_io as lens_io
    import tuned_lens.nn.lenses as lenses

    assert lens_io.TunedLensConfig is lenses.TunedLensConfig is tuned_lens.TunedLensConfig
    assert lens_io.LensFileError is errors.LensFileError
    assert lens_io.UnsafeLensFileError is errors.UnsafeLensFileError
