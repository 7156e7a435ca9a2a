import numpy as np
import pytest
from plotly import graph_objects as go
from tuned_lens.plotting import (
    TrajectoryLabels,
    TrajectoryShapeError,
    TrajectoryStatistic,
    trunc_string_left,
)
from tuned_lens.plotting.trajectory_plotting import _stride_keep_last


def test_stride_keep_last():
    x = np.array([1, 2, 3, 4, 5])
    assert _stride_keep_last(x, 1).tolist() == [1, 2, 3, 4, 5]
    assert _stride_keep_last(x, 2).tolist() == [1, 3, 5]
    assert _stride_keep_last(x, 3).tolist() == [1, 4, 5]
    assert _stride_keep_last(x, 4).tolist() == [1, 5]
    assert _stride_keep_last(x, 5).tolist() == [1, 5]
    with pytest.raises(ValueError, match="stride"):
        _stride_keep_last(x, 0)


def test_trunc_string_left_pads_and_keeps_the_right_end():
    assert trunc_string_left("abc", 5) == "  abc"
    assert trunc_string_left("abcdef", 4) == "cdef"
    assert trunc_string_left("abc", 3) == "abc"
    assert trunc_string_left("abc", 0) == ""


def test_post_init_checks_shapes_and_makes_layer_labels():
    labels = TrajectoryLabels(label_strings=np.zeros((2, 2), dtype=np.str_))
    with pytest.raises(TrajectoryShapeError):
        TrajectoryStatistic("test", np.zeros((2, 3)), trajectory_labels=labels)
    # Still an AssertionError, as in the original library.
    with pytest.raises(AssertionError):
        TrajectoryStatistic("test", np.zeros(3))
    with pytest.raises(TrajectoryShapeError, match="sequence_labels"):
        TrajectoryStatistic("test", np.zeros((2, 2)), sequence_labels=np.array(["a"]))

    stats = np.zeros((3, 3))
    labels = TrajectoryLabels(label_strings=np.zeros((3, 3), dtype=np.str_))
    with_output = TrajectoryStatistic("test", stats, trajectory_labels=labels)
    assert with_output._layer_labels.tolist() == ["0", "1", "output"]
    without = TrajectoryStatistic("test", stats, trajectory_labels=labels, includes_output=False)
    assert without._layer_labels.tolist() == ["0", "1", "2"]


def test_labels_check_hover_shape():
    with pytest.raises(TrajectoryShapeError):
        TrajectoryLabels(np.zeros((2, 3), dtype=np.str_), np.zeros((2, 2, 1, 1), dtype=np.str_))


def test_template_and_customdata_exact():
    # (layers=2, positions=1, rows=2, cols=2)
    entries = np.array(
        [
            [[["a", "10.00%"], ["bb", "5.00%"]]],
            [[["ccc", "1.00%"], ["d", "0.50%"]]],
        ]
    )
    labels = TrajectoryLabels(np.array([["a"], ["ccc"]]), entries)
    template, customdata = labels.template_and_customdata()
    assert template == (
        "%{customdata[0]}%{customdata[1]}<br>%{customdata[2]}%{customdata[3]}<br><extra></extra>"
    )
    assert customdata.shape == (2, 1, 4)
    # Column widths: longest entry + 1 -> 4 and 7.
    assert customdata[0, 0].tolist() == ["   a", " 10.00%", "  bb", "  5.00%"]
    assert customdata[1, 0].tolist() == [" ccc", "  1.00%", "   d", "  0.50%"]

    _, narrow = labels.template_and_customdata(col_width_limit=3)
    # Too long: keep the rightmost characters.
    assert narrow[0, 0].tolist() == ["  a", "00%", " bb", "00%"]
    assert narrow[1, 0].tolist() == ["ccc", "00%", "  d", "50%"]


def test_template_needs_hover_entries():
    with pytest.raises(ValueError, match="hover"):
        TrajectoryLabels(np.zeros((1, 1), dtype=np.str_)).template_and_customdata()


def test_clip_sets_range_and_validates():
    stat = TrajectoryStatistic("x", np.array([[-1.0, 0.5], [2.0, 3.0]]))
    clipped = stat.clip(0, 2)
    assert clipped.stats.tolist() == [[0.0, 0.5], [2.0, 2.0]]
    assert (clipped.min, clipped.max) == (0, 2)
    assert stat.stats[0, 0] == -1.0  # the original is untouched
    with pytest.raises(ValueError, match="min < max"):
        stat.clip(2, 2)


