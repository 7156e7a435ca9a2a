"""Property tests: our torch-archive reader agrees with torch.load, and damaged files only ever
raise LensFileError."""

from __future__ import annotations

import io
from collections import OrderedDict

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as save_safetensors
from tuned_lens.lens_io import LensFileError, read_lens_params, read_torch_zip_state_dict

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@st.composite
def state_dicts(draw):
    n = draw(st.integers(min_value=0, max_value=4))
    state = OrderedDict()
    for i in range(n):
        shape = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=3)))
        dtype = draw(st.sampled_from(DTYPES))
        tensor = torch.randn(shape, generator=torch.Generator().manual_seed(i)).to(dtype)
        if tensor.dim() == 2 and draw(st.booleans()):
            tensor = tensor.T  # non-contiguous view
        state[f"{i}.weight"] = tensor
    return state


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(state=state_dicts())
def test_reader_agrees_with_torch_load(tmp_path, state):
    path = tmp_path / "p.pt"
    torch.save(state, path)
    ours = read_torch_zip_state_dict(path)
    theirs = torch.load(path, weights_only=True)
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape
        assert torch.equal(ours[key], value)


def _valid_files():
    state = {"0.weight": torch.randn(4, 4), "0.bias": torch.randn(4)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return {"pt": buffer.getvalue(), "safetensors": save_safetensors(state)}


VALID = _valid_files()


@pytest.mark.parametrize("kind", ["pt", "safetensors"])
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_damaged_files_raise_only_lens_file_errors(tmp_path, kind, data):
    raw = bytearray(VALID[kind])
    edits = data.draw(
        st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), max_size=8)
    )
    for position, value in edits:
        raw[position] = value
    cut = data.draw(st.integers(0, len(raw)))
    path = tmp_path / f"damaged.{kind}"
    path.write_bytes(bytes(raw[:cut]))
    try:
        tensors = read_lens_params(path)
    except LensFileError:
        return
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
