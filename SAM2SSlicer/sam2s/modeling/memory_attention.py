"""Memory attention: conditions the current frame's features on the memory bank.

Four layers of (RoPE self-attention, RoPE cross-attention to memories and object pointers,
MLP), pre-norm, as in the reference ``sam2/modeling/memory_attention.py`` and
``sam/transformer.py::RoPEAttention`` (SAM 2, arXiv 2408.00714; 2-D axial RoPE, arXiv 2104.09864).
State-dict keys ``memory_attention.*``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import Attention


def axial_rope_angles(dim: int, side: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cos / sin tables of 2-D axial rotary encoding for a ``side x side`` token grid.

    Tokens are in row-major order (index = y * side + x). Feature pairs ``(2i, 2i+1)`` for
    ``i < dim/4`` rotate by ``x * f_i``, the next ``dim/4`` pairs by ``y * f_i`` with
    ``f_i = theta ** (-4 i / dim)`` (reference ``position_encoding.py::compute_axial_cis``).

    Returns:
        ``(cos, sin)``, each ``(side * side, dim / 2)`` float32.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(side * side, dtype=torch.float32)
    angles = torch.cat(
        [torch.outer(t % side, freqs), torch.outer(torch.div(t, side, rounding_mode="floor"), freqs)], -1
    )
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate feature pairs of ``x (B, heads, N, D)`` by angles ``(N, D/2)`` (N a multiple of the
    table length: the table repeats, one copy per memory frame)."""
    b, h, n, d = x.shape
    reps = n // cos.shape[0]
    x = x.float().reshape(b, h, reps, cos.shape[0], d // 2, 2)
    x0, x1 = x[..., 0], x[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return out.reshape(b, h, n, d)


class RoPEAttention(Attention):
    """Attention with axial RoPE on queries and on the first ``N - num_k_exclude_rope`` keys."""

    def __init__(self, dim: int = 256, num_heads: int = 1, kv_in_dim: int | None = None, theta: float = 10000.0):
        super().__init__(dim, num_heads, kv_in_dim=kv_in_dim)
        self.theta = theta
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _angles(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (n, device)
        if key not in self._tables:
            side = int(round(n**0.5))
            cos, sin = axial_rope_angles(self.internal_dim // self.num_heads, side, self.theta)
            self._tables[key] = (cos.to(device), sin.to(device))
        return self._tables[key]

    def forward(self, q, k, v, num_k_exclude_rope: int = 0, attn_mask: torch.Tensor | None = None):
        q, k, v = self.heads(self.q_proj(q)), self.heads(self.k_proj(k)), self.heads(self.v_proj(v))
        cos, sin = self._angles(q.shape[-2], q.device)
        q = apply_rope(q, cos, sin).type_as(v)
        n_rope = k.shape[-2] - num_k_exclude_rope
        if n_rope > 0:
            k = torch.cat([apply_rope(k[:, :, :n_rope], cos, sin).type_as(v), k[:, :, n_rope:]], dim=2)
        return self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask))


class MemoryAttentionLayer(nn.Module):
    """Pre-norm layer: RoPE self-attention, RoPE cross-attention (keys get their position
    encoding added, queries do not), ReLU MLP of width 2048."""

    def __init__(self, d_model: int = 256, mem_dim: int = 64, dim_feedforward: int = 2048) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(d_model)
        self.cross_attn_image = RoPEAttention(d_model, kv_in_dim=mem_dim)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, x, memory, memory_pos, num_k_exclude_rope, attn_mask):
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h)
        h = self.norm2(x)
        x = x + self.cross_attn_image(h, memory + memory_pos, memory, num_k_exclude_rope, attn_mask)
        return x + self.linear2(F.relu(self.linear1(self.norm3(x))))


class MemoryAttention(nn.Module):
    """Stack of ``MemoryAttentionLayer`` plus a final layer norm."""

    def __init__(self, d_model: int = 256, mem_dim: int = 64, num_layers: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MemoryAttentionLayer(d_model, mem_dim) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        curr: torch.Tensor,
        curr_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_obj_ptr_tokens: int = 0,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Condition current-frame tokens on memory tokens.

        Args:
            curr: ``(B, HW, d_model)`` current-frame features (row-major tokens), curr_pos the
                same shape sine position encoding.
            memory: ``(B, M, mem_dim)`` memory tokens: spatial memories first (a multiple of HW,
                rotated with RoPE), then ``num_obj_ptr_tokens`` object-pointer tokens (no RoPE).
                Any dtype (bf16 storage is upcast to ``curr``'s dtype, exactly).
            memory_pos: same shape as ``memory``.
            attn_mask: optional ``(B, 1, 1, M)`` bool, True = attend (used to batch objects
                whose memory banks differ in size).

        Returns:
            ``(B, HW, d_model)``.
        """
        memory = memory.to(curr.dtype)
        memory_pos = memory_pos.to(curr.dtype)
        x = curr + 0.1 * curr_pos
        for layer in self.layers:
            x = layer(x, memory, memory_pos, num_obj_ptr_tokens, attn_mask)
        return self.norm(x)
