"""Sine position encoding of feature maps ("Attention Is All You Need", arXiv 1706.03762,
generalised to 2-D as in DETR, arXiv 2005.12872).

Equals Meta's ``sam2/modeling/position_encoding.py::PositionEmbeddingSine`` with
``normalize=True, scale=None`` (i.e. scale ``2 * pi``). It has no parameters or buffers, so
it is a plain function here.
"""

from __future__ import annotations

import functools
import math

import torch


def _encode_1d(coords: torch.Tensor, num_feats: int, temperature: float) -> torch.Tensor:
    """``(n,)`` positions -> ``(n, num_feats)``: ``sin`` on even, ``cos`` on odd channels."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    pos = coords[:, None] / dim_t
    return torch.stack((pos[:, 0::2].sin(), pos[:, 1::2].cos()), dim=2).flatten(1)


def sine_position_encoding(
    batch: int,
    height: int,
    width: int,
    num_pos_feats: int,
    temperature: float = 10000,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Normalised 2-D sine position encoding of a ``height x width`` grid.

    Row ``i`` (y, 0-based from the top) has coordinate ``(i + 1) / (height + 1e-6) * 2 pi``,
    column ``j`` (x) likewise with ``width``. Channels ``[0, F/2)`` encode y and ``[F/2, F)``
    encode x (``F = num_pos_feats``); within each half, channel ``2k`` is
    ``sin(coord / T ** (2k / (F/2)))`` and ``2k + 1`` the matching ``cos`` (``T`` the temperature).

    Args:
        batch: batch size B (the result is broadcast over it, without copies).
        height, width: grid size H, W.
        num_pos_feats: F, even (256 for the image-encoder neck, 64 for the memory encoder).
        temperature: frequency base T.
        device: where to build it.
        dtype: output dtype; the computation is done in float32 and then cast.

    Returns:
        ``(B, F, H, W)`` tensor, identical to ``PositionEmbeddingSine(F)(x)`` for a
        ``(B, *, H, W)`` input ``x``. It is an ``expand``-ed view over the batch of a grid
        that is computed once per (size, dtype, device) and then cached (16 grids at most; the
        tracker asks for the same few grids on every frame): do not write into it in place.
    """
    if num_pos_feats % 2:
        raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
    dev = torch.device("cpu") if device is None else torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    grid = _grid(height, width, num_pos_feats, float(temperature), dev, dtype)
    return grid.expand(batch, num_pos_feats, height, width)


@functools.lru_cache(maxsize=16)
def _grid(
    height: int, width: int, num_pos_feats: int, temperature: float, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """The ``(1, F, H, W)`` grid of ``sine_position_encoding`` (a normal tensor, not an
    inference tensor, so that cached grids also serve code that runs with autograd)."""
    with torch.inference_mode(False), torch.no_grad():
        return _compute_grid(height, width, num_pos_feats // 2, temperature, device).to(dtype)[None].contiguous()


def _compute_grid(height: int, width: int, half: int, temperature: float, device: torch.device) -> torch.Tensor:
    """``(2 * half, H, W)`` float32: y encoding in the first ``half`` channels, x in the rest."""
    eps, scale = 1e-6, 2 * math.pi

    def normalised(n: int) -> torch.Tensor:
        c = torch.arange(1, n + 1, dtype=torch.float32, device=device)
        return c / (c[-1:] + eps) * scale

    pos_y = _encode_1d(normalised(height), half, temperature).T  # (F/2, H)
    pos_x = _encode_1d(normalised(width), half, temperature).T  # (F/2, W)
    pos = torch.cat((pos_y[:, :, None].expand(half, height, width), pos_x[:, None, :].expand(half, height, width)))
    return pos


__all__ = ["sine_position_encoding"]
