"""Top-k classes of image files: `python -m experiments.predict --workdir=DIR a.png b.jpg [--top_k=5]`.

Uses the latest checkpoint in DIR (written by experiments.run or experiments.ablate); a damaged one
is skipped for the one before it, with the warning training gives, and left where it is
(`jaxcnn.runs.load`). Images of any size and mode are fitted to the model's input. Missing workdir,
checkpoint or image: a one-line error and exit status 1.
"""
import numpy as np
from absl import app, flags, logging

from experiments import cli
from jaxcnn import predict

flags.DEFINE_string("workdir", "runs/quickstart", "Training workdir whose latest checkpoint is used.")
flags.DEFINE_integer("top_k", 5, "Classes shown per image.", lower_bound=1)
FLAGS = flags.FLAGS


def main(argv):
    paths = argv[1:]
    if not paths:
        cli.fail("give one or more image files after the flags")
    cli.quiet()
    logging.set_verbosity(logging.WARNING)   # Orbax logs every read at INFO
    with cli.user_errors():
        predictor = predict.load(FLAGS.workdir)
        run = predictor.run
        images = np.stack([predict.read_image(path, run.input_shape, run.config.data.augment)
                           for path in paths])
    width = max(map(len, run.class_names))
    for path, probabilities in zip(paths, predictor.predict(images)):
        print(path)
        for i in np.argsort(-probabilities)[:FLAGS.top_k]:
            print(f"  {run.class_names[i]:<{width}}  {100 * probabilities[i]:6.2f}%")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
