"""The per-convolution benchmark: shapes read from a model, one tiny shape timed and tabulated."""
import importlib.util

from experiments import conv_layers
from jaxcnn import models
from jaxcnn.cpu import onednn


def test_distinct_conv_shapes_of_a_model():
    model = models.create("vgg11", 5, cfg=(4, 4, "M", 8), head=(16,), pool_to=(2, 2))
    shapes = conv_layers.conv_shapes(model, (8, 8, 3), batch_size=2)
    pad = ((1, 1), (1, 1))
    assert shapes == {conv_layers.ConvShape((2, 8, 8, 3), (3, 3), 4, (1, 1), pad): 1,
                      conv_layers.ConvShape((2, 8, 8, 4), (3, 3), 4, (1, 1), pad): 1,
                      conv_layers.ConvShape((2, 4, 4, 4), (3, 3), 8, (1, 1), pad): 1}


def test_one_tiny_shape_is_timed_and_tabulated():
    shape = conv_layers.ConvShape((2, 4, 4, 3), (3, 3), 4, (1, 1), ((1, 1), (1, 1)))
    with_torch = importlib.util.find_spec("torch") is not None
    result = conv_layers.time_shape(shape, burn_in=0, num_batches=1, with_torch=with_torch)
    impls = ["xla", "im2col"] + ["onednn"] * onednn.available() + ["auto"] + ["torch"] * with_torch
    assert sorted(result["ms"]) == sorted((i, m) for i in impls
                                          for m in ("forward", "forward_backward"))
    assert all(ms > 0 for ms in result["ms"].values())
    header, rule, row = conv_layers.markdown([("tiny", shape, 2, result)]).splitlines()
    assert header.startswith("| model | input N×H×W×C | kernel, stride | out | × | xla fwd")
    assert row.startswith("| tiny | 2×4×4×3 | 3×3/1 | 4 | 2 | ")
    assert row.count("|") == header.count("|") == rule.count("|")
    assert result["auto_choice"] == "col2im_grad"      # 3 input channels, a 4×4 output map
