"""Executes the notebooks and saves them with their outputs: `python scripts/run_notebooks.py`
re-executes every `notebooks/*.ipynb` in place; `--out=DIR` writes the executed copies to DIR
instead, leaving the committed ones as they are (as the tests do). Each notebook runs in a fresh
kernel with the repository on its path and its own folder as the working directory. The time each
took is printed, with the CPU time of its kernel (less dependent on what else the machine runs).
A failing cell stops the script with its error; nothing is saved for that notebook.
"""
from __future__ import annotations

import argparse
import glob
import os
import resource
import sys
import time

import nbclient
import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))


def execute(path: str, out: str | None = None, timeout: int = 600) -> tuple[float, float]:
    """Runs the notebook at `path` and writes it, with its outputs, to `out` (default: `path`).
    Returns the seconds it took and the CPU seconds of its kernel."""
    notebook = nbformat.read(path, as_version=4)
    path_entries = filter(None, [REPO, os.environ.get("PYTHONPATH")])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path_entries)}
    start, cpu = time.perf_counter(), _children_cpu()
    # coalesce_streams: one output per stream, a progress bar's redraws (\r) reduced to the last.
    nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            coalesce_streams=True, record_timing=False,
                            extra_arguments=["--log-level=ERROR"],
                            resources={"metadata": {"path": os.path.dirname(path)}}
                            ).execute(env=env)
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
    nbformat.write(notebook, out or path)
    return seconds, cpu


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (the kernels)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("notebooks", nargs="*", default=NOTEBOOKS,
                        help="default: notebooks/*.ipynb")
    parser.add_argument("--out", help="write the executed notebooks to this folder instead")
    args = parser.parse_args()
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    for path in args.notebooks:
        out = os.path.join(args.out, os.path.basename(path)) if args.out else path
        try:
            seconds, cpu = execute(path, out)
        except nbclient.exceptions.CellExecutionError as e:
            sys.exit(f"error: {path}: {str(e).strip().splitlines()[-1]}")
        print(f"{os.path.relpath(path, REPO)}: {seconds:.1f} s (kernel CPU {cpu:.1f} s) -> "
              f"{os.path.relpath(out)}")


if __name__ == "__main__":
    main()
