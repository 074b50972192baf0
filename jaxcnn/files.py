"""Files that readers see whole or not at all: a run's and a sweep's records and figures, which
another process may read (or rewrite) at any moment and a full disk must not leave cut off."""
from __future__ import annotations

import os
import tempfile


def write_atomically(path: str, contents: bytes | str) -> None:
    """Writes a file that readers see whole or not at all (a temporary file, then a rename): a
    failed write (a full disk, a missing permission) leaves the file as it was, removes the
    temporary one, and raises an OSError that names `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)   # its error names the directory
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(contents.encode() if isinstance(contents, str) else contents)
        os.chmod(tmp, 0o644)   # mkstemp's 0600 would hide results from the rest of the lab
        os.replace(tmp, path)
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, OSError) and e.errno:   # the write's own error names no file
            raise OSError(e.errno, e.strerror, path) from e
        raise
