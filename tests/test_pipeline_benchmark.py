"""The benchmark data (`experiments.photo_folder`: ImageNet-size JPEGs cut from photographs, in
ImageNet's layout) and `experiments.pipeline_benchmark` on any folder: one row per loader and view,
per-core rates and the host cores a device needs computed from them."""
import json

import pytest
from PIL import Image

from conftest import assert_one_line_error, run_in_process
from experiments import photo_folder, pipeline_benchmark
from jaxcnn.data import folders


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return photo_folder.write_folder(tmp_path_factory.mktemp("photos"), classes=3,
                                     train_per_class=8, val_per_class=4)


def test_photo_folder_is_imagenet_shaped_and_reproducible(photos, tmp_path):
    files = folders.folder_files(str(photos), None)
    assert files.class_names == ("n00000000", "n00000001", "n00000002")
    assert (len(files.train[0]), len(files.test[0])) == (24, 12)    # val/ is the test split
    for path in files.train[0]:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            longer = max(image.size)
            assert longer == 500 or 250 <= longer <= 1000, image.size
    again = photo_folder.write_folder(tmp_path / "again", 3, 8, 4)
    assert [p.read_bytes() for p in sorted(again.rglob("*.JPEG"))] == [
        p.read_bytes() for p in sorted(photos.rglob("*.JPEG"))]
    other_seed = photo_folder.write_folder(tmp_path / "other", 3, 8, 4, seed=1)
    assert [p.read_bytes() for p in sorted(other_seed.rglob("*.JPEG"))] != [
        p.read_bytes() for p in sorted(photos.rglob("*.JPEG"))]
    with pytest.raises(ValueError, match="exists already"):
        photo_folder.write_folder(photos, 3, 8, 4)


def test_one_row_per_loader_and_view_and_the_cores_a_device_needs(photos, tmp_path, capsys):
    args = (f"--dataset=folder:{photos}", f"--cache_dir={tmp_path}", "--image_size=40",
            "--augments=random_resized_crop,scale_jitter", "--eval", "--loaders=tf",
            "--feed=lenet5", "--batch_size=8", "--timed_batches=2", "--untimed_batches=1",
            "--timed_steps=1")
    result = run_in_process(capsys, pipeline_benchmark.main, *args, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = report["pipelines"]
    assert [(r["loader"], r["view"]) for r in rows] == [
        ("tf", "random_resized_crop"), ("tf", "scale_jitter"), ("tf", "eval")]
    for row in rows:
        assert row["images_per_s"] > 0
        assert row["per_core"] == pytest.approx(row["images_per_s"] / report["host_cores"])
    step = report["train_step_images_per_s"]["lenet5"]
    assert step > 0 and report["image_size"] == 40
    assert report["host_cores_per_device"]["lenet5"] == pytest.approx(
        {f"tf {r['view']}": step / r["per_core"] for r in rows})

    table = run_in_process(capsys, pipeline_benchmark.main, *args)
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("| tf |") == 3
    assert "lenet5 train step (float32)" in table.stdout
    assert "host cores one device needs: tf random_resized_crop " in table.stdout


@pytest.mark.parametrize("flag, expected", [
    ("--loaders=tf,gpu", "--loaders: unknown gpu; valid: tf, resident, dali"),
    ("--augments=mixup", "--augments: unknown mixup; valid: none, cifar"),
    ("--dataset=imagenet2013", "unknown dataset 'imagenet2013'"),
])
def test_bad_choices_end_with_one_line(photos, tmp_path, capsys, flag, expected):
    result = run_in_process(capsys, pipeline_benchmark.main, f"--dataset=folder:{photos}",
                            f"--cache_dir={tmp_path}", flag)
    assert_one_line_error(result, expected)
