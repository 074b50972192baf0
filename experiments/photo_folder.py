"""A folder of ImageNet-size JPEGs cut from real photographs, in ImageNet's layout, for input
benchmarks and end-to-end runs where ImageNet itself is not at hand.

    python -m experiments.photo_folder --out=DIR [--classes=9] [--train_per_class=200] \\
        [--val_per_class=50] [--photo_seed=0]

DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG. Class k's images are random crops of one
photograph (scikit-image's colour sample photos and matplotlib's Grace Hopper, cycled), rescaled to
ImageNet's sizes (most 500 pixels on the longer side at 4:3, 3:2 or their portraits; a quarter
between 250 and 1,000) and saved at JPEG quality 90. Photographs, not noise, because noise decodes
several times slower and would mislead a decoding benchmark; one photograph per class, so a model
learns the classes and the accuracy printed means something. The files average about 50 kB,
ImageNet's about 110 kB (the crops are smoother, many of them upsampled): entropy decoding is a
little cheaper here than on ImageNet at the same pixel count.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from absl import app, flags
from PIL import Image

from experiments import cli

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry",
                  "retina", "rocket", "stereo_motorcycle")
ASPECTS = (4 / 3, 3 / 2, 1.0, 3 / 4, 2 / 3)      # width / height
ASPECT_WEIGHTS = (0.45, 0.2, 0.1, 0.15, 0.1)
JPEG_QUALITY = 90

flags.DEFINE_string("out", None, "folder to write (created; must not hold a train/ already)")
flags.DEFINE_integer("classes", len(SKIMAGE_PHOTOS) + 1, "number of classes", lower_bound=1)
flags.DEFINE_integer("train_per_class", 200, "training images per class", lower_bound=1)
flags.DEFINE_integer("val_per_class", 50, "validation images per class", lower_bound=1)
flags.DEFINE_integer("photo_seed", 0, "seed of the crops and sizes")
FLAGS = flags.FLAGS


def photographs() -> list[np.ndarray]:
    """The colour sample photographs that ship with scikit-image and matplotlib (no download)."""
    import matplotlib
    from skimage import data
    photos = [getattr(data, name)() for name in SKIMAGE_PHOTOS]
    photos[SKIMAGE_PHOTOS.index("stereo_motorcycle")] = data.stereo_motorcycle()[0]
    hopper = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    return [*photos, np.asarray(Image.open(hopper).convert("RGB"))]


def imagenet_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height) drawn like ImageNet's training images'."""
    longer = 500 if rng.random() < 0.75 else int(rng.integers(250, 1001))
    aspect = rng.choice(ASPECTS, p=ASPECT_WEIGHTS)
    if aspect >= 1:
        return longer, max(1, round(longer / aspect))
    return max(1, round(longer * aspect)), longer


def random_view(photo: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A crop of 35-100% of the largest window of `size`'s aspect in `photo`, resized to `size`."""
    height, width = photo.shape[:2]
    aspect = size[0] / size[1]
    scale = rng.uniform(0.35, 1.0)
    crop_w = max(1, int(min(width, height * aspect) * scale))
    crop_h = max(1, int(min(height, width / aspect) * scale))
    top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
    crop = Image.fromarray(photo[top:top + crop_h, left:left + crop_w])
    return crop.resize(size, Image.BICUBIC)


def write_folder(root: str | Path, classes: int, train_per_class: int, val_per_class: int,
                 seed: int = 0) -> Path:
    """Writes the folder (see the module's docstring) and returns its root."""
    root = Path(root)
    if (root / "train").exists():
        raise ValueError(f"{root / 'train'} exists already: give an empty or new --out")
    photos = photographs()
    rng = np.random.default_rng(seed)
    for k in range(classes):
        wnid = f"n{k:08d}"
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                view = random_view(photos[k % len(photos)], imagenet_size(rng), rng)
                view.save(folder / f"{wnid}_{i:05d}.JPEG", quality=JPEG_QUALITY)
    return root


def main(argv):
    cli.check_no_arguments(argv)
    with cli.user_errors():
        if not FLAGS.out:
            raise ValueError("give --out=DIR, the folder to write")
        root = write_folder(FLAGS.out, FLAGS.classes, FLAGS.train_per_class, FLAGS.val_per_class,
                            FLAGS.photo_seed)
        files = sorted(root.rglob("*.JPEG"))
        mean_kb = sum(f.stat().st_size for f in files) / len(files) / 1e3
        print(f"{len(files)} JPEGs in {root} (train/, val/; {FLAGS.classes} classes), "
              f"{mean_kb:.0f} kB on average")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
