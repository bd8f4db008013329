"""The CPU speed work of issue 12 keeps the numbers: oneDNN's fused linear + activation, the complex
RoPE, the cached position encodings and the frame prefetch worker each give what the plain
computation gives (``benchmarks/bench_speed.py`` measures the speed)."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import sam2s
import torch
import torch.nn.functional as F
from randomweights import random_model
from sam2s.frames import ArrayFrames, FrameSourceError
from sam2s.modeling.common import Linear, fused_linear_available
from sam2s.modeling.hiera import Hiera
from sam2s.modeling.memory_attention import apply_rope, axial_rope_table
from sam2s.modeling.position_encoding import sine_position_encoding
from SAM2SSlicerLib.synthetic import SyntheticClip


def _ops_run(fn) -> set[str]:
    """Names of the operators ``fn()`` ran (PyTorch's profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


@pytest.mark.parametrize("activation", ["none", "relu", "gelu"])
def test_fused_linear_equals_linear_then_activation(activation):
    torch.manual_seed(0)
    layer = Linear(96, 384)
    x = torch.randn(2, 50, 96)
    act = {"none": lambda y: y, "relu": F.relu, "gelu": F.gelu}[activation]
    exact = act(F.linear(x.double(), layer.weight.double(), layer.bias.double()))
    with torch.inference_mode():
        assert torch.equal(layer(x, activation), act(F.linear(x, layer.weight, layer.bias)))  # fp32: unchanged
        layer_bf16 = Linear(96, 384).to(torch.bfloat16)
        layer_bf16.load_state_dict(layer.state_dict())
        xb = x.bfloat16()
        fused = layer_bf16(xb, activation)
        ops = _ops_run(lambda: layer_bf16(xb, activation))
    plain = act(F.linear(xb, layer_bf16.weight, layer_bf16.bias))  # autograd on: the plain path
    assert fused.dtype == torch.bfloat16 and fused.shape == (2, 50, 384)
    scale = exact.abs().max().item()
    # bf16 inputs and weights: both paths within bf16 rounding of the float64 result, and each other
    for y in (fused, plain):
        assert (y.double() - exact).abs().max().item() < 0.02 * scale
    assert (fused.double() - plain.double()).abs().max().item() < 0.02 * scale
    assert ("mkldnn::_linear_pointwise" in ops) == fused_linear_available()
    with pytest.raises(ValueError, match="relu"):
        layer(x, "tanh")


def test_rope_rotates_each_pair_by_its_axial_angle():
    dim, side = 16, 3
    table = axial_rope_table(dim, side)
    assert table.shape == (side * side, dim // 2) and table.dtype == torch.complex64
    x = torch.randn(2, 1, 2 * side * side, dim)  # two memory frames: the table repeats
    out = apply_rope(x, table)
    freqs = [10000.0 ** (-4 * i / dim) for i in range(dim // 4)]
    for token in range(2 * side * side):
        px, py = (token % (side * side)) % side, (token % (side * side)) // side
        angles = [px * f for f in freqs] + [py * f for f in freqs]
        for pair, a in enumerate(angles):
            x0, x1 = x[:, :, token, 2 * pair], x[:, :, token, 2 * pair + 1]
            expected0 = x0 * math.cos(a) - x1 * math.sin(a)
            expected1 = x0 * math.sin(a) + x1 * math.cos(a)
            torch.testing.assert_close(out[:, :, token, 2 * pair], expected0, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out[:, :, token, 2 * pair + 1], expected1, atol=1e-5, rtol=1e-5)


def test_cached_sine_encoding_is_shared_and_serves_autograd():
    with torch.inference_mode():
        a = sine_position_encoding(2, 5, 7, 16)
    b = sine_position_encoding(3, 5, 7, 16)
    assert a.shape == (2, 16, 5, 7) and b.shape == (3, 16, 5, 7)
    assert a.data_ptr() == b.data_ptr()  # computed once
    assert not b.is_inference()
    # channel 1 encodes y = 1 of 5 rows: cos((1 / 5) * 2 pi) (normalised coordinate, T ** 0)
    assert b[0, 1, 0, 0].item() == pytest.approx(math.cos(2 * math.pi / (5 + 1e-6)), abs=1e-6)
    w = torch.ones(1, requires_grad=True)
    (b * w).sum().backward()
    assert w.grad is not None
    c = sine_position_encoding(1, 5, 7, 16, dtype=torch.bfloat16)
    assert c.dtype == torch.bfloat16 and torch.allclose(c.float(), a[:1], atol=1e-2)


def test_hiera_position_embedding_cache_follows_the_weights():
    model = random_model("sam2.1_hiera_t", 64)
    trunk: Hiera = model.image_encoder.trunk
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        first = [t.clone() for t in trunk(x)]
        again = trunk(x)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    with torch.no_grad():
        trunk.pos_embed.add_(0.5)  # in place: same storage, new version
    fresh = random_model("sam2.1_hiera_t", 64)
    fresh.load_state_dict(model.state_dict())
    with torch.inference_mode():
        changed = trunk(x)
        expected = fresh.image_encoder.trunk(x)
    assert not torch.equal(changed[0], first[0])
    assert all(torch.equal(a, b) for a, b in zip(changed, expected))


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sam2s-prefetch")]


def test_prefetched_frames_give_the_same_masks():
    clip = SyntheticClip(num_frames=6, height=48, width=64, num_objects=1, seed=3)
    model = random_model("sam2.1_hiera_t", 64)
    results = {}
    for prefetch in (True, False):
        tracker = sam2s.VideoTracker(model, clip)
        tracker.prefetch_frames = prefetch
        tracker.add_mask(0, 1, clip.mask(0, 0))
        results[prefetch] = [(t, logits) for t, _, logits in tracker.propagate()]
        assert not _prefetch_threads()  # the worker lives only while propagating
    assert [t for t, _ in results[True]] == list(range(6))
    for (t1, a), (t2, b) in zip(results[True], results[False]):
        assert t1 == t2 and np.array_equal(a, b)


class _BrokenFrame(ArrayFrames):
    """Frame 3 cannot be decoded (as a truncated JPEG in a folder)."""

    def _read(self, index: int) -> np.ndarray:
        if index == 3:
            raise FrameSourceError("frame 3 is truncated")
        return super()._read(index)


@pytest.mark.parametrize("prefetch", [True, False])
def test_a_frame_error_surfaces_on_its_frame_with_or_without_prefetch(prefetch):
    clip = SyntheticClip(num_frames=6, height=48, width=64, num_objects=1, seed=4)
    frames = _BrokenFrame(np.stack([clip.get(i) for i in range(len(clip))]))
    tracker = sam2s.VideoTracker(random_model("sam2.1_hiera_t", 64), frames)
    tracker.prefetch_frames = prefetch
    tracker.add_mask(0, 1, clip.mask(0, 0))
    seen = []
    with pytest.raises(FrameSourceError, match="frame 3"):
        for t, _, _ in tracker.propagate():
            seen.append(t)
    assert seen == [0, 1, 2]
    assert not _prefetch_threads()
    assert [t for t, _, _ in tracker.propagate(start=0, end=2)] == [0, 1, 2]  # usable afterwards
