"""Per-layer output shapes, parameters and FLOPs of a model, as the articles print every shape.

    python -m experiments.summary --model=vgg16 --image_size=224
    python -m experiments.summary --model=convnet_cifar --factorize=all --depth=2

The table is flax's `nn.tabulate` (FLOPs from XLA's cost analysis of each layer's forward pass at
batch 1); nothing is allocated beyond one layer at a time.
"""
from absl import app, flags

from experiments import cli, model_flags
from jaxcnn import models
from jaxcnn.models import summary

flags.DEFINE_integer("image_size", None, "Input side; default: the model's own.", lower_bound=1)
flags.DEFINE_integer("channels", None, "Input channels; default: the model's own.", lower_bound=1)
flags.DEFINE_integer("num_classes", 1000, "Classifier outputs.", lower_bound=1)
flags.DEFINE_integer("depth", 1, "Module nesting shown (2 shows the convs inside each block).",
                     lower_bound=1)
FLAGS = flags.FLAGS


def main(argv):
    cli.check_no_arguments(argv)
    cli.quiet()
    with cli.user_errors():
        height, _, channels = models.input_shape(FLAGS.model)
        model = models.create(FLAGS.model, FLAGS.num_classes, **model_flags.model_options())
        size = FLAGS.image_size or height
        table = summary.table(model, (size, size, FLAGS.channels or channels), FLAGS.depth)
    print(table)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
