"""The real CIFAR-10 (JPEG folders in ../shared/data, or $JAXCNN_CIFAR10_TAR) through the folder
dataset. Skipped when the archive is absent."""
import collections
import os
import subprocess
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxcnn import data
from jaxcnn.data import sources, tf_host
from jaxcnn.config import DataConfig
from jaxcnn.data.sources import Host

TAR = Path(os.environ.get("JAXCNN_CIFAR10_TAR", Path(__file__).resolve().parents[1].parent
                          / "shared/data/cifar10_jpg.tar.gz"))
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="session")
def cifar10_cfg(tmp_path_factory):
    if not TAR.is_file():
        pytest.skip(f"no CIFAR-10 archive at {TAR} (set JAXCNN_CIFAR10_TAR)")
    # 60,000 small files: on this machine's disk deleting them takes minutes, in memory a second.
    memory = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=memory if memory.is_dir() else tmp_path_factory.getbasetemp(),
                                     prefix="cifar10-") as root:
        subprocess.run(["tar", "xzf", str(TAR), "-C", root], check=True)   # 5x tarfile's speed
        yield DataConfig(dataset=f"folder:{root}", image_size=32, channels=3, batch_size=256,
                         eval_batch_size=1000, augment="cifar")


def test_split_sizes_and_classes(cifar10_cfg):
    info = data.dataset_info(cifar10_cfg)
    assert (info.num_train, info.num_test, info.class_names) == (50_000, 10_000, CLASSES)


def test_labels_match_folder_names_and_classes_are_balanced(cifar10_cfg):
    files = sources.folder_files(cifar10_cfg.dataset.removeprefix("folder:"))
    for (paths, labels), split, per_class in ((files.train, "train", 5000), (files.test, "test", 1000)):
        assert collections.Counter(labels) == {i: per_class for i in range(10)}
        assert all(Path(p).parent.name == CLASSES[y] and Path(p).parent.parent.name == split
                   for p, y in zip(paths, labels))


def test_test_split_decodes_to_every_example_once(cifar10_cfg):
    batches = list(tf_host.host_eval_batches(cifar10_cfg, Host(), 1000))
    assert all(b["image"].shape == (1000, 32, 32, 3) and b["image"].dtype == np.uint8 for b in batches)
    labels = np.concatenate([b["label"] for b in batches])
    assert collections.Counter(labels) == {i: 1000 for i in range(10)}


def test_augmented_global_training_batch(cifar10_cfg):
    sharding = NamedSharding(jax.make_mesh((8,), ("data",)), P("data"))
    batch = next(data.train_batches(cifar10_cfg, sharding))
    image = np.asarray(batch["image"])
    assert image.shape == (256, 32, 32, 3) and abs(image.mean()) < 0.5 and 0.6 < image.std() < 1.4
    assert len(set(np.asarray(batch["label"]))) == 10
