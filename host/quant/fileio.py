"""Writing result files safely: the output path checked before long work, and every file
written to a temporary beside it and renamed into place, so a failure leaves nothing half
written (and no temporary) behind."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from ..errors import RmsmpError

__all__ = ["check_writable", "atomic_path"]


def check_writable(path, what: str = "output") -> Path:
    """``path`` as a :class:`Path` if a file can be written there; else a clear error (a
    directory, a missing or read-only parent directory)."""
    p = Path(path)
    if p.is_dir():
        raise RmsmpError(f"{what} {str(path)!r} is a directory: give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise RmsmpError(f"{what} {str(path)!r}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise RmsmpError(f"{what} {str(path)!r}: not writable")
    return p


@contextmanager
def atomic_path(path, what: str = "output"):
    """``with atomic_path(p) as tmp: write(tmp)`` — ``p`` appears complete or not at all."""
    p = check_writable(path, what)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        tmp.replace(p)
    finally:
        if tmp.exists():
            tmp.unlink()
