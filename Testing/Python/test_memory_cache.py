"""The per-memory-frame key / value cache of memory attention (``MemoryKVCache``): same results as
recomputing every frame's projections (the reference ``sam2/modeling/memory_attention.py`` run by
``sam2_base.py::_prepare_memory_conditioned_features``), through corrections, object removal and
DiveMem, with a size bounded by the memory bank."""

from __future__ import annotations

import numpy as np
import pytest
import sam2s
import torch
from randomweights import random_model
from sam2s.modeling.memory_attention import MemoryAttention, MemoryKVCache, ObjectMemory
from SAM2SSlicerLib.synthetic import SyntheticClip


@pytest.fixture(scope="module")
def tiny_model():
    return random_model("sam2.1_hiera_t", 64)


def _run(tracker, clip, steps):
    """Apply ``steps`` (prompts, corrections, removals, propagations) and collect the outputs and
    the cache size after every tracked frame."""
    outputs, sizes = [], []
    for step in steps:
        kind, *args = step
        if kind == "propagate":
            for t, ids, logits in tracker.propagate(**args[0]):
                outputs.append((t, ids, logits))
                if tracker.memory_kv_cache is not None:
                    sizes.append(len(tracker.memory_kv_cache))
        elif kind == "mask":
            outputs.append(tracker.add_mask(args[0], args[1], clip.mask(args[0], args[2])))
        elif kind == "points":
            outputs.append(tracker.add_points(*args))
        elif kind == "remove":
            tracker.remove_object(args[0])
    return outputs, sizes


# (config, image size, stored memory of a frame): EdgeTAM (issue 24) keeps perceiver tokens, and
# runs at 256 px, the smallest size whose memory map splits into the perceiver's 16 x 16 windows.
MODELS = {"sam2.1_hiera_t": (64, (1, 64, 4, 4)), "edgetam": (256, (1, 512, 64))}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    return random_model(request.param, MODELS[request.param][0])


@pytest.mark.slow  # 12 frames and 4 passes twice per model and memory policy
@pytest.mark.parametrize("memory", ["sam2", "divemem"])
def test_cached_equals_uncached_through_corrections_and_removal(model, memory):
    """Two objects on a synthetic clip, forward, corrections, a reverse pass, a removal and a
    turn-around: fp32 logits with the cache within 1e-4 of those recomputing every key every
    frame, and a cache bounded by the memory bank."""
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
        ("propagate", {"start": 11, "reverse": True}),  # turn around after the removal
    ]
    runs = {}
    for cached in (False, True):
        tracker = sam2s.VideoTracker(model, clip, memory=memory, **params)
        if not cached:
            tracker.memory_kv_cache = None
        runs[cached] = _run(tracker, clip, steps)
    assert next(iter(tracker.objects.values())).cond[0].maskmem.shape == MODELS[model.config.name][1]
    (plain, _), (fast, sizes) = runs[False], runs[True]
    assert len(plain) == len(fast) and max(sizes) > 0  # the cached path ran
    worst = 0.0
    for a, b in zip(plain, fast):
        if isinstance(a, tuple):
            assert a[:2] == b[:2]
            a, b = a[2], b[2]
        assert np.abs(a).max() > 0.01  # informative logits (random weights give small ones)
        assert np.array_equal(a > 0, b > 0) or np.mean((a > 0) != (b > 0)) < 1e-3
        worst = max(worst, float(np.abs(a - b).max()))
    assert worst <= 1e-4, f"max |cached - uncached| = {worst:.3g}"
    # Bounded by the bank: per object the conditioning frames, 6 recent frames (+ DiveMem's
    # long-term entries and candidate buffer), never growing with the number of frames tracked.
    per_object = 3 + 7 + (2 + 2 if memory == "divemem" else 0)
    assert max(sizes) <= 2 * per_object
    assert sizes[-1] <= per_object  # object 1 was removed: its entries went with its bank


def test_cache_entries_follow_the_stored_tensors():
    torch.manual_seed(0)
    attn = MemoryAttention(d_model=32, mem_dim=16, num_layers=2).eval()
    for p in attn.parameters():
        p.data.normal_(0, 0.2)
    hw, side = 16, 4
    curr, curr_pos = torch.randn(2, hw, 32), torch.randn(2, hw, 32)
    frames = [torch.randn(1, 16, side, side).to(torch.bfloat16) for _ in range(3)]
    positions = {0: torch.randn(hw, 16), 1: torch.randn(hw, 16)}
    ptr, ptr_pos = torch.randn(4, 16), torch.randn(4, 16)

    def reference(objects):
        out = []
        for obj in objects:  # one object at a time, memory concatenated as the reference does
            mem = torch.cat([m.float().flatten(2).transpose(1, 2) for m, _ in obj.spatial] + [obj.pointers[None]], 1)
            pos = torch.cat([positions[k][None] for _, k in obj.spatial] + [obj.pointer_pos[None]], 1)
            out.append(attn(curr[:1], curr_pos[:1], mem, pos, obj.pointers.shape[0]))
        return torch.cat(out)

    cache = MemoryKVCache()
    objects = [
        ObjectMemory([(frames[0], 0), (frames[1], 1)], ptr, ptr_pos),
        ObjectMemory([(frames[2], 0)], ptr, ptr_pos),
    ]
    with torch.inference_mode():
        for _ in range(2):  # second call: all from the cache
            out = attn.forward_bank(
                curr[:1].expand(2, -1, -1), curr_pos[:1].expand(2, -1, -1), objects, positions, cache
            )
            torch.testing.assert_close(out, reference(objects), rtol=1e-5, atol=1e-5)
            assert len(cache) == 3
        frames[1].mul_(2)  # changed in place: its entry is stale and recomputed
        torch.testing.assert_close(
            attn.forward_bank(curr[:1].expand(2, -1, -1), curr_pos[:1].expand(2, -1, -1), objects, positions, cache),
            reference(objects),
            rtol=1e-5,
            atol=1e-5,
        )
        positions[1] = positions[1] + 1  # a new position encoding replaces the cached one
        torch.testing.assert_close(
            attn.forward_bank(curr[:1].expand(2, -1, -1), curr_pos[:1].expand(2, -1, -1), objects, positions, cache),
            reference(objects),
            rtol=1e-5,
            atol=1e-5,
        )
        with torch.no_grad():
            attn.layers[1].cross_attn_image.v_proj.bias.add_(1.0)  # new weights: the cache starts over
        torch.testing.assert_close(
            attn.forward_bank(curr[:1].expand(2, -1, -1), curr_pos[:1].expand(2, -1, -1), objects, positions, cache),
            reference(objects),
            rtol=1e-5,
            atol=1e-5,
        )
    nbytes = cache.nbytes
    del objects, frames[2]  # the bank drops a frame: so does the cache
    assert len(cache) == 2 and cache.nbytes < nbytes
    frames.clear()
    assert len(cache) == 0
