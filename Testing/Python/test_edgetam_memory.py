"""EdgeTAM's memory path (perceiver-token memory frames, ``RoPEAttentionV2`` cross-attention): the
per-memory-frame key / value cache equals recomputing the keys every frame, bf16 tracks like fp32
on the real clip, and DiveMem on EdgeTAM (equal to EdgeTAM's own memory on a short pass, end to end
on the real clip). The SAM 2 counterparts: ``test_memory_cache.py``, ``test_precision.py``
(``test_bf16_tracks_like_fp32_on_the_real_clip``), ``test_divemem.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import sam2s
import torch
from conftest import random_model
from sam2s.modeling.memory_attention import MemoryAttention, MemoryKVCache, ObjectMemory
from sam2s.modeling.rope_attention_v2 import RoPEAttentionV2
from SAM2SSlicerLib.synthetic import SyntheticClip
from test_memory_cache import _run

SIZE = 256  # the smallest size whose memory map (16 x 16) splits into the perceiver's 16 x 16 windows


@pytest.fixture(scope="module")
def edgetam():
    return random_model("edgetam", SIZE)


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


@pytest.mark.slow  # 12 frames twice per memory policy
@pytest.mark.parametrize("memory", ["sam2", "divemem"])
def test_edgetam_cached_equals_uncached(edgetam, memory):
    """Two objects on a synthetic clip, forward, corrections, a removal and a reverse pass:
    fp32 logits with the cache within 1e-4 of those recomputing every key every frame."""
    clip = SyntheticClip(12, 64, 80, num_objects=2, seed=5)
    params = {"iou_threshold": 0.0, "buffer_size": 2, "long_term_size": 2} if memory == "divemem" else {}
    steps = [
        ("mask", 0, 1, 0),
        ("points", 0, 2, [[40, 30]], [1]),
        ("propagate", {"end": 8}),
        ("points", 4, 2, [[10, 10], [50, 40]], [0, 1]),  # correction: object 2's bank is now larger
        ("propagate", {"start": 4, "end": 10}),
        ("points", 6, 1, [[20, 20]], [1]),  # correction of a frame whose memory is cached
        ("propagate", {"start": 6}),
        ("propagate", {"start": 11, "reverse": True}),  # backward: slots move the other way
        ("remove", 1),
        ("propagate", {"start": 5, "end": 11}),
    ]
    runs = {}
    for cached in (False, True):
        tracker = sam2s.VideoTracker(edgetam, clip, memory=memory, **params)
        if not cached:
            tracker.memory_kv_cache = None
        runs[cached] = _run(tracker, clip, steps)
    assert next(iter(tracker.objects.values())).cond[0].maskmem.shape == (1, 512, 64)  # perceiver tokens
    (plain, _), (fast, sizes) = runs[False], runs[True]
    assert len(plain) == len(fast) and max(sizes) > 0  # the cached path ran
    worst = 0.0
    for a, b in zip(plain, fast):
        if isinstance(a, tuple):
            assert a[:2] == b[:2]
            a, b = a[2], b[2]
        assert np.abs(a).max() > 0.01  # informative logits (random weights give small ones)
        worst = max(worst, float(np.abs(a - b).max()))
    assert worst <= 1e-4, f"max |cached - uncached| = {worst:.3g}"
    per_object = 3 + 7 + (2 + 2 if memory == "divemem" else 0)  # bounded by the bank, as SAM 2's
    assert max(sizes) <= 2 * per_object and sizes[-1] <= per_object


# ------------------------------------------------------------------ bf16 fidelity
# (test_precision.py's test_bf16_tracks_like_fp32_on_the_real_clip, parametrized over SAM 2.1 and EdgeTAM)


# ------------------------------------------------------------------ DiveMem
# (DiveMem on a short pass equals EdgeTAM's own memory: test_divemem.py's
# test_short_video_gives_exactly_sam2_output, parametrized over SAM 2 and EdgeTAM)


@pytest.mark.slow
@pytest.mark.heavy
def test_divemem_on_the_real_clip(shared_data, edgetam):
    """DiveMem acceptance 3 on EdgeTAM: the whole real video (127 frames of video.mp4), 2 objects,
    at 256 px: every frame tracked with finite logits, the attended set is always conditioning +
    short-term + at most long_term_size long-term frames, the long-term bank is used and renewed,
    and the bank and the key / value cache stay bounded."""
    torch.set_num_threads(2)
    prompts = json.loads((shared_data / "prompts.json").read_text())["objects"]
    # Random weights predict IoUs around 0.5-0.9, so a lower threshold exercises the bank.
    tracker = sam2s.VideoTracker(
        edgetam, str(shared_data / "video.mp4"), memory="divemem", iou_threshold=0.3, long_term_size=3
    )
    assert tracker.num_frames == 127
    p0, p1 = prompts[0]["prompts"][0], prompts[1]["prompts"][0]
    tracker.add_points(0, 1, p0["points"], p0["labels"])
    tracker.add_box(0, 2, p1["box"])
    long_term_seen = {1: set(), 2: set()}
    frames, cached = [], []
    for t, ids, logits in tracker.propagate():
        frames.append(t)
        assert ids == [1, 2] and logits.shape == (2, 480, 854) and np.isfinite(logits).all()
        if t == 0:
            continue
        for obj_id in ids:
            seen = tracker.attended_memory(obj_id)
            assert seen["frame"] == t and seen["conditioning"] == [0]
            assert seen["short_term"] == list(range(max(1, t - 6), t))
            assert len(seen["long_term"]) <= 3
            assert not set(seen["long_term"]) & set(seen["short_term"] + seen["conditioning"])
            assert all(lt < t for lt in seen["long_term"])
            long_term_seen[obj_id].update(seen["long_term"])
            bank = tracker.memory.bank(tracker.objects[obj_id])
            assert len(bank.buffer) < 5 and len(bank.long_term) <= 3
            assert len(tracker.objects[obj_id].non_cond) <= 16
            assert tracker.objects[obj_id].non_cond[t].maskmem.shape == (1, 512, 64)
        cached.append(len(tracker.memory_kv_cache))
    assert frames == list(range(127))
    assert all(len(s) > 3 for s in long_term_seen.values())  # the bank was used and renewed
    # cache entries: per object 1 conditioning + 7 recent + 3 long-term + 4 candidates at most
    assert 0 < max(cached) <= 2 * (1 + 7 + 3 + 4)
