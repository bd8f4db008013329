"""EdgeTAM's spatial perceiver: compresses each memory frame to a few hundred latent tokens.

EdgeTAM (Zhou et al., "EdgeTAM: On-Device Track Anything Model", CVPR 2025, arXiv 2501.07256)
passes the memory encoder's output through a 2-D spatial perceiver before it enters the memory
bank: ``num_latents`` global (1-D) latents cross-attend to the whole feature map, and
``num_latents_2d`` local (2-D) latents, one per window of a ``g x g`` grid, each to its own
window. Both share the same layers (cross-attention, GELU feed-forward, optional latent
self-attention, all pre-norm, no biases in the projections). Reference:
``sam2/modeling/perceiver.py::PerceiverResampler`` of EdgeTAM's code (PyPI ``edgetam-dimos``
1.0.1), configured by ``sam2/configs/edgetam.yaml`` (``spatial_perceiver``); its defaults are
the defaults here. State-dict keys equal the reference's (``spatial_perceiver.*`` in the
checkpoint). Inference only: dropout is left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .position_encoding import sine_position_encoding


def feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    """Pre-norm GELU MLP ``dim -> dim * mult -> dim`` without biases (keys ``0``, ``1``, ``3``)."""
    return nn.Sequential(
        nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(), nn.Linear(dim * mult, dim, bias=False)
    )


class _LatentAttention(nn.Module):
    """Bias-free multi-head attention: ``to_q``, ``to_kv`` (keys and values stacked), ``to_out``."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        inner = dim_head * heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, N, C) -> (B, heads, N, C / heads)

    def attend(self, queries: torch.Tensor, context: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """``queries (B, Nq, dim)`` attend to ``context (B, Nk, dim)`` (both already normalised);
        ``pos (B, Nk, heads * dim_head)``, if given, is added to the keys and to the values."""
        k, v = self.to_kv(context).chunk(2, dim=-1)
        if pos is not None:
            k, v = k + pos, v + pos
        out = F.scaled_dot_product_attention(self._split(self.to_q(queries)), self._split(k), self._split(v))
        return self.to_out(out.transpose(1, 2).flatten(2))


class PerceiverCrossAttention(_LatentAttention):
    """Latents attend to the features (reference ``PerceiverAttention`` with
    ``concat_kv_latents=False``): ``(latents (B, N, dim), x (B, M, dim), pos (B, M, dim) | None)``
    -> ``(B, N, dim)``."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__(dim, dim_head, heads)
        self.norm_x = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)

    def forward(self, latents: torch.Tensor, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(self.norm_latents(latents), self.norm_x(x), pos)


class LatentSelfAttention(_LatentAttention):
    """Self-attention among the latents (reference ``perceiver.py::Attention``): ``(B, N, dim)``
    -> ``(B, N, dim)``."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__(dim, dim_head, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        h = self.norm(latents)
        return self.attend(h, h)


class PerceiverLayer(nn.Module):
    """Residual cross-attention and feed-forward, then (``use_self_attn``) residual latent
    self-attention and feed-forward (reference ``PerceiverEncoderLayer``)."""

    def __init__(self, dim: int, dim_head: int, heads: int, ff_mult: int, use_self_attn: bool) -> None:
        super().__init__()
        self.attn = PerceiverCrossAttention(dim, dim_head, heads)
        self.ff = feed_forward(dim, ff_mult)
        self.use_self_attn = use_self_attn
        if use_self_attn:
            self.self_attn = LatentSelfAttention(dim, dim_head, heads)
            self.self_ff = feed_forward(dim, ff_mult)

    def forward(self, latents: torch.Tensor, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        latents = latents + self.attn(latents, x, pos)
        latents = latents + self.ff(latents)
        if self.use_self_attn:
            latents = latents + self.self_attn(latents)
            latents = latents + self.self_ff(latents)
        return latents


class PerceiverResampler(nn.Module):
    """EdgeTAM's spatial perceiver (defaults: ``edgetam.yaml``'s ``spatial_perceiver``).

    Parameters ``latents (num_latents, dim)`` and ``latents_2d (num_latents_2d, dim)`` (each
    present only when its count is positive), ``layers.{i}.*`` and the output ``norm``: the
    reference's state-dict keys. ``heads * dim_head`` must equal ``dim`` when a position
    encoding is given (it is added to the projected keys and values). The reference's
    ``pos_enc_at_key_value`` flag has no effect there (a given ``pos`` is always used), so it is
    not a parameter here; neither are the dropouts. Unlike the reference, batches of more than
    one frame work, and non-square maps split into ``(H / g) x (W / g)`` windows.

    Raises:
        ValueError: no latents at all, or ``num_latents_2d`` not a perfect square.
    """

    def __init__(
        self,
        dim: int = 64,
        depth: int = 2,
        dim_head: int = 64,
        heads: int = 1,
        num_latents: int = 256,
        num_latents_2d: int = 256,
        ff_mult: int = 4,
        use_self_attn: bool = True,
    ) -> None:
        super().__init__()
        grid = round(max(num_latents_2d, 0) ** 0.5)
        if num_latents <= 0 and num_latents_2d <= 0:
            raise ValueError("PerceiverResampler needs num_latents > 0 or num_latents_2d > 0")
        if num_latents_2d > 0 and grid * grid != num_latents_2d:
            raise ValueError(f"num_latents_2d must be a perfect square, got {num_latents_2d}")
        self.dim = dim
        self.num_latents = num_latents
        self.num_latents_2d = num_latents_2d
        self.grid = grid
        if num_latents > 0:
            self.latents = nn.Parameter(torch.randn(num_latents, dim))
        if num_latents_2d > 0:
            self.latents_2d = nn.Parameter(torch.randn(num_latents_2d, dim))
        self.layers = nn.ModuleList(PerceiverLayer(dim, dim_head, heads, ff_mult, use_self_attn) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Compress memory features to latent tokens (reference ``PerceiverResampler.forward``).

        Args:
            x: ``(B, dim, H, W)`` memory-encoder features (``(B, 64, 64, 64)`` at 1024 px), any
                float dtype matching the parameters.
            pos: ``(B, dim, H, W)`` their position encoding, or None. It is added to the keys and
                values of the global latents' cross-attention only.

        Returns:
            ``(latents, latent_pos)``: ``latents (B, num_latents + num_latents_2d, dim)``, the
            global latents first, then the window latents in row-major window order (the
            ``g x g`` grid, ``g = sqrt(num_latents_2d)``). ``latent_pos`` is None when ``pos``
            is None; otherwise same shape and dtype: zeros for the global latents, then the sine
            position encoding (``dim`` features) of the ``g x g`` grid (the reference's is float32
            whatever the dtype; equal in float32).

        Raises:
            ValueError: ``H`` or ``W`` not divisible by ``g``.
        """
        out, out_pos = [], []
        if self.num_latents > 0:
            latents = self._forward_1d(x, pos)
            out.append(latents)
            out_pos.append(torch.zeros_like(latents))
        if self.num_latents_2d > 0:
            latents, grid_pos = self._forward_2d(x)
            out.append(latents)
            out_pos.append(grid_pos)
        return torch.cat(out, dim=1), None if pos is None else torch.cat(out_pos, dim=1)

    def _forward_1d(self, x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        """Global latents over all ``H * W`` tokens: ``(B, num_latents, dim)``."""
        latents = self.latents.expand(x.shape[0], -1, -1)
        tokens = x.flatten(2).transpose(1, 2)
        tokens_pos = None if pos is None else pos.flatten(2).transpose(1, 2)
        for layer in self.layers:
            latents = layer(latents, tokens, tokens_pos)
        return self.norm(latents)

    def _forward_2d(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One latent per window of the ``g x g`` grid, attending to that window only (no position
        encoding): ``(B, g * g, dim)`` latents and their ``(B, g * g, dim)`` grid encoding."""
        b, c, h, w = x.shape
        g = self.grid
        if h % g or w % g:
            raise ValueError(f"feature map {h}x{w} does not split into a {g}x{g} grid of windows")
        # (B, C, gy, wy, gx, wx) -> (B * gy * gx, wy * wx, C): windows in row-major order, as the latents
        windows = x.reshape(b, c, g, h // g, g, w // g).permute(0, 2, 4, 3, 5, 1).reshape(b * g * g, -1, c)
        latents = self.latents_2d.expand(b, -1, -1).reshape(b * g * g, 1, c)
        for layer in self.layers:
            latents = layer(latents, windows)
        latents = self.norm(latents.reshape(b, g * g, c))
        grid_pos = sine_position_encoding(b, g, g, self.dim, device=x.device, dtype=latents.dtype)
        return latents, grid_pos.flatten(2).transpose(1, 2)
