"""TensorFlow image ops of the host pipeline: the deterministic evaluation geometry and the training
augmentations. Images stay uint8 (normalisation happens on the device); randomness is stateless and
seeded per example, so pixels depend neither on thread timing nor on where a run was resumed."""
from __future__ import annotations

from jaxcnn.data.device import CIFAR_PAD
from jaxcnn.data.sources import EVAL_RESIZE, import_tf

tf = import_tf()

SCALE_JITTER = (256 / 224, 512 / 224)   # VGG's S in [256, 512] for 224 crops, relative to the size


def to_uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def resize_shorter_side(image, side):
    """Bilinear (antialiased) resize keeping the aspect ratio; a no-op when already that size."""
    shape = tf.shape(image)[:2]
    scale = tf.cast(side, tf.float32) / tf.cast(tf.reduce_min(shape), tf.float32)
    new_shape = tf.maximum(tf.cast(tf.round(tf.cast(shape, tf.float32) * scale), tf.int32), side)
    return tf.cond(tf.reduce_all(new_shape == shape), lambda: image,
                   lambda: to_uint8(tf.image.resize(image, new_shape, antialias=True)))


def center_crop(image, size: int):
    shape = tf.shape(image)
    return tf.image.crop_to_bounding_box(image, (shape[0] - size) // 2, (shape[1] - size) // 2,
                                         size, size)


def eval_image(image, size: int, augment: str):
    return center_crop(resize_shorter_side(image, round(size * EVAL_RESIZE[augment])), size)


def random_resized_crop(image, size: int, seed):
    """Inception-style crop (the Flax ImageNet example's parameters), resized to size x size."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, crop_size)
    return to_uint8(tf.image.resize(crop, (size, size), antialias=True))


def scale_jitter(image, size: int, seed):
    """VGG training scale jittering: shorter side to S ~ U[SCALE_JITTER] * size, random size crop."""
    scale_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    low, high = (round(size * s) for s in SCALE_JITTER)
    side = tf.random.stateless_uniform([], scale_seed, minval=low, maxval=high + 1, dtype=tf.int32)
    image = resize_shorter_side(image, side)
    return tf.image.stateless_random_crop(image, (size, size, tf.shape(image)[2]), seed=crop_seed)


def cifar_crop(image, size: int, seed):
    """Zero-pad CIFAR_PAD pixels on each side, then a random size x size crop."""
    image = tf.pad(eval_image(image, size, "cifar"), [[CIFAR_PAD] * 2, [CIFAR_PAD] * 2, [0, 0]])
    return tf.image.stateless_random_crop(image, (size, size, tf.shape(image)[2]), seed=seed)


_CROPS = {"cifar": cifar_crop, "random_resized_crop": random_resized_crop, "scale_jitter": scale_jitter}


def train_image(image, size: int, augment: str, seed):
    """Training view of one uint8 image; `seed` is a [2] integer tensor unique to the example."""
    if augment == "none":
        return eval_image(image, size, augment)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = _CROPS[augment](image, size, crop_seed)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