def test_stride_keeps_output_row_and_labels():
    stats = np.arange(10.0).reshape(5, 2)
    labels = TrajectoryLabels(
        np.array([[f"{r}{c}" for c in range(2)] for r in range(5)]),
        np.zeros((5, 2, 1, 2), dtype="<U3"),
    )
    stat = TrajectoryStatistic("x", stats, trajectory_labels=labels, units="u", min=0, max=9)
    strided = stat.stride(3)
    assert strided.stats[:, 0].tolist() == [0.0, 6.0, 8.0]
    assert strided._layer_labels.tolist() == ["0", "3", "output"]
    assert strided.trajectory_labels.label_strings[:, 0].tolist() == ["00", "30", "40"]
    assert strided.trajectory_labels.hover_over_entries.shape == (3, 2, 1, 2)
    assert (strided.name, strided.units, strided.min, strided.max) == ("x", "u", 0, 9)

    small = TrajectoryStatistic("test", np.zeros((3, 2))).stride(2)
    assert small.stats.shape == (2, 2)
    assert small._layer_labels.tolist() == ["0", "output"]


def test_heatmap_uses_plotly6_colorbar_title_and_labels():
    entries = np.array([[[["a", "1%"]], [["b", "2%"]]], [[["c", "3%"]], [["d", "4%"]]]])
    labels = TrajectoryLabels(np.array([["a", "b"], ["c", "d"]]), entries)
    stat = TrajectoryStatistic(
        "Entropy",
        np.array([[1.0, 2.0], [3.0, 4.0]]),
        sequence_labels=np.array(["x", "x"]),
        trajectory_labels=labels,
        units="nats",
    )
    heatmap = stat.heatmap()
    assert isinstance(heatmap, go.Heatmap)
    assert heatmap.colorbar.title.text == "Entropy (nats)"
    assert heatmap.colorbar.title.side == "right"
    assert (heatmap.zmin, heatmap.zmax) == (1.0, 4.0)
    # Duplicate tokens stay distinct columns.
    assert list(heatmap.x) == ["x", "x\u200c"]
    assert list(heatmap.y) == ["0", "output"]
    assert heatmap.texttemplate == "<b>%{text}</b>"
    assert heatmap.hovertemplate.endswith("<extra></extra>")
    assert heatmap.hoverlabel.font.family == "Monospace"
    assert heatmap.customdata.shape == (2, 2, 2)
    assert stat.heatmap(colorscale="viridis", zmid=0).zmid == 0


def test_heatmap_log_scale_ticks_and_infinite_values():
    stat = TrajectoryStatistic("Rank", np.array([[1.0, 10.0], [100.0, 1000.0]]), units="")
    heatmap = stat.heatmap(log_scale=True)
    assert np.allclose(np.asarray(heatmap.z, dtype=float), [[0, 1], [2, 3]])
    assert list(heatmap.colorbar.tickvals) == [0, 1, 2, 3]
    assert list(heatmap.colorbar.ticktext) == ["10^0", "10^1", "10^2", "10^3"]
    assert heatmap.colorbar.title.text == "Rank ()"

    with_inf = TrajectoryStatistic("KL", np.array([[np.inf, 1.0], [0.0, 2.0]]))
    heatmap = with_inf.heatmap()
    assert (heatmap.zmin, heatmap.zmax) == (0.0, 2.0)


def test_figure_layout():
    stat = TrajectoryStatistic("test", np.zeros((2, 3)))
    figure = stat.figure(title="Title", token_width=50)
    assert isinstance(figure, go.Figure)
    assert figure.layout.width == 200 + 50 * 3
    assert figure.layout.title.text == "Title"
    assert figure.layout.title.x == 0.5
    assert figure.layout.xaxis.title.text == "Input"
    assert figure.layout.yaxis.title.text == "Layer"


def test_notebooks_render_a_statistic_inline():
    """In a notebook (plotly's mimetype renderer) a statistic shows its heat map; elsewhere
    the bundle is empty and nothing is opened."""
    import plotly.io as pio

    stats = np.arange(6, dtype=float).reshape(2, 3)
    stat = TrajectoryStatistic("Entropy", stats, units="nats")
    before = pio.renderers.default
    try:
        pio.renderers.default = ""
        assert stat._repr_mimebundle_() == {}
        pio.renderers.default = "plotly_mimetype"
        bundle = stat._repr_mimebundle_()
    finally:
        pio.renderers.default = before
    spec = bundle["application/vnd.plotly.v1+json"]
    heatmap = spec["data"][0]
    assert heatmap["type"] == "heatmap"
    z = heatmap["z"]
    if isinstance(z, dict):  # plotly >= 6 sends arrays as typed base64 buffers
        import base64

        raw = np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"])
        z = raw.reshape([int(n) for n in str(z["shape"]).split(",")])
    np.testing.assert_array_equal(np.asarray(z, dtype=float), stats)
    assert spec["layout"]["title"]["text"] == "Entropy"
