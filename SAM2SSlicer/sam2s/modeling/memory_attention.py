"""Memory attention: conditions the current frame's features on the memory bank.

Four layers of (RoPE self-attention, RoPE cross-attention to memories and object pointers,
MLP), pre-norm, as in the reference ``sam2/modeling/memory_attention.py`` and
``sam/transformer.py::RoPEAttention`` (SAM 2, arXiv 2408.00714; 2-D axial RoPE, arXiv 2104.09864).
State-dict keys ``memory_attention.*``.

``MemoryAttention.forward_bank`` is the session's path: memory given per object and per frame,
each stored frame's key / value projections cached (``MemoryKVCache``) instead of recomputed on
every tracked frame, objects batched by memory size (no padding, no attention mask).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import Attention, Linear


def axial_rope_table(dim: int, side: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotations of 2-D axial rotary encoding for a ``side x side`` token grid, as unit complex numbers.

    Tokens are in row-major order (index = y * side + x). Feature pairs ``(2i, 2i+1)`` for
    ``i < dim/4`` rotate by ``x * f_i``, the next ``dim/4`` pairs by ``y * f_i`` with
    ``f_i = theta ** (-4 i / dim)`` (reference ``position_encoding.py::compute_axial_cis``).

    Returns:
        ``(side * side, dim / 2)`` complex64 ``exp(i * angle)``.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(side * side, dtype=torch.float32)
    angles = torch.cat(
        [torch.outer(t % side, freqs), torch.outer(torch.div(t, side, rounding_mode="floor"), freqs)], -1
    )
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate feature pairs of ``x (B, heads, N, D)`` by ``table (T, D/2)`` complex (N a multiple
    of T: the table repeats, one copy per memory frame).

    As the reference ``apply_rotary_enc`` (``sam2/modeling/position_encoding.py``): pairs are
    read as complex numbers in float32 and multiplied by the rotations, one fused pass.

    Returns:
        ``(B, heads, N, D)`` float32.
    """
    b, h, n, d = x.shape
    xc = torch.view_as_complex(x.float().reshape(b, h, n // table.shape[0], table.shape[0], d // 2, 2))
    return torch.view_as_real(xc * table).reshape(b, h, n, d)


def attend_groups(q: torch.Tensor, groups: list[tuple[list[int], torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Attention of rotated queries ``q (B, heads, N, d)`` to per-group keys / values
    ``(batch rows, k (G, heads, M, d), v (G, heads, M, d))`` (objects with equal key counts ``M``):
    one ``scaled_dot_product_attention`` call per group, no mask, no padding. Returns
    ``(B, heads, N, dv)`` (the ``forward_bank`` of ``RoPEAttention`` and ``RoPEAttentionV2``)."""
    if len(groups) == 1:
        return F.scaled_dot_product_attention(q, groups[0][1], groups[0][2])
    out = q.new_empty(q.shape[:-1] + (groups[0][2].shape[-1],))
    for idx, k, v in groups:
        out[idx] = F.scaled_dot_product_attention(q[idx], k, v)
    return out


class RoPEAttention(Attention):
    """Attention with axial RoPE on queries and on the first ``N - num_k_exclude_rope`` keys."""

    def __init__(self, dim: int = 256, num_heads: int = 1, kv_in_dim: int | None = None, theta: float = 10000.0):
        super().__init__(dim, num_heads, kv_in_dim=kv_in_dim)
        self.theta = theta
        self._tables: dict[tuple, torch.Tensor] = {}

    def _angles(self, n: int, device: torch.device) -> torch.Tensor:
        key = (n, device)
        if key not in self._tables:
            side = int(round(n**0.5))
            self._tables[key] = axial_rope_table(self.internal_dim // self.num_heads, side, self.theta).to(device)
        return self._tables[key]

    def forward(self, q, k, v, num_k_exclude_rope: int = 0, attn_mask: torch.Tensor | None = None):
        q, k, v = self.heads(self.q_proj(q)), self.heads(self.k_proj(k)), self.heads(self.v_proj(v))
        table = self._angles(q.shape[-2], q.device)
        q = apply_rope(q, table).type_as(v)
        n_rope = k.shape[-2] - num_k_exclude_rope
        if n_rope > 0:
            k = torch.cat([apply_rope(k[:, :, :n_rope], table).type_as(v), k[:, :, n_rope:]], dim=2)
        return self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask))

    def memory_kv(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cacheable parts of one memory frame ``tokens (HW, kv_in_dim)`` (row-major):
        ``(rope(k_proj.weight @ tokens) (heads, HW, d) float32, v_proj(tokens) (heads, HW, d))``."""
        k = self.heads(F.linear(tokens[None], self.k_proj.weight))
        return apply_rope(k, self._angles(tokens.shape[0], tokens.device))[0], self.heads(self.v_proj(tokens[None]))[0]

    def position_k(self, pos: torch.Tensor) -> torch.Tensor:
        """Key part of a memory position encoding ``pos (HW, kv_in_dim)``:
        ``rope(k_proj(pos))`` ``(heads, HW, d)`` float32 (bias included)."""
        return apply_rope(self.heads(self.k_proj(pos[None])), self._angles(pos.shape[0], pos.device))[0]

    def forward_bank(self, q: torch.Tensor, groups: list[tuple[list[int], torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Cross-attention of ``q (B, N, dim)`` (rotated here) to already projected (and rotated)
        keys / values, given per group of objects with equal key counts ``M``:
        ``(batch rows, k (G, heads, M, d), v (G, heads, M, d))``. One
        ``scaled_dot_product_attention`` call per group, with no mask and no padding."""
        q = self.heads(self.q_proj(q))
        q = apply_rope(q, self._angles(q.shape[-2], q.device)).type_as(groups[0][2])
        return self.merge(attend_groups(q, groups))


def memory_tokens(memory: torch.Tensor) -> torch.Tensor:
    """A stored memory frame as tokens ``(B, N, C)`` (a view, no copy): a ``(B, C, h, w)`` spatial
    memory in row-major order (N = h * w), or EdgeTAM's perceiver latents, already ``(B, N, C)``."""
    return memory.flatten(2).transpose(1, 2) if memory.ndim == 4 else memory


class MemoryKVCache:
    """Cross-attention keys / values of stored memory frames, per frame and per layer.

    A memory frame's features ``m`` are fixed once stored, so in every layer its value
    ``v_proj(m)`` and the rotated key part ``rope(k_proj.weight @ m)`` are too; only its position
    encoding changes between tracked frames (the temporal embedding of its slot). As ``k_proj``
    and RoPE are linear, the reference key ``rope(k_proj(m + pos + tpos_slot))`` (facebookresearch/
    sam2 ``sam2/modeling/memory_attention.py``, memory assembled by ``sam2_base.py::
    _prepare_memory_conditioned_features``) is the cached per-frame part plus a per-(layer,
    position) part ``rope(k_proj(pos + tpos_slot))``, cached too: equal up to float rounding
    (the parts are float32 and summed in float32).

    Frame entries are keyed by the identity of the stored memory tensor (``FrameMemory.maskmem``)
    through a weak reference: an entry lives while the session keeps that tensor (the memory bank
    bounds that) and goes when the bank drops it; a re-tracked or corrected frame gets a new
    tensor, hence a new entry. An in-place change of a key tensor (its ``_version``) invalidates
    its entry (inference-mode tensors, as the session's, have no version counter; the session
    never changes a stored memory in place). Position entries are checked against the position
    tensor they were made from; everything is dropped when the weights change
    (``check_weights``). Size: per memory frame and layer two ``(heads, HW, 256 / heads)``
    tensors (float32 key part, value in the compute dtype), ~8 MiB per frame at 512 px and
    ~32 MiB at 1024 px over the 4 layers; EdgeTAM (``(1, 512, 64)`` perceiver tokens per frame,
    2 layers, ``rope_attention_v2.RoPEAttentionV2`` rotating only each frame's latent grid) ~2 MiB
    per frame at any image size in float32; plus one float32 key part per position (slot).
    """

    def __init__(self) -> None:
        self._frames: dict[int, tuple[weakref.ref, int, list]] = {}
        self._pos: dict[Hashable, tuple[torch.Tensor, list]] = {}
        self._weights: tuple = ()

    def check_weights(self, module: nn.Module) -> None:
        """Clear the cache if ``module``'s parameters changed since the entries were made (a new
        dtype or device, ``load_state_dict``, an in-place update)."""
        token = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in module.parameters())
        if token != self._weights:
            self.clear()
            self._weights = token

    def __len__(self) -> int:
        """Number of memory frames with cached entries (live keys only)."""
        return sum(1 for ref, _, _ in self._frames.values() if ref() is not None)

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached tensors."""
        tensors = [t for _, _, layers in self._frames.values() for kv in layers if kv for t in kv]
        tensors += [t for p, layers in self._pos.values() for t in [p, *[c for c in layers if c is not None]]]
        return sum(t.numel() * t.element_size() for t in tensors)

    def clear(self) -> None:
        """Drop every entry."""
        self._frames.clear()
        self._pos.clear()

    def frame_entry(self, key: torch.Tensor, num_layers: int) -> list:
        """Per-layer list (``None`` = not computed yet) of ``(key part, value)`` for a memory tensor."""
        ident, version = id(key), -1 if key.is_inference() else key._version  # inference tensors have none
        hit = self._frames.get(ident)
        if hit is not None and hit[0]() is key and hit[1] == version:
            return hit[2]
        layers: list = [None] * num_layers

        def drop(_ref, ident=ident, frames=self._frames):
            entry = frames.get(ident)
            if entry is not None and entry[0] is _ref:
                del frames[ident]

        self._frames[ident] = (weakref.ref(key, drop), version, layers)
        return layers

    def pos_entry(self, key: Hashable, pos: torch.Tensor, num_layers: int) -> list:
        """Per-layer list (``None`` = not computed yet) of rotated key parts of position ``pos``."""
        hit = self._pos.get(key)
        if hit is not None and hit[0].shape == pos.shape and torch.equal(hit[0], pos):
            return hit[1]
        layers: list = [None] * num_layers
        self._pos[key] = (pos.clone(), layers)
        return layers


@dataclass
class ObjectMemory:
    """The memory one object attends to on one frame (input of ``MemoryAttention.forward_bank``).

    spatial: ``(features, position key)`` per memory frame, in attention order: ``features`` the
        stored memory tensor, a ``(1, mem_dim, f, f)`` map (SAM 2) or ``(1, L, mem_dim)`` tokens
        (EdgeTAM's perceiver latents), any dtype (also the cache key, so pass the tensor the
        session stores, not a copy), ``position key`` a key of ``positions`` (its slot).
    pointers: ``(P, mem_dim)`` object-pointer tokens (not rotated, not cached);
    pointer_pos: ``(P, mem_dim)`` their temporal encoding.
    """

    spatial: list[tuple[torch.Tensor, Hashable]]
    pointers: torch.Tensor
    pointer_pos: torch.Tensor


class MemoryAttentionLayer(nn.Module):
    """Pre-norm layer: RoPE self-attention, RoPE cross-attention (keys get their position
    encoding added, queries do not), ReLU MLP of width 2048. ``cross_attention`` replaces the
    cross-attention module (EdgeTAM: ``rope_attention_v2.RoPEAttentionV2``)."""

    def __init__(
        self,
        d_model: int = 256,
        mem_dim: int = 64,
        dim_feedforward: int = 2048,
        cross_attention: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(d_model)
        self.cross_attn_image = (
            cross_attention if cross_attention is not None else RoPEAttention(d_model, kv_in_dim=mem_dim)
        )
        self.linear1 = Linear(d_model, dim_feedforward)
        self.linear2 = Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, x, memory, memory_pos, num_k_exclude_rope, attn_mask):
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h)
        h = self.norm2(x)
        x = x + self.cross_attn_image(h, memory + memory_pos, memory, num_k_exclude_rope, attn_mask)
        return x + self.linear2(self.linear1(self.norm3(x), "relu"))


class MemoryAttention(nn.Module):
    """Stack of ``MemoryAttentionLayer`` plus a final layer norm.

    ``cross_attention`` (a factory, called once per layer; None: SAM 2's ``RoPEAttention``) gives
    each layer its cross-attention module: EdgeTAM's memory frames are spatial-perceiver tokens,
    attended with ``rope_attention_v2.RoPEAttentionV2`` (``SAM2Model`` passes it)."""

    def __init__(
        self,
        d_model: int = 256,
        mem_dim: int = 64,
        num_layers: int = 4,
        cross_attention: Callable[[], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(d_model, mem_dim, cross_attention=cross_attention() if cross_attention else None)
            for _ in range(num_layers)
        )
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

    def forward_bank(
        self,
        curr: torch.Tensor,
        curr_pos: torch.Tensor,
        objects: Sequence[ObjectMemory],
        positions: dict[Hashable, torch.Tensor],
        cache: MemoryKVCache | None = None,
    ) -> torch.Tensor:
        """``forward`` with the memory given per object and per frame, reusing cached projections.

        Same result as ``forward`` on the concatenated memory (up to float rounding), computed
        without padding or attention mask: objects with equal memory sizes share one attention
        call. Each memory frame's keys / values are taken from ``cache`` (a ``MemoryKVCache``),
        computed and stored there on first use; ``cache=None`` computes them for this call only.

        Args:
            curr: ``(B, HW, d_model)`` current-frame features; curr_pos: same shape.
            objects: ``B`` ``ObjectMemory`` (one per batch row); every object needs at least one
                memory token.
            positions: position key -> ``(L, mem_dim)`` position encoding of a spatial memory
                (sine encoding + temporal embedding of its slot; ``L`` its tokens: ``f * f`` for
                a SAM 2 map, the perceiver's latents for EdgeTAM).
            cache: ``MemoryKVCache`` or None.

        Returns:
            ``(B, HW, d_model)`` in ``curr``'s dtype.
        """
        cache = MemoryKVCache() if cache is None else cache
        cache.check_weights(self)
        n_layers = len(self.layers)
        frame_entries = [[cache.frame_entry(m, n_layers) for m, _ in obj.spatial] for obj in objects]
        pos_entries = {key: cache.pos_entry(key, pos, n_layers) for key, pos in positions.items()}
        sizes: dict[int, list[int]] = {}  # objects grouped by memory size: one attention call each
        for b, obj in enumerate(objects):
            n = sum(memory_tokens(m).shape[1] for m, _ in obj.spatial) + obj.pointers.shape[0]
            sizes.setdefault(n, []).append(b)
        x = curr + 0.1 * curr_pos
        for i, layer in enumerate(self.layers):
            attn = layer.cross_attn_image
            heads, d = attn.num_heads, attn.internal_dim // attn.num_heads
            groups = []
            for n, idx in sizes.items():
                k = x.new_empty(len(idx), heads, n, d)  # written in place: no concatenation, no stacking
                v = x.new_empty(len(idx), heads, n, d)
                for row, b in enumerate(idx):
                    obj, start = objects[b], 0
                    for (mem, pos_key), layers in zip(obj.spatial, frame_entries[b]):
                        if layers[i] is None:
                            layers[i] = attn.memory_kv(memory_tokens(mem)[0].to(curr.dtype))
                        part = pos_entries[pos_key]
                        if part[i] is None:
                            part[i] = attn.position_k(positions[pos_key].to(curr.dtype))
                        k_frame, v_frame = layers[i]
                        end = start + k_frame.shape[1]
                        torch.add(k_frame, part[i], out=k[row, :, start:end])  # float32 sum, then k's dtype
                        v[row, :, start:end] = v_frame
                        start = end
                    if obj.pointers.shape[0]:
                        ptr = obj.pointers.to(curr.dtype)
                        k[row, :, start:] = attn.heads(attn.k_proj((ptr + obj.pointer_pos.to(curr.dtype))[None]))[0]
                        v[row, :, start:] = attn.heads(attn.v_proj(ptr[None]))[0]
                groups.append((idx, k, v))
            h = layer.norm1(x)
            x = x + layer.self_attn(h, h, h)
            x = x + attn.forward_bank(layer.norm2(x), groups)
            x = x + layer.linear2(layer.linear1(layer.norm3(x), "relu"))
        return self.norm(x)
