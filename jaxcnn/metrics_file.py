"""The metrics.jsonl file of a run: one JSON row per logged step and split, appended whole or not
at all, read back in step order. No JAX here: reading a sweep's results needs only this, numpy
and scipy."""
from __future__ import annotations

import json
import os

from absl import logging


def append_row(path: str, row: dict) -> None:
    """Appends one JSON line to `path` whole or not at all: a write that fails part-way (a full
    disk, a quota, a file-size limit) is cut back off, so the rows before it stay as they were and
    a resumed run appends after them. The OSError names the file."""
    line = (json.dumps(row) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            written = 0
            while written < len(line):
                written += os.write(fd, line[written:])
        except OSError as e:
            os.ftruncate(fd, size)
            raise OSError(e.errno, e.strerror, path) from e
    finally:
        os.close(fd)


def cut_unfinished_row(path: str) -> None:
    """Cuts off a last line without its newline: the row a writer was writing when it died (or
    when the disk filled up, before `append_row` cut such rows off itself). Called by the writer
    that is about to append, so that its first row does not join that fragment."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return
    if not text or text.endswith(b"\n"):
        return
    keep = text.rfind(b"\n") + 1
    logging.warning("%s: cutting off an unfinished last row (%d bytes) left by an earlier run",
                    path, len(text) - keep)
    os.truncate(path, keep)


def read_metrics(workdir: str) -> list[dict]:
    """The rows of metrics.jsonl in step order. A resumed run logs the steps after its last
    checkpoint a second time: the latest row of each (split, step) is the one kept. A last line
    without its newline is a row still being written by a running run, and is left out."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    rows = {}
    with open(path) as f:
        for line in filter(str.strip, f.read().split("\n")[:-1]):
            row = json.loads(line)
            rows[row["split"], row["step"]] = row
    return sorted(rows.values(), key=lambda row: row["step"])
