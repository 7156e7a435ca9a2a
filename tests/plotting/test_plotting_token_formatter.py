import numpy as np
from tuned_lens.plotting import TokenFormatter


def test_non_strings_are_unknown():
    formatter = TokenFormatter()
    assert formatter.format(None) == "<unk>"
    assert formatter.format(3) == "<unk>"


def test_truncation_keeps_max_len_with_ellipsis():
    assert TokenFormatter().format("ThisIsALongToken") == "ThisIs…"
    assert TokenFormatter().format("Seven77") == "Seven77"
    assert TokenFormatter(max_string_len=None).format("ThisIsALongToken") == "ThisIsALongToken"
    assert TokenFormatter(max_string_len=5, ellipsis="..").format("abcdefgh") == "abc.."


def test_markers_are_replaced_after_truncation():
    formatter = TokenFormatter()
    assert formatter.format("Ġthe") == "_the"
    assert formatter.format("Ċ") == "\\n"
    # Truncated to 7 first ("ĊĊĊĊĊĊ…"), then each Ċ becomes two characters.
    assert formatter.format("ĊĊĊĊĊĊĊĊ") == "\\n" * 6 + "…"


def test_vectorized_format_keeps_shape_and_long_strings():
    formatter = TokenFormatter(max_string_len=None)
    tokens = np.array([["a", "Ġlonger_token"], ["Ċ", "b"]], dtype=object)
    out = formatter.vectorized_format(tokens)
    assert out.shape == (2, 2)
    assert out.tolist() == [["a", "_longer_token"], ["\\n", "b"]]
    assert formatter.vectorized_format(np.array([None], dtype=object)).tolist() == ["<unk>"]


def test_pad_token_repr_to_max_len():
    formatter = TokenFormatter()
    assert formatter.pad_token_repr_to_max_len("ab") == "ab     "
    assert formatter.pad_token_repr_to_max_len("abcdefgh") == "abcdefgh"
    assert TokenFormatter(max_string_len=None).pad_token_repr_to_max_len("ab") == "ab"
