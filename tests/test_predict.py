"""Prediction on image files from a checkpoint: LeNet-5 trained a few steps on the digits."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image
from sklearn import metrics

from jaxcnn import data, parallel, predict, runs, trainer
from jaxcnn.data import pil_ops, sources
from jaxcnn.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from jaxcnn.metrics_file import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_IMAGES = 16


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(workdir, config, state) of a short digits run."""
    workdir = tmp_path_factory.mktemp("digits")
    cfg = TrainConfig(model=ModelConfig("lenet5"),
                      data=DataConfig(dataset="digits", image_size=32, channels=1, batch_size=32,
                                      eval_batch_size=64),
                      optim=OptimConfig(optimizer="adam", learning_rate=1e-3), workdir=str(workdir),
                      steps=30, log_every=10, plot=False)
    state, _ = trainer.train_and_evaluate(cfg)
    return workdir, cfg, state


def eval_pipeline_probabilities(cfg, state) -> np.ndarray:
    """Softmax of the model on the first test images, as the evaluation pipeline feeds them."""
    batch = next(data.eval_batches(cfg.data, parallel.batch_sharding(parallel.data_mesh())))
    logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats},
                            batch["image"][:NUM_IMAGES])
    return np.asarray(jax.nn.softmax(logits))


def test_png_of_a_test_image_predicts_what_the_evaluation_pipeline_does(trained, tmp_path):
    workdir, cfg, state = trained
    images, _ = sources.digits_arrays("test", 32, 1)
    paths = []
    for i, image in enumerate(images[:NUM_IMAGES]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image[..., 0]).save(paths[-1])
    predictor = predict.load(str(workdir))
    assert predictor.run.step == 30 and predictor.run.class_names == [str(d) for d in range(10)]
    probabilities = predictor.predict(np.stack([predict.read_image(p, predictor.run.input_shape)
                                                for p in paths]))
    expected = eval_pipeline_probabilities(cfg, state)
    np.testing.assert_array_equal(probabilities.argmax(-1), expected.argmax(-1))
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_any_size_and_mode_gives_probabilities(trained, tmp_path):
    workdir, _, _ = trained
    rng = np.random.default_rng(0)
    digit = np.repeat(sources.digits_arrays("test", 32, 1)[0][0], 3, axis=-1)
    files = {
        "gray.png": Image.fromarray(rng.integers(0, 256, (20, 28), np.uint8)),
        "rgb.jpg": Image.fromarray(rng.integers(0, 256, (64, 48, 3), np.uint8)),
        "rgba.png": Image.fromarray(rng.integers(0, 256, (100, 100, 4), np.uint8)),
        "palette.png": Image.fromarray(rng.integers(0, 256, (33, 33, 3), np.uint8)).convert("P"),
        "gray16.png": Image.fromarray(rng.integers(0, 65536, (40, 40), np.uint16)),
        "digit_rgb.png": Image.fromarray(digit),
        "digit_gray.png": Image.fromarray(digit[..., 0]),
    }
    for name, image in files.items():
        image.save(tmp_path / name)
    predictor = predict.load(str(workdir))
    images = np.stack([predict.read_image(tmp_path / name, predictor.run.input_shape)
                       for name in files])
    assert images.shape == (len(files), 32, 32, 1) and images.dtype == np.uint8
    probabilities = predictor.predict(images)
    assert probabilities.shape == (len(files), 10) and (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(-1), 1, rtol=1e-5)
    np.testing.assert_allclose(probabilities[-2], probabilities[-1], atol=1e-6)   # gray RGB = gray


def test_fit_resizes_the_shorter_side_and_crops_the_centre():
    image = Image.fromarray(np.arange(40 * 80, dtype=np.uint8).reshape(40, 80) % 2 * 255)
    assert pil_ops.fit(image, 20).size == (20, 20)
    half = np.zeros((10, 30), np.uint8)
    half[:, 10:20] = 255                         # a white centre third
    assert (np.asarray(pil_ops.fit(Image.fromarray(half), 10)) == 255).all()


def test_one_line_errors(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="no workdir"):
        predict.load(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        predict.load(str(tmp_path))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        predict.read_image(tmp_path / "notes.png", (32, 32, 1))
    workdir, _, _ = trained
    out = subprocess.run([sys.executable, "-m", "experiments.predict", f"--workdir={workdir}",
                          str(tmp_path / "notes.png")], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1 and out.stderr.strip().count("\n") == 0
    assert out.stderr.startswith("error: cannot read image")


def test_command_line_prints_top_k(trained, tmp_path):
    workdir, _, _ = trained
    Image.fromarray(sources.digits_arrays("test", 32, 1)[0][0][..., 0]).save(tmp_path / "d.png")
    out = subprocess.run([sys.executable, "-m", "experiments.predict", f"--workdir={workdir}",
                          "--top_k=3", str(tmp_path / "d.png")], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=120)
    lines = out.stdout.splitlines()
    assert lines[0] == str(tmp_path / "d.png") and len(lines) == 4
    percents = [float(line.split()[1].rstrip("%")) for line in lines[1:]]
    assert percents == sorted(percents, reverse=True) and {line.split()[0] for line in lines[1:]} \
        <= {str(d) for d in range(10)}


def test_test_split_predictions_are_the_evaluation_of_the_training_loop(trained):
    workdir, cfg, state = trained
    test = predict.predict_test_split(runs.load(str(workdir)))
    images, labels = sources.digits_arrays("test", 32, 1)
    mean, std = sources.normalization(cfg.data)
    np.testing.assert_array_equal(test.labels, labels)
    np.testing.assert_allclose(test.images, (images / 255 - mean) / std, atol=1e-6)
    assert test.probabilities.shape == (300, 10)
    np.testing.assert_allclose(test.probabilities, eval_pipeline_probabilities_all(cfg, state),
                               atol=1e-6)
    last_test = [r for r in read_metrics(workdir) if r["split"] == "test"][-1]
    assert last_test["step"] == 30
    assert np.mean(test.probabilities.argmax(1) == labels) == last_test["top1"]


def eval_pipeline_probabilities_all(cfg, state) -> np.ndarray:
    """Softmax of the model on every test image, computed without the evaluation pipeline."""
    images, _ = sources.digits_arrays("test", 32, 1)
    mean, std = sources.normalization(cfg.data)
    logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats},
                            (images / 255 - mean) / std)
    return np.asarray(jax.nn.softmax(logits))


def test_confusion_matrix_counts_like_scikit_learn():
    rng = np.random.default_rng(0)
    labels, predicted = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    expected = metrics.confusion_matrix(labels, predicted, labels=range(5))
    np.testing.assert_array_equal(predict.confusion_matrix(labels, predicted, 5), expected)
    assert predict.confusion_matrix(labels, predicted, 5).sum() == 200
    with pytest.raises(ValueError, match=r"a label is outside 0\.\.3"):
        predict.confusion_matrix(np.append(labels, 4), np.append(predicted, 0), 4)
    with pytest.raises(ValueError, match=r"\(3,\) labels and \(2,\) predictions"):
        predict.confusion_matrix([0, 1, 2], [0, 1], 3)
