"""The command this codebase is named for, `experiments/flags/vgg16_imagenet.flags`, end to end on a
small folder in ImageNet's layout (train/ and val/ of WordNet ids, photographs at ImageNet's sizes):
the flagfile unchanged but for --dataset, --steps and --batch_size, VGG-16's thirteen convolutions
and three dense layers at a tiny width; scale-jittered training, checkpoints, resumption, the
single-crop evaluation it reports and the paper's dense evaluation of the finished run."""
import functools
import os

import pytest

from conftest import run_in_process, steps_in
from experiments import photo_folder, run
from jaxcnn import models, runs
from jaxcnn.models import vgg
from jaxcnn.models.vgg import VGG

FLAGFILE = os.path.join(os.path.dirname(__file__), "..", "experiments", "flags",
                        "vgg16_imagenet.flags")
# Configuration D's layout (2, 2, 3, 3, 3 convs between five pools) at widths a CPU test affords.
TINY_D = (4, 4, "M", 8, 8, "M", 8, 8, 8, "M", 16, 16, 16, "M", 16, 16, 16, "M")


@pytest.fixture
def tiny_vgg16(monkeypatch):
    spec = models.REGISTRY["vgg16"]
    monkeypatch.setitem(models.REGISTRY, "vgg16", spec._replace(
        builder=functools.partial(VGG, cfg=TINY_D, head=(16, 16))))


def test_the_vgg16_flagfile_trains_resumes_and_evaluates_on_an_imagenet_folder(
        tiny_vgg16, tmp_path, capsys, monkeypatch):
    images = photo_folder.write_folder(tmp_path / "imagenet", classes=3, train_per_class=8,
                                       val_per_class=4)
    workdir = tmp_path / "vgg16"
    args = (f"--flagfile={FLAGFILE}", f"--dataset=folder:{images}", "--batch_size=8",
            f"--workdir={workdir}", f"--cache_dir={tmp_path / 'cache'}")

    first = run_in_process(capsys, run.main, *args, "--steps=2")
    assert first.returncode == 0, first.stderr
    assert steps_in(workdir) == [2]
    resumed = run_in_process(capsys, run.main, *args, "--steps=4")
    assert resumed.returncode == 0, resumed.stderr
    assert " 2/4 [" in resumed.stderr       # the progress bar starts at the checkpoint's step
    assert steps_in(workdir)[-1] == 4
    assert "test accuracy:" in resumed.stdout
    trained = runs.load(str(workdir))
    assert (trained.config.data.augment, trained.config.data.image_size) == ("scale_jitter", 224)
    assert trained.class_names == ["n00000000", "n00000001", "n00000002"]
    assert trained.model.cfg == TINY_D and trained.step == 4

    traced = []     # (image shape, flip) of every dense evaluation traced
    dense_eval_logits = vgg.dense_eval_logits
    monkeypatch.setattr(vgg, "dense_eval_logits", lambda model, variables, images, flip=False: (
        traced.append((images.shape[1:], flip)) or dense_eval_logits(model, variables, images, flip)))
    dense = run_in_process(capsys, run.main, *args, "--steps=4", "--dense_eval_size=384",
                           "--eval_flip")
    assert dense.returncode == 0, dense.stderr
    assert "test accuracy:" in dense.stdout
    assert steps_in(workdir)[-1] == 4 and traced == [((384, 384, 3), True)]   # evaluated only
