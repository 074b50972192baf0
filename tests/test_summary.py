"""A model's size and cost against LeNet-5 counted by hand."""
import warnings

from jaxcnn import models
from jaxcnn.models import summary

# conv 5x5: 1->6, 6->16, 16->120 (weights + biases), then FC 120->84->10.
LENET_PARAMS = ((25 * 6 + 6) + (25 * 6 * 16 + 16) + (25 * 16 * 120 + 120) + (120 * 84 + 84)
                + (84 * 10 + 10))
# Multiply-accumulates: output positions x channels x fan-in, per layer.
LENET_MACS = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 120 * 400 + 120 * 84 + 84 * 10


def test_parameters_and_flops_of_lenet5_by_hand():
    lenet = models.create("lenet5", num_classes=10)
    assert summary.parameter_count(lenet, (32, 32, 1)) == LENET_PARAMS == 61_706
    assert summary.flops_per_image(lenet, (32, 32, 1)) == 2 * LENET_MACS == 833_040
    with_bn = models.create("lenet5", num_classes=10, norm="batch")   # + scale and offset
    assert summary.parameter_count(with_bn, (32, 32, 1)) == LENET_PARAMS + 2 * (6 + 16 + 120)


def test_table_lists_every_layer_and_the_total():
    table = summary.table(models.create("lenet5", num_classes=10), (32, 32, 1), depth=2)
    for layer in ("conv1/conv", "conv2/conv", "conv3/conv", "fc1", "fc2"):
        assert f"│ {layer} " in table
    assert "float32[1,28,28,6]" in table and "Total Parameters: 61,706" in table


def test_table_shows_no_warning_of_flaxs_argument_probing():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary.table(models.create("convnet_cifar", num_classes=10), (24, 24, 3))
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)]
