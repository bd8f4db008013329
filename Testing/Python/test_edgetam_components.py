"""EdgeTAM's spatial perceiver (``sam2s.modeling.perceiver``) and memory cross-attention
(``sam2s.modeling.rope_attention_v2``) against EdgeTAM's reference code (PyPI ``edgetam-dimos``
1.0.1: ``sam2/modeling/perceiver.py``, ``sam2/modeling/sam/transformer.py::RoPEAttentionv2``),
run in a subprocess (``benchmarks/edgetam_reference.py``: its package is also named ``sam2``).

One reference run builds both modules with ``edgetam.yaml``'s settings and random weights, and
saves their state dicts, inputs and outputs; the tests load the weights strictly into ours and
compare. A missing reference fails the tests (``make env`` installs it); it is never skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from sam2s.modeling.perceiver import PerceiverResampler
from sam2s.modeling.rope_attention_v2 import RoPEAttentionV2
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from edgetam_reference import run_in_reference  # noqa: E402

REFERENCE_SCRIPT = r"""
import sys
import torch
from sam2.modeling.perceiver import PerceiverResampler
from sam2.modeling.position_encoding import PositionEmbeddingSine
from sam2.modeling.sam.transformer import RoPEAttentionv2

torch.manual_seed(0)


def perturb(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return module.eval()


perceiver = perturb(PerceiverResampler(
    depth=2, dim=64, dim_head=64, heads=1, ff_mult=4, hidden_dropout_p=0.0, attention_dropout_p=0.0,
    pos_enc_at_key_value=True, concat_kv_latents=False, num_latents=256, num_latents_2d=256,
    position_encoding=PositionEmbeddingSine(num_pos_feats=64, normalize=True, scale=None, temperature=10000),
    use_self_attn=True,
))
attention = perturb(RoPEAttentionv2(
    embedding_dim=256, num_heads=1, downsample_rate=1, dropout=0.1, kv_in_dim=64,
    rope_theta=10000.0, q_sizes=[64, 64], k_sizes=[16, 16],
))
sine = PositionEmbeddingSine(num_pos_feats=64, normalize=True, scale=None, temperature=10000)

with torch.no_grad():
    x = torch.randn(1, 64, 64, 64)
    pos = sine(x)
    latents, latent_pos = perceiver(x, pos)

    # Memory as sam2_base._prepare_memory_conditioned_features lays it out: 3 perceiver-compressed
    # frames (their position + a temporal embedding), then 4 object-pointer tokens (zero position).
    frames = [perceiver(torch.randn(1, 64, 64, 64), pos) for _ in range(3)]
    tpos = 0.02 * torch.randn(3, 1, 1, 64)
    memory = torch.cat([m for m, _ in frames] + [torch.randn(1, 4, 64)], dim=1)
    memory_pos = torch.cat([p + tpos[i] for i, (_, p) in enumerate(frames)] + [torch.zeros(1, 4, 64)], dim=1)
    queries = torch.randn(1, 4096, 256)
    cases = {
        "perceiver_memory": (queries, memory + memory_pos, memory, 4, 3),
        "grid_only": (queries, torch.randn(1, 512, 64), torch.randn(1, 512, 64), 0, 2),
        "pointers_only": (queries, torch.randn(1, 4, 64), torch.randn(1, 4, 64), 4, 0),
    }
    outputs = {name: attention(*args) for name, args in cases.items()}

torch.save(
    {
        "perceiver": {"state": perceiver.state_dict(), "x": x, "pos": pos, "latents": latents, "latent_pos": latent_pos},
        "attention": {"state": attention.state_dict(), "cases": cases, "outputs": outputs},
    },
    sys.argv[1],
)
_results["latents_shape"] = list(latents.shape)
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The reference run's saved tensors, or the error that stopped it (raised in each test)."""
    path = tmp_path_factory.mktemp("edgetam") / "reference.pt"
    try:
        results = run_in_reference(REFERENCE_SCRIPT, str(path), timeout=300)
    except RuntimeError as error:
        return error
    return results, torch.load(path)


def _saved(reference):
    if isinstance(reference, Exception):
        pytest.fail(str(reference))
    results, saved = reference
    assert results["standin_calls"] == []
    return saved


def _max_diff(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Max absolute difference, checked against ``1e-5 * max(1, max |ref|)``."""
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    diff = (ours - ref).abs().max().item()
    scale = max(1.0, ref.abs().max().item())
    print(f"max |diff| {diff:.3g}, max |ref| {scale:.3g}")
    assert diff <= 1e-5 * scale, diff
    return diff


@pytest.mark.slow  # the reference's subprocess
def test_perceiver_matches_reference(reference):
    saved = _saved(reference)["perceiver"]
    ours = PerceiverResampler().eval()
    ours.load_state_dict(saved["state"], strict=True)
    assert set(ours.state_dict()) == set(saved["state"])
    with torch.no_grad():
        latents, latent_pos = ours(saved["x"], saved["pos"])
        no_pos_latents, no_pos = ours(saved["x"])
    assert latents.shape == (1, 512, 64)
    print("perceiver max diff", _max_diff(latents, saved["latents"]), _max_diff(latent_pos, saved["latent_pos"]))
    assert not latent_pos[:, :256].any()  # the global latents have no position
    assert no_pos is None and torch.equal(no_pos_latents[:, 256:], latents[:, 256:])  # pos feeds the 1-D part only


@pytest.mark.slow  # the reference's subprocess
def test_perceiver_batch_equals_single_runs(reference):
    """The reference fails for B > 1 (``.view`` after ``.expand`` in ``forward_2d``); ours batches."""
    saved = _saved(reference)["perceiver"]
    ours = PerceiverResampler().eval()
    ours.load_state_dict(saved["state"], strict=True)
    x = torch.cat([saved["x"], torch.randn(1, 64, 64, 64, generator=torch.Generator().manual_seed(1))])
    pos = saved["pos"].expand(2, -1, -1, -1)
    with torch.no_grad():
        latents, latent_pos = ours(x, pos)
        singles = [ours(x[i : i + 1], pos[i : i + 1]) for i in range(2)]
    assert latents.shape == latent_pos.shape == (2, 512, 64)
    for i, (single, single_pos) in enumerate(singles):
        torch.testing.assert_close(latents[i : i + 1], single, rtol=0, atol=1e-5)
        assert torch.equal(latent_pos[i : i + 1], single_pos)


def test_perceiver_rejects_bad_shapes():
    with pytest.raises(ValueError, match="perfect square"):
        PerceiverResampler(num_latents_2d=200)
    with pytest.raises(ValueError, match="grid of windows"):
        PerceiverResampler(depth=1)(torch.randn(1, 64, 24, 24))


@pytest.mark.slow  # the reference's subprocess
@pytest.mark.parametrize("case", ["perceiver_memory", "grid_only", "pointers_only"])
def test_rope_attention_v2_matches_reference(reference, case):
    saved = _saved(reference)["attention"]
    ours = RoPEAttentionV2().eval()
    ours.load_state_dict(saved["state"], strict=True)
    assert set(ours.state_dict()) == set(saved["state"])
    q, k, v, num_k_exclude_rope, rope_k_repeat = saved["cases"][case]
    ref = saved["outputs"][case]
    with torch.no_grad():
        out = ours(q, k, v, num_k_exclude_rope=num_k_exclude_rope, rope_k_repeat=rope_k_repeat)
        # The reference's sdp_kernel_context selects PyTorch's math kernel on CPU: with it, ours
        # matches to float32 rounding (0 here); the default (flash) CPU kernel sums differently.
        with sdpa_kernel(SDPBackend.MATH):
            out_math = ours(q, k, v, num_k_exclude_rope=num_k_exclude_rope, rope_k_repeat=rope_k_repeat)
    print(case, "max diff", _max_diff(out, ref))
    assert (out_math - ref).abs().max().item() <= 1e-6 * max(1.0, ref.abs().max().item())


def test_rope_attention_v2_key_layout():
    """Per memory frame the leading (1-D latent) keys are not rotated: moving them between frames
    while keeping each frame's grid in place changes nothing; rotating a grid token does."""
    torch.manual_seed(0)
    attention = RoPEAttentionV2().eval()
    q = torch.randn(1, 4096, 256)
    k = torch.randn(1, 2 * 512 + 3, 64)
    v = torch.randn(1, 2 * 512 + 3, 64)
    swapped = [torch.cat([t[:, 512:768], t[:, 256:512], t[:, :256], t[:, 768:]], dim=1) for t in (k, v)]
    moved = [torch.cat([t[:, :256], t[:, 257:512], t[:, 256:257], t[:, 512:]], dim=1) for t in (k, v)]
    with torch.no_grad():
        out = attention(q, k, v, 3, rope_k_repeat=2)
        torch.testing.assert_close(attention(q, *swapped, 3, rope_k_repeat=2), out, rtol=0, atol=1e-5)
        assert not torch.allclose(attention(q, *moved, 3, rope_k_repeat=2), out, rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="rope_k_repeat"):
        attention(q, k, v, 3, rope_k_repeat=3)
    with pytest.raises(ValueError, match="queries"):
        attention(q[:, :1000], k, v, 3, rope_k_repeat=2)
