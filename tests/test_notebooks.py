"""The notebooks: committed with their outputs, and each runs from top to bottom in a fresh kernel
(on a copy, so that the committed ones keep their outputs) with scripts/run_notebooks.py."""
import glob
import importlib.util
import os

import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))
_spec = importlib.util.spec_from_file_location(
    "run_notebooks", os.path.join(REPO, "scripts", "run_notebooks.py"))
run_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_notebooks)


def code_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def images(cells) -> int:
    return sum("image/png" in o.get("data", {}) for c in cells for o in c.outputs)


def test_the_three_notebooks():
    assert [os.path.basename(p) for p in NOTEBOOKS] == [
        "01_models.ipynb", "02_train_and_inspect.ipynb", "03_ablation_results.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_committed_with_the_outputs_of_one_run_in_order(path):
    cells = code_cells(path)
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    assert not [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert images(cells) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_runs_from_top_to_bottom(path, tmp_path, monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)   # one CPU device, as the notebooks were run
    monkeypatch.setenv("TMPDIR", str(tmp_path))      # the notebooks' temporary workdirs go too
    out = str(tmp_path / os.path.basename(path))
    run_notebooks.execute(path, out)                  # a failing cell raises
    cells = code_cells(out)
    assert all(c.execution_count for c in cells) and images(cells) == images(code_cells(path))
