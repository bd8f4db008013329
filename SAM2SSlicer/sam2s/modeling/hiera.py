"""Hiera trunk of the SAM 2 image encoder (Hiera: arXiv 2306.00989).

Weight-compatible with Meta's ``sam2/modeling/backbones/hieradet.py`` (class ``Hiera``) and
``sam2/modeling/backbones/utils.py``: same module names, parameter shapes and arithmetic.
Activations are kept channels-last, ``(B, H, W, C)``, with ``H`` the row (y) axis and ``W`` the
column (x) axis. Windowed blocks attend inside non-overlapping ``window x window`` tiles; the
first block of every stage after the first max-pools its queries ("q-pooling") by
``q_stride``, halving the resolution and doubling the width.

CPU speed: a windowed block is independent per row of windows, so on CPU it runs over bands
of rows (about ``_BAND_ELEMENTS`` MLP activations each); global blocks run their MLP in such
bands. This keeps intermediates small (cache friendly, no page faults on huge fresh
allocations) and gives the same numbers as processing the whole map at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrunkConfig
from .common import MLP, Linear

_BAND_ELEMENTS = 1 << 22  # MLP hidden activations per band (16 MB fp32: reused by malloc, no page faults)


def max_pool_hw(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Max-pool dims 1 and 2 of ``x`` with kernel = stride (``nn.MaxPool2d``, ``ceil_mode=False``).

    Args:
        x: ``(N, H, W, *rest)`` tensor, any strides (views are fine), any dtype.
        stride: ``(sh, sw)``; trailing rows / columns that do not fill a window are dropped.

    Returns:
        ``(N, H // sh, W // sw, *rest)`` contiguous tensor. Max is exact (NaN propagates), so
        this equals the reference ``do_pool`` (``hieradet.py``) bit for bit; an elementwise
        ``maximum`` over the ``sh * sw`` strided sub-grids is much faster on CPU than
        ``MaxPool2d`` or ``amax`` on channels-last data.
    """
    sh, sw = stride
    h, w = x.shape[1:3]
    x = x[:, : h // sh * sh, : w // sw * sw].unflatten(1, (h // sh, sh)).unflatten(3, (w // sw, sw))
    out = x[:, :, 0, :, 0]
    for i in range(sh):
        for j in range(sw):
            if i or j:
                out = torch.maximum(out, x[:, :, i, :, j])
    return out.contiguous()


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """Split ``(B, H, W, C)`` into ``(B * nH * nW, window, window, C)`` tiles, row-major.

    ``H`` and ``W`` are zero-padded at the bottom / right up to multiples of ``window`` first
    (reference ``window_partition`` in ``backbones/utils.py``); ``nH, nW`` are the padded
    sizes divided by ``window``.
    """
    b, h, w, c = x.shape
    pad_h, pad_w = -h % window, -w % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    nh, nw = (h + pad_h) // window, (w + pad_w) // window
    x = x.view(b, nh, window, nw, window, c).transpose(2, 3)
    return x.reshape(b * nh * nw, window, window, c)


def window_unpartition_add(windows: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """Return ``shortcut + window_unpartition(windows)`` (reference ``backbones/utils.py``).

    Args:
        windows: ``(B * nH * nW, win, win, C)`` tiles of the zero-padded map, row-major.
        shortcut: ``(B, H, W, C)``; fixes the un-padded output size.

    Returns:
        ``(B, H, W, C)``. Without padding the un-partition is a strided view fused into the add.
    """
    b, h, w, c = shortcut.shape
    win = windows.shape[1]
    hp, wp = h + (-h % win), w + (-w % win)
    tiles = windows.view(b, hp // win, wp // win, win, win, c).transpose(2, 3)
    if (hp, wp) == (h, w):
        return (shortcut.view(b, hp // win, win, wp // win, win, c) + tiles).reshape(b, h, w, c)
    return shortcut + tiles.reshape(b, hp, wp, c)[:, :h, :w]


def _cat_rows(bands: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate ``(B, h_i, W, C)`` bands along the rows (no copy for a single band)."""
    return bands[0] if len(bands) == 1 else torch.cat(bands, dim=1)


class PatchEmbed(nn.Module):
    """Patch embedding: ``Conv2d(3, C, 7, stride 4, padding 3)`` (reference ``utils.py``).

    Maps a ``(B, 3, H, W)`` float image to contiguous channels-last ``(B, H/4, W/4, C)``.
    """

    def __init__(self, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A channels-last input makes the convolution much faster on CPU and its output is
        # then already (B, H, W, C) in memory.
        x = self.proj(x.contiguous(memory_format=torch.channels_last))
        return x.permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention with optional query max-pooling (reference ``hieradet.py``).

    Input ``(N, H, W, dim)`` (N = batch x windows), output ``(N, H', W', dim_out)`` where
    ``(H', W') = (H, W) // q_stride`` when ``q_stride`` is set, else ``(H, W)``. Keys and
    values are never pooled. The head split is ``channel = head * head_dim + d``.
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = Linear(dim, dim_out * 3)
        self.proj = Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, _ = x.shape
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, -1))  # (N, H, W, 3, heads, hd)
        q, k, v = qkv.unbind(3)
        if self.q_stride:
            q = max_pool_hw(q, self.q_stride)
            h, w = q.shape[1:3]
        # (N, heads, tokens, hd) strided views; SDPA reads them without copies.
        q, k, v = (t.flatten(1, 2).transpose(1, 2) for t in (q, k, v))
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(n, h, w, -1))


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block of Hiera (reference ``MultiScaleBlock``, ``hieradet.py``).

    ``x = shortcut + attn(norm1(x))`` (windowed when ``window_size > 0``), then
    ``x = x + mlp(norm2(x))``. When ``dim != dim_out`` the shortcut is ``proj(norm1(x))``,
    max-pooled by ``q_stride``. Input ``(B, H, W, dim)``, output ``(B, H', W', dim_out)``.
    LayerNorm eps is 1e-6; drop-path (training only, rate 0 in all configs) is omitted.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        q_stride: tuple[int, int] | None = None,
        window_size: int = 0,
    ) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, 2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = Linear(dim, dim_out)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        xn = self.norm1(x)
        shortcut = x
        if self.dim != self.dim_out:
            shortcut = self.proj(xn)
            if self.q_stride:
                shortcut = max_pool_hw(shortcut, self.q_stride)
        if self.window_size == 0:
            return shortcut + self.attn(xn)
        # Padding tokens are zeros *after* norm1 and take part in attention, as in the reference.
        return window_unpartition_add(self.attn(window_partition(xn, self.window_size)), shortcut)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm2(x))

    def _band_rows(self, x: torch.Tensor, unit: int) -> int:
        """Rows of ``x`` per band: a multiple of ``unit`` whose MLP hidden activations hold
        about ``_BAND_ELEMENTS`` values."""
        b, h, w = x.shape[:3]
        if x.device.type != "cpu":  # GPUs prefer few large kernels
            return h
        per_row = b * w * self.mlp.layers[0].out_features
        if self.q_stride and self.window_size:  # x is the block input, pooled inside the band
            per_row //= self.q_stride[0] * self.q_stride[1]
        return unit * max(1, _BAND_ELEMENTS // (per_row * unit))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.window_size == 0:
            x = self._attention(x)
            return _cat_rows([self._mlp(t) for t in x.split(self._band_rows(x, 1), dim=1)])
        # Bands must hold whole windows (and whole pooling cells inside them).
        unit = self.window_size
        if self.q_stride and unit % self.q_stride[0]:
            unit = x.shape[1]
        bands = x.split(self._band_rows(x, unit), dim=1)
        return _cat_rows([self._mlp(self._attention(t)) for t in bands])


class Hiera(nn.Module):
    """Hierarchical vision transformer trunk of SAM 2 (arXiv 2306.00989; ``hieradet.py``).

    Built from a :class:`~sam2s.config.TrunkConfig`. Positional embedding is the "window
    pos embed" of arXiv 2311.05613: a background embedding ``pos_embed`` of shape
    ``(1, C, *window_pos_embed_bkg_spatial_size)``, bicubically resized to the patch grid,
    plus ``pos_embed_window`` ``(1, C, w0, w0)`` tiled over it (``w0 = window_spec[0]``).

    Forward: ``(B, 3, H, W)`` float image (``H, W`` multiples of ``4 * window_spec[0]``, i.e.
    32; SAM uses ``H = W = S``) -> list of one feature map per stage, finest first, each
    ``(B, C_i, H/4/2^i, W/4/2^i)`` (a permuted view of channels-last memory). ``channel_list``
    lists ``C_i`` coarsest first, as the reference does.
    """

    def __init__(self, cfg: TrunkConfig) -> None:
        super().__init__()
        assert len(cfg.stages) == len(cfg.window_spec)
        self.window_spec = tuple(cfg.window_spec)
        self.stage_ends = [sum(cfg.stages[: i + 1]) - 1 for i in range(len(cfg.stages))]
        assert 0 <= cfg.q_pool <= len(self.stage_ends) - 1
        q_pool_blocks = [end + 1 for end in self.stage_ends[:-1]][: cfg.q_pool]

        dim, heads = cfg.embed_dim, cfg.num_heads
        self.patch_embed = PatchEmbed(dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, *cfg.window_pos_embed_bkg_spatial_size))
        w0 = self.window_spec[0]
        self.pos_embed_window = nn.Parameter(torch.zeros(1, dim, w0, w0))
        self._pos_cache: tuple[tuple, torch.Tensor] | None = None

        self.blocks = nn.ModuleList()
        stage = 0
        for i in range(sum(cfg.stages)):
            # The window size lags by one block: a stage's first block (which q-pools) still
            # uses the previous stage's window.
            window = 0 if i in cfg.global_att_blocks else self.window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out, heads, stage = int(dim * cfg.dim_mul), int(heads * cfg.head_mul), stage + 1
            q_stride = tuple(cfg.q_stride) if i in q_pool_blocks else None
            self.blocks.append(MultiScaleBlock(dim, dim_out, heads, q_stride=q_stride, window_size=window))
            dim = dim_out
        self.channel_list = [self.blocks[i].dim_out for i in reversed(self.stage_ends)]

    def _get_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """Positional embedding ``(1, h, w, C)`` (a permuted view) for an ``h x w`` patch grid.

        Cached per grid size while ``pos_embed`` and ``pos_embed_window`` are unchanged (same
        storage, version, dtype and device): the bicubic resize costs ~10 ms per frame at 512 px."""
        key = (h, w) + tuple(
            (p.data_ptr(), p._version, p.dtype, p.device) for p in (self.pos_embed, self.pos_embed_window)
        )
        if torch.is_grad_enabled() and self.pos_embed.requires_grad:  # training: keep the graph
            return self._compute_pos_embed(h, w)
        if self._pos_cache is None or self._pos_cache[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # a normal tensor: also serves autograd code
                self._pos_cache = (key, self._compute_pos_embed(h, w))
        return self._pos_cache[1]

    def _compute_pos_embed(self, h: int, w: int) -> torch.Tensor:
        # Resized in float32 (no-op for a float32 model), added in the model's dtype.
        pos = F.interpolate(self.pos_embed.float(), size=(h, w), mode="bicubic").to(self.pos_embed.dtype)
        win = self.pos_embed_window
        c, wh, ww = win.shape[1:]
        # Broadcasting over the tiles equals the reference's ``tile`` bit for bit.
        pos = pos.view(1, c, h // wh, wh, w // ww, ww) + win.view(1, c, 1, wh, 1, ww)
        return pos.view(1, c, h, w).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        unit = 4 * self.window_spec[0]
        if h % unit or w % unit:
            raise ValueError(f"Hiera input height and width must be multiples of {unit}; got {h}x{w}.")
        x = self.patch_embed(x)
        x = x + self._get_pos_embed(*x.shape[1:3])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs


__all__ = ["Hiera", "MultiScaleAttention", "MultiScaleBlock", "PatchEmbed", "max_pool_hw", "window_partition"]
