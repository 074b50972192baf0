"""The training crops of `jaxcnn.data.tf_ops` decode only the window they keep: the views equal
those of the whole decoded image (random_resized_crop: the same pixels, but along a JPEG crop's
right edge; scale_jitter: within one level, float rounding of the resize),
on real photographs; a crop one pixel off is told apart."""
import io

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from jaxcnn.data import tf_ops

tf = tf_ops.tf
SIZE = 96   # the crop side; the photos are about ImageNet's shape at about half its size


@pytest.fixture(scope="module", params=["JPEG", "PNG"])
def photo(request):
    """A real photograph, encoded, with its decoded pixels (what decoding the whole file gives)."""
    image = Image.fromarray(load_sample_image("china.jpg")).resize((240, 180))
    buffer = io.BytesIO()
    image.save(buffer, request.param, **({"quality": 90} if request.param == "JPEG" else {}))
    contents = tf.constant(buffer.getvalue())
    return contents, tf_ops.decode(contents, 3)


SEEDS = [tf.constant([5, k], tf.int64) for k in range(6)]


def test_the_header_gives_the_decoded_shape(photo):
    contents, whole = photo
    np.testing.assert_array_equal(tf_ops.encoded_shape(contents), tf.shape(whole)[:2])


def random_resized_crop_of_whole(whole, seed, shift=(0, 0)):
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(whole), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    begin = tf.minimum(begin + [*shift, 0], tf.shape(whole) - crop_size)
    return tf_ops.to_uint8(tf.image.resize(tf.slice(whole, begin, crop_size), (SIZE, SIZE),
                                           antialias=True))


def test_random_resized_crop_is_the_crop_of_the_decoded_image(photo):
    """Equal but, from a JPEG, in the view's last two columns: libjpeg decodes a window's right edge
    with its chroma upsampled from fewer neighbours (measured: up to 7 levels, in under 1% of the
    values)."""
    contents, whole = photo
    edge = 2 if contents.numpy().startswith(b"\xff\xd8") else 0
    for seed in SEEDS:
        view = tf_ops.random_resized_crop(contents, SIZE, seed, 3).numpy()
        expected = random_resized_crop_of_whole(whole, seed).numpy()
        np.testing.assert_array_equal(view[:, :SIZE - edge], expected[:, :SIZE - edge])
        shifted = random_resized_crop_of_whole(whole, seed, shift=(1, 1)).numpy()
        assert not np.array_equal(view[:, :SIZE - edge], shifted[:, :SIZE - edge])


def scale_jitter_of_whole(whole, seed, shift=(0, 0)):
    """Scale jittering as it reads: the whole image resized to side S, then the crop (`shift`
    moves it, the wrong variant that the comparison must catch)."""
    resized, offset = tf_ops.scale_jitter_geometry(tf.shape(whole)[:2], SIZE, seed)
    image = tf_ops.resize_shorter_side(whole, tf.reduce_min(resized)).numpy()
    top, left = offset.numpy() + shift
    return image[top:top + SIZE, left:left + SIZE].astype(int)


def test_scale_jitter_is_the_crop_of_the_resized_image_within_float_rounding(photo):
    contents, whole = photo
    sides, off_by_one = [], []
    for seed in SEEDS:
        view = tf_ops.scale_jitter(contents, SIZE, seed, 3).numpy().astype(int)
        difference = np.abs(view - scale_jitter_of_whole(whole, seed))
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01   # measured: < 0.2%
        shifted = scale_jitter_of_whole(whole, seed, shift=(1, 0))
        if shifted.shape == view.shape:
            off_by_one.append(np.abs(view - shifted).mean())
        sides.append(int(tf.reduce_min(tf_ops.scale_jitter_geometry(
            tf.shape(whole)[:2], SIZE, seed)[0])))
    assert min(off_by_one) > 1   # a crop one pixel off is told apart
    assert min(sides) < 180 < max(sides)   # both downscaled and upscaled views were compared


def test_views_have_the_model_shape_for_every_augmentation(photo):
    contents, _ = photo
    for augment in ("none", "cifar", "random_resized_crop", "scale_jitter"):
        for channels in (1, 3):
            view = tf_ops.train_image(contents, SIZE, augment, SEEDS[0], channels)
            assert view.shape == (SIZE, SIZE, channels) and view.dtype == tf.uint8
