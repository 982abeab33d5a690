"""How activation tensors are laid out in the buffers and in memory — the compiler's and the
runtime's shared contract (``rtl/isa.py`` states it for the hardware).

An *entry* holds ``C`` channels of one pixel, a byte each (two's complement); a tensor of
``Ch`` channels is ``ceil(Ch / C)`` channel blocks of ``H × W`` entries, block-major
(entry ``(cb·H + y)·W + x``).  In memory an entry wider than the bus takes consecutive
words, least significant first.  A 16-bit tensor (the logits) puts channel ``ch`` in bytes
``2ch`` and ``2ch + 1``.  The host lays a first layer's input out as im2col columns when the
compiler chose that (:func:`im2col_input`).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from rmsmp.rtl.dma import words_per_entry

__all__ = ["pack_activations", "pack_activation_words", "unpack_activations", "im2col_input", "network_input"]


def _activation_bytes(x, C: int) -> np.ndarray:
    """Integer tensor [Ch, H, W] → uint8 [entries, C] in buffer order (two's complement bytes)."""
    x = torch.as_tensor(x)
    Ch, H, W = x.shape
    cb = math.ceil(Ch / C)
    xp = torch.zeros(cb * C, H, W, dtype=torch.int64)
    xp[:Ch] = x.to(torch.int64)
    return (xp.reshape(cb, C, H, W).permute(0, 2, 3, 1).reshape(-1, C) & 0xFF).to(torch.uint8).numpy()


def pack_activations(x, C: int) -> list[int]:
    """Integer tensor [Ch, H, W] → activation entries (``C`` channels an entry, bytes two's complement)."""
    b = _activation_bytes(x, C)
    if C in (1, 2, 4, 8):
        return b.copy().view(f"<u{C}").reshape(-1).tolist()
    return [int.from_bytes(row.tobytes(), "little") for row in b]


def pack_activation_words(x, C: int, bus: int) -> list[int]:
    """Integer tensor [Ch, H, W] → bus words of its entries (each entry least significant word first)."""
    b = _activation_bytes(x, C)
    if (8 * C) % bus == 0 and bus in (8, 16, 32, 64):
        return b.reshape(-1).copy().view(f"<u{bus // 8}").tolist()
    n, mask = words_per_entry(8 * C, bus), (1 << bus) - 1
    return [(e >> (bus * i)) & mask for e in pack_activations(x, C) for i in range(n)]


def im2col_input(x, kernel: int, stride: int, padding: int, pad_after: int | None = None) -> torch.Tensor:
    """Integer image [Ch, H, W] → [Ch·k·k, OH, OW]: channel ``(c·k + ky)·k + kx`` of output
    pixel (oy, ox) is input pixel ``(oy·s + ky − p, ox·s + kx − p)`` of channel ``c`` (0 in
    the padding; ``pad_after`` rows/columns of it after the image, default ``padding``) — the
    first layer's im2col, done by the host so a 3-channel 7×7 conv fills the array's columns
    as a 1×1 conv over 147 channels."""
    x = torch.as_tensor(x)
    Ch, H, W = x.shape
    p1 = padding if pad_after is None else pad_after
    xp = torch.nn.functional.pad(x.to(torch.float64)[None], (padding, p1, padding, p1))
    cols = torch.nn.functional.unfold(xp, kernel, stride=stride)[0]
    OH, OW = (H + padding + p1 - kernel) // stride + 1, (W + padding + p1 - kernel) // stride + 1
    return cols.reshape(Ch * kernel * kernel, OH, OW).round().to(torch.int64)


def unpack_activations(words, channels: int, H: int, W: int, C: int, signed: bool, wide: bool = False):
    """Activation words → nested list [channels][H][W] of ints (``wide``: 16-bit values
    in byte pairs 2ch, 2ch+1)."""
    nb, top = (2, 1 << 16) if wide else (1, 1 << 8)
    out = [[[0] * W for _ in range(H)] for _ in range(channels)]
    for c in range(channels):
        b, lane = divmod(nb * c, C)
        for y in range(H):
            for xx in range(W):
                v = (words[(b * H + y) * W + xx] >> (8 * lane)) & (top - 1)
                out[c][y][xx] = v - top if signed and v >= top // 2 else v
    return out


def network_input(x, io) -> torch.Tensor:
    """One quantized image [C, H, W] laid out as a network program's input tensor (the first
    layer's im2col columns when ``io.im2col`` names that transform)."""
    return im2col_input(x, *io.im2col) if io.im2col else x
