"""The conv-tricks article's small CIFAR-10 net (24×24 crops): the test bed for factorise,
multi-branch and batch norm."""
import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.models import layers
from jaxcnn.models.base import ConvNet


class ConvNetCifar(ConvNet):
    """conv5×5-64 → max-pool → conv5×5-64 → max-pool → conv5×5-classes → global average pool.

    The last conv produces the logits, so it is linear (the article's ReLU on logits is a bug) and is
    not one of the ablation's conv blocks (`num_conv_layers` = 2).
    """
    width: int = 64
    num_conv_layers = 2

    @property
    def min_input_size(self):
        return 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_input(x)
        for i in (1, 2):
            x = self.conv_block(i, self.width, 5)(x, train)
            x = self.max_pool(x, 2, 2, padding="SAME")
        x = layers.conv(self.num_classes, (5, 5), padding="SAME", kernel_init=layers.dense_init,
                        dtype=self.dtype, name="logits")(x)
        return jnp.mean(x, axis=(-3, -2)).astype(jnp.float32)
