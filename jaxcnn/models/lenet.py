"""LeNet-5 (LeCun et al. 1998) with ReLU, as in the cats-vs-dogs article (32×32 or 150×150 input)."""
import flax.linen as nn

from jaxcnn.models import layers
from jaxcnn.models.base import ConvNet

# Article: tf.nn.lrn(depth_radius=4, bias=1, alpha=0.001/9, beta=0.75) after each pooling.
LENET_LRN = dict(radius=4, bias=1.0, alpha=0.001 / 9, beta=0.75)


class LeNet5(ConvNet):
    """conv5×5-6 → avg-pool → conv5×5-16 → avg-pool → conv5×5-120 → FC-84 → FC-classes.

    Convs are VALID; norm="lrn" puts LRN after each pooling (the article's placement) instead of
    inside the blocks. Inputs larger than 32×32 give a wider flattened conv3 (the article's 150×150).
    """
    dropout: float = 0.0
    num_conv_layers = 3

    @property
    def min_input_size(self):
        return layers.min_size_for([(5, 1, 0), (2, 2, 0), (5, 1, 0), (2, 2, 0), (5, 1, 0)])

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_input(x)
        block_norm = "batch" if self.norm == "batch" else "none"
        for i, width in enumerate((6, 16, 120), start=1):
            x = self.conv_block(i, width, 5, padding=0, norm=block_norm)(x, train)
            if i < 3:
                x = nn.avg_pool(x, (2, 2), (2, 2))
                if self.norm == "lrn":
                    x = layers.lrn(x, **LENET_LRN)
        x = x.reshape(x.shape[0], -1)
        return self.classifier(x, (84,), train)
