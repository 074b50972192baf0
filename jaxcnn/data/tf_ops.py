"""TensorFlow image ops of the host pipeline: the deterministic evaluation geometry and the training
augmentations, from encoded JPEG / PNG bytes. Images stay uint8 (normalisation happens on the
device); randomness is stateless and seeded per example, so pixels depend neither on thread timing
nor on where a run was resumed.

The crops of ImageNet-size photos decode only what they keep, as the Flax ImageNet example and
big_vision do: the window is chosen from the image's size in its header (`encoded_shape`), and a
JPEG decodes just that window (`tf.io.decode_and_crop_jpeg`; PNG and other formats decode whole and
are cropped). `random_resized_crop` gives the pixels of cropping the decoded image but along a
JPEG window's right edge (its chroma upsampled from fewer neighbours); `scale_jitter` maps the 224
crop of the image resized to side S back to the original's pixels and resizes only that window,
the same view within float rounding (one level; tests/test_tf_ops.py).
"""
from __future__ import annotations

from jaxcnn.data.device import CIFAR_PAD
from jaxcnn.data.sources import (CROP_AREA, CROP_ASPECT, CROP_ATTEMPTS, EVAL_RESIZE, import_tf,
                                  scale_jitter_sides)

tf = import_tf()


def decode(contents, channels: int):
    """The whole image, uint8 [h, w, channels]."""
    return tf.io.decode_image(contents, channels=channels, expand_animations=False)


def encoded_shape(contents):
    """[height, width] of an encoded image from its header: JPEG's frame header, PNG's IHDR chunk
    (big-endian width and height at bytes 16-23); other formats are decoded to find it."""
    def png():
        digits = tf.cast(tf.io.decode_raw(tf.strings.substr(contents, 16, 8), tf.uint8), tf.int32)
        width, height = (tf.reduce_sum(digits[i:i + 4] * [1 << 24, 1 << 16, 1 << 8, 1])
                         for i in (0, 4))
        return tf.stack([height, width])

    return tf.case([(tf.image.is_jpeg(contents), lambda: tf.io.extract_jpeg_shape(contents)[:2]),
                    (tf.strings.substr(contents, 0, 4) == b"\x89PNG", png)],
                   default=lambda: tf.shape(decode(contents, 1))[:2])


def decode_window(contents, window, channels: int):
    """The window [top, left, height, width] of an encoded image, decoding only that much of a
    JPEG."""
    def cropped():
        return tf.slice(decode(contents, channels), tf.concat([window[:2], [0]], 0),
                        tf.concat([window[2:], [channels]], 0))

    return tf.cond(tf.image.is_jpeg(contents),
                   lambda: tf.io.decode_and_crop_jpeg(contents, window, channels=channels),
                   cropped)


def to_uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def shorter_side_shape(shape, side):
    """[h, w] of an image of shape [h, w] resized to shorter side `side`, keeping its aspect."""
    scale = tf.cast(side, tf.float32) / tf.cast(tf.reduce_min(shape), tf.float32)
    return tf.maximum(tf.cast(tf.round(tf.cast(shape, tf.float32) * scale), tf.int32), side)


def resize_shorter_side(image, side):
    """Bilinear (antialiased) resize keeping the aspect ratio; a no-op when already that size."""
    shape = tf.shape(image)[:2]
    new_shape = shorter_side_shape(shape, side)
    return tf.cond(tf.reduce_all(new_shape == shape), lambda: image,
                   lambda: to_uint8(tf.image.resize(image, new_shape, antialias=True)))


def center_crop(image, size: int):
    shape = tf.shape(image)
    return tf.image.crop_to_bounding_box(image, (shape[0] - size) // 2, (shape[1] - size) // 2,
                                         size, size)


def eval_image(image, size: int, augment: str):
    """The evaluation view of a decoded image: shorter side to size * EVAL_RESIZE, centre crop."""
    return center_crop(resize_shorter_side(image, round(size * EVAL_RESIZE[augment])), size)


def random_resized_crop(contents, size: int, seed, channels: int):
    """Inception-style crop (the Flax ImageNet example's parameters), resized to size x size; only
    the crop is decoded."""
    shape = encoded_shape(contents)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.concat([shape, [channels]], 0), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed, min_object_covered=0.1, aspect_ratio_range=CROP_ASPECT,
        area_range=CROP_AREA, max_attempts=CROP_ATTEMPTS, use_image_if_no_bounding_boxes=True)
    crop = decode_window(contents, tf.concat([begin[:2], crop_size[:2]], 0), channels)
    return to_uint8(tf.image.resize(crop, (size, size), antialias=True))


def scale_jitter_geometry(shape, size: int, seed):
    """VGG's scale jittering for an image of shape [h, w]: the [h, w] it is resized to (shorter
    side S ~ U[sources.SCALE_JITTER] * size) and the [top, left] of the size x size crop of that."""
    scale_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    low, high = scale_jitter_sides(size)
    side = tf.random.stateless_uniform([], scale_seed, minval=low, maxval=high + 1, dtype=tf.int32)
    resized = shorter_side_shape(shape, side)
    offset = tf.random.stateless_uniform([2], crop_seed, minval=0, maxval=tf.int32.max,
                                         dtype=tf.int32) % (resized - size + 1)
    return resized, offset


def scale_jitter(contents, size: int, seed, channels: int):
    """VGG training scale jittering (`scale_jitter_geometry`), decoding only the crop's window of
    the original: the crop's corners mapped back, widened by the resize kernel's reach. The window
    is resized with the kernel, scale and alignment of resizing the whole image (tf.image.resize's
    antialiased bilinear is ScaleAndTranslate), shifted by the window's place in it."""
    shape = encoded_shape(contents)
    resized, offset = scale_jitter_geometry(shape, size, seed)
    scale = tf.cast(resized, tf.float32) / tf.cast(shape, tf.float32)   # per axis
    reach = tf.cast(tf.math.ceil(1 / tf.minimum(tf.reduce_min(scale), 1.0)), tf.int32) + 1
    top_left = tf.maximum(
        tf.cast(tf.floor(tf.cast(offset, tf.float32) / scale), tf.int32) - reach, 0)
    bottom_right = tf.minimum(
        tf.cast(tf.math.ceil(tf.cast(offset + size, tf.float32) / scale), tf.int32) + reach, shape)
    window = decode_window(contents, tf.concat([top_left, bottom_right - top_left], 0), channels)
    view = tf.raw_ops.ScaleAndTranslate(
        images=tf.cast(window, tf.float32)[None], size=[size, size], scale=scale,
        translation=scale * tf.cast(top_left, tf.float32) - tf.cast(offset, tf.float32),
        kernel_type="triangle", antialias=True)[0]
    return tf.ensure_shape(to_uint8(view), (size, size, channels))


def cifar_crop(contents, size: int, seed, channels: int):
    """Zero-pad CIFAR_PAD pixels on each side, then a random size x size crop."""
    image = tf.pad(eval_image(decode(contents, channels), size, "cifar"),
                   [[CIFAR_PAD] * 2, [CIFAR_PAD] * 2, [0, 0]])
    return tf.image.stateless_random_crop(image, (size, size, channels), seed=seed)


_CROPS = {"cifar": cifar_crop, "random_resized_crop": random_resized_crop, "scale_jitter": scale_jitter}


def train_image(contents, size: int, augment: str, seed, channels: int):
    """Training view of one encoded image; `seed` is a [2] integer tensor unique to the example."""
    if augment == "none":
        return eval_image(decode(contents, channels), size, augment)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = _CROPS[augment](contents, size, crop_seed, channels)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
