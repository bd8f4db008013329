"""EdgeTAM's memory path (perceiver-token memory frames, ``RoPEAttentionV2`` cross-attention):
``MemoryAttention.forward_bank`` equals its forward on token frames. The tests EdgeTAM shares with
SAM 2 are parametrized over both where SAM 2's are: the tracker's key / value cache
(``test_memory_cache.py``), bf16 against fp32 on the real clip (``test_precision.py``) and DiveMem
(``test_divemem.py``: a short pass equals the model's own memory; the whole real clip).
"""

from __future__ import annotations

import pytest
import torch
from sam2s.modeling.memory_attention import MemoryAttention, MemoryKVCache, ObjectMemory
from sam2s.modeling.rope_attention_v2 import RoPEAttentionV2


# ------------------------------------------------------------------ key / value cache
def test_rope_v2_bank_equals_forward_on_token_frames():
    """``MemoryAttention.forward_bank`` with ``RoPEAttentionV2`` (``memory_kv`` + ``position_k``
    per frame, ``forward_bank``) equals ``forward`` on the concatenated memory: per frame, plain
    tokens first, then a rotated key grid; objects with different bank sizes; cached entries reused."""
    torch.manual_seed(0)
    plain, side = 8, 4
    per_frame = plain + side * side
    attn = MemoryAttention(
        d_model=32,
        mem_dim=16,
        num_layers=2,
        cross_attention=lambda: RoPEAttentionV2(32, kv_in_dim=16, k_sizes=(side, side), tokens_per_frame=per_frame),
    ).eval()
    for p in attn.parameters():
        p.data.normal_(0, 0.2)  # non-zero k_proj biases: counted once, in the position part
    q_tokens = 25  # a 5 x 5 query grid, not the key grid
    curr, curr_pos = torch.randn(1, q_tokens, 32), torch.randn(1, q_tokens, 32)
    frames = [torch.randn(1, per_frame, 16).to(torch.bfloat16) for _ in range(3)]
    positions = {0: torch.randn(per_frame, 16), 1: torch.randn(per_frame, 16)}
    ptr, ptr_pos = torch.randn(4, 16), torch.randn(4, 16)
    objects = [
        ObjectMemory([(frames[0], 0), (frames[1], 1)], ptr, ptr_pos),
        ObjectMemory([(frames[2], 0)], ptr[:2], ptr_pos[:2]),
    ]

    def reference():
        out = []
        for obj in objects:
            mem = torch.cat([m.float() for m, _ in obj.spatial] + [obj.pointers[None]], 1)
            pos = torch.cat([positions[k][None] for _, k in obj.spatial] + [obj.pointer_pos[None]], 1)
            out.append(attn(curr, curr_pos, mem, pos, obj.pointers.shape[0]))
        return torch.cat(out)

    cache = MemoryKVCache()
    with torch.inference_mode():
        want = reference()
        for _ in range(2):  # the second call takes every frame's keys / values from the cache
            got = attn.forward_bank(curr.expand(2, -1, -1), curr_pos.expand(2, -1, -1), objects, positions, cache)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            assert len(cache) == 3
        layer = attn.layers[0].cross_attn_image
        k = layer.memory_kv(frames[0][0].float())[0] + layer.position_k(positions[0])
        whole = layer.heads(layer.k_proj(frames[0].float() + positions[0]))
        torch.testing.assert_close(k[None], layer._rotate_frames(whole, 1), rtol=1e-5, atol=1e-5)
        # the plain tokens are not rotated: their keys are the projection itself
        torch.testing.assert_close(k[:, :plain], whole[0, :, :plain], rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="square grid"):
            layer.forward_bank(torch.randn(1, 24, 32), [([0], k[None], k[None])])
