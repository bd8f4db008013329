"""EdgeTAM's memory cross-attention: axial RoPE with separate query and key grids.

In EdgeTAM (Zhou et al., "EdgeTAM: On-Device Track Anything Model", CVPR 2025, arXiv 2501.07256)
each memory frame is a set of spatial-perceiver tokens (``perceiver.py``) instead of a full
feature map, so the cross-attention of memory attention rotates the queries over the image grid
(64 x 64 at 1024 px: the reference's ``q_sizes``; here taken from the number of queries, so
that other image sizes work too) and the keys over the perceiver's latent grid (``k_sizes``,
16 x 16), once per memory frame. Reference: ``sam2/modeling/sam/transformer.py::RoPEAttentionv2``
and ``sam2/modeling/position_encoding.py::apply_rotary_enc_v2`` of EdgeTAM's code (PyPI
``edgetam-dimos`` 1.0.1), configured by ``sam2/configs/edgetam.yaml``
(``memory_attention.layer.cross_attention``); its settings are the defaults here. 2-D axial RoPE:
arXiv 2104.09864. State-dict keys ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` as the
reference's.

Key layout (``sam2_base.py::_prepare_memory_conditioned_features``): ``rope_k_repeat`` memory
frames, each ``P`` tokens without RoPE (the perceiver's global latents, ``P = 256`` in EdgeTAM)
followed by the ``k_sizes`` grid of rotated tokens (its window latents), then
``num_k_exclude_rope`` object-pointer tokens without RoPE.

``memory_kv`` / ``position_k`` / ``forward_bank`` are ``RoPEAttention``'s cached-path contract
(``MemoryAttention.forward_bank`` with a ``MemoryKVCache``): each memory frame's keys are rotated
by the per-frame rule on their own (the first ``L - k_side**2`` keys plain, the grid rotated), and
as the rotation and ``k_proj`` without its bias are linear, ``rule(k_proj.weight @ m) +
rule(k_proj(pos))`` equals ``rule(k_proj(m + pos))`` of ``forward`` (bias counted once, in the
position part) up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import Attention
from .memory_attention import apply_rope, attend_groups, axial_rope_table


class RoPEAttentionV2(Attention):
    """Attention with axial RoPE on queries over a ``q_sizes`` grid and on per-frame key grids.

    Args:
        embedding_dim: query / output width (256).
        num_heads: attention heads (1).
        downsample_rate: internal width ``embedding_dim // downsample_rate``.
        kv_in_dim: key / value input width (64, the memory width).
        rope_theta: RoPE frequency base.
        k_sizes: ``(width, height)`` of each memory frame's rotated key grid; square (16, 16).
        tokens_per_frame: keys per memory frame (512 in EdgeTAM: 256 global latents, then the
            16 x 16 grid); gives the number of frames when ``rope_k_repeat`` is not given.

    Raises:
        ValueError: a grid that is not square (the shared ``axial_rope_table`` builds square
            grids; EdgeTAM's are).
    """

    def __init__(
        self,
        embedding_dim: int = 256,
        num_heads: int = 1,
        downsample_rate: int = 1,
        kv_in_dim: int | None = 64,
        rope_theta: float = 10000.0,
        k_sizes: tuple[int, int] = (16, 16),
        tokens_per_frame: int = 512,
    ) -> None:
        super().__init__(embedding_dim, num_heads, downsample_rate, kv_in_dim=kv_in_dim)
        if k_sizes[0] != k_sizes[1]:
            raise ValueError(f"k_sizes must be a square grid, got {tuple(k_sizes)}")
        self.theta = rope_theta
        self.k_side = k_sizes[0]
        self.tokens_per_frame = int(tokens_per_frame)
        self._tables: dict[tuple[int, torch.device], torch.Tensor] = {}

    def _table(self, side: int, device: torch.device) -> torch.Tensor:
        """Rotations of a ``side x side`` grid (complex64, ``(side**2, head_dim / 2)``), cached per device
        (plain attributes, not buffers: no state-dict keys, untouched by ``.to(dtype)``)."""
        key = (side, device)
        if key not in self._tables:
            self._tables[key] = axial_rope_table(self.internal_dim // self.num_heads, side, self.theta).to(device)
        return self._tables[key]

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        num_k_exclude_rope: int = 0,
        attn_mask: torch.Tensor | None = None,
        rope_k_repeat: int | None = None,
    ) -> torch.Tensor:
        """Cross-attention of image tokens to memory tokens.

        Args:
            q: ``(B, Nq, embedding_dim)`` queries, a square grid of tokens in row-major order.
            k: ``(B, Nk, kv_in_dim)`` keys (memory plus its position encoding), v: same shape values.
                The first ``Nk - num_k_exclude_rope`` keys are ``rope_k_repeat`` frames of equal
                length ``L >= k_side**2``: per frame, ``L - k_side**2`` keys without RoPE, then the
                ``k_side x k_side`` grid (rotated); the last ``num_k_exclude_rope`` keys (object
                pointers) are not rotated.
            num_k_exclude_rope: trailing keys without RoPE.
            attn_mask: optional ``(B, 1, 1, Nk)`` bool, True = attend (objects batched with
                memory banks of different sizes, as ``MemoryAttention.forward`` takes it).
            rope_k_repeat: number of memory frames (the reference's argument); None: the keys
                to rotate divided by ``tokens_per_frame``.

        Returns:
            ``(B, Nq, embedding_dim)`` in ``v``'s dtype (rotations computed in float32, as the
            reference's).

        Raises:
            ValueError: ``Nq`` is not a square number of queries, or the keys to rotate do not
                split into ``rope_k_repeat`` frames of at least one key grid each.
        """
        table = self._q_table(q.shape[1], q.device)
        q, k, v = self.heads(self.q_proj(q)), self.heads(self.k_proj(k)), self.heads(self.v_proj(v))
        q = apply_rope(q, table).type_as(v)
        n_rope = k.shape[-2] - num_k_exclude_rope
        if n_rope > 0:
            frames = n_rope // self.tokens_per_frame if rope_k_repeat is None else rope_k_repeat
            k = torch.cat([self._rotate_frames(k[:, :, :n_rope], frames), k[:, :, n_rope:]], dim=2)
        return self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask))

    def _q_table(self, n: int, device: torch.device) -> torch.Tensor:
        """Rotations of ``n`` queries, a square grid in row-major order."""
        q_side = int(round(n**0.5))
        if q_side * q_side != n:
            raise ValueError(f"expected a square grid of queries, got {n}")
        return self._table(q_side, device)

    def memory_kv(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cacheable parts of one memory frame ``tokens (L, kv_in_dim)`` (``L - k_side**2`` plain
        tokens, then the key grid in row-major order): ``(rule(k_proj.weight @ tokens) (heads, L, d)
        float32, v_proj(tokens) (heads, L, d))``, ``rule`` rotating the grid keys only (no bias:
        ``position_k`` carries it).

        Raises:
            ValueError: fewer than ``k_side**2`` tokens.
        """
        k = self.heads(F.linear(tokens[None], self.k_proj.weight)).float()
        return self._rotate_frames(k, 1)[0], self.heads(self.v_proj(tokens[None]))[0]

    def position_k(self, pos: torch.Tensor) -> torch.Tensor:
        """Key part of one memory frame's position encoding ``pos (L, kv_in_dim)``:
        ``rule(k_proj(pos))`` ``(heads, L, d)`` float32 (bias included), ``rule`` as in ``memory_kv``."""
        return self._rotate_frames(self.heads(self.k_proj(pos[None])).float(), 1)[0]

    def forward_bank(self, q: torch.Tensor, groups: list[tuple[list[int], torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Cross-attention of ``q (B, Nq, embedding_dim)`` (a square grid, rotated here) to
        already projected and rotated keys / values, per group of objects with equal key counts
        ``M``: ``(batch rows, k (G, heads, M, d), v (G, heads, M, d))`` (``RoPEAttention.
        forward_bank``'s contract). One ``scaled_dot_product_attention`` call per group.

        Raises:
            ValueError: ``Nq`` is not a square number.
        """
        table = self._q_table(q.shape[1], q.device)
        q = apply_rope(self.heads(self.q_proj(q)), table).type_as(groups[0][2])
        return self.merge(attend_groups(q, groups))

    def _rotate_frames(self, k: torch.Tensor, frames: int) -> torch.Tensor:
        """Rotate the grid part of each of ``frames`` equal frames of ``k (B, heads, N, d)``."""
        grid = self.k_side**2
        n = k.shape[-2]
        if frames < 1 or n % frames or n // frames < grid:
            raise ValueError(
                f"{n} keys to rotate do not split into rope_k_repeat={frames} frames of at least {grid} keys"
            )
        per_frame = k.unflatten(2, (frames, n // frames))  # (B, heads, frames, P + grid, d)
        plain, rotated = per_frame[:, :, :, :-grid], per_frame[:, :, :, -grid:]
        rotated = apply_rope(rotated.flatten(2, 3), self._table(self.k_side, k.device)).type_as(k)
        return torch.cat([plain, rotated.unflatten(2, (frames, grid))], dim=3).flatten(2, 3)
