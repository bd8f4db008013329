"""Meta's reference SAM 2 (PyPI ``sam2==1.1.0``, installed with ``--no-deps``) for benchmarks and
parity tests: build it from its hydra configs, give it random but informative weights, and patch
its known CPU bug.

No pytest and nothing of ``Testing/`` here: benchmarks import this module, and the test suite's
``Testing/Python/reference.py`` re-exports it (tests may depend on benchmarks, not the reverse).
``sam2`` itself is imported only inside the functions, so importing this module is cheap and works
without the reference installed.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "endoscapes_v4"  # real clip; absent -> callers fall back

_INIT_FUNCTIONS = (
    "trunc_normal_",
    "normal_",
    "uniform_",
    "xavier_uniform_",
    "kaiming_uniform_",
    "zeros_",
    "ones_",
    "constant_",
)


def config_path(name: str) -> str:
    """Hydra config path of a config stem inside the reference package."""
    return f"configs/{'sam2.1' if name.startswith('sam2.1') else 'sam2'}/{name}.yaml"


def patch_reference_bf16_bug() -> None:
    """Upcast ``memory``/``memory_pos`` to the query dtype in the reference ``MemoryAttention``.

    On CPU the reference stores memory features in bf16; when no fp32 object pointer shares the
    concatenation they reach fp32 weights and it crashes ("mat1 and mat2 must have the same
    dtype"). The upcast equals the promotion ``torch.cat`` performs in the ordinary case, so it is
    exact (../shared/docs/sam2-notes.md, section 2).
    """
    from sam2.modeling.memory_attention import MemoryAttention

    if getattr(MemoryAttention.forward, "_sam2s_patched", False):
        return
    original = MemoryAttention.forward

    @functools.wraps(original)
    def forward(self, curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        dtype = curr[0].dtype if isinstance(curr, list) else curr.dtype
        return original(self, curr, memory.to(dtype), curr_pos, memory_pos.to(dtype), num_obj_ptr_tokens)

    forward._sam2s_patched = True
    MemoryAttention.forward = forward


def perturb_(model, seed: int = 0):
    """Give every constant-initialised parameter (except norms) N(0, 0.02) noise and set the
    object-score head's last bias to +2, in place; works on ours and on Meta's model (same keys).

    So all weights matter (e.g. Hiera's zero-initialised position embeddings) and objects are
    predicted present, with masks that depend on the image."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for key, p in model.state_dict().items():
            if p.dtype.is_floating_point and p.numel() > 1 and torch.all(p == p.flatten()[0]) and "norm" not in key:
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(2.0)
    return model.eval()


def random_model(name: str = "sam2.1_hiera_t", image_size: int = 256, seed: int = 0, **options):
    """``sam2s.build_model(name, image_size=..., **options)`` with the seeded random weights of
    ``perturb_`` (the same recipe as :func:`build_reference`, so both sides can share a state dict)."""
    import sam2s

    torch.manual_seed(seed)
    return perturb_(sam2s.build_model(name, image_size=image_size, **options), seed)


def build_reference(name: str, image_size: int = 1024, seed: int = 0, **overrides):
    """Reference ``SAM2VideoPredictor`` (``build_sam2_video_predictor`` defaults) on CPU, in fp32 as
    Meta runs it there, with seeded random weights (``perturb_``); ``overrides`` are extra
    ``++model.key=value`` hydra overrides. Applies ``patch_reference_bf16_bug`` first."""
    from sam2.build_sam import build_sam2_video_predictor

    patch_reference_bf16_bug()
    extra = [f"++model.image_size={image_size}"] + [f"++model.{k}={v}" for k, v in overrides.items()]
    torch.manual_seed(seed)
    model = build_sam2_video_predictor(config_path(name), None, device="cpu", hydra_overrides_extra=extra)
    return perturb_(model, seed)


def build_reference_uninitialised(name: str, image_size: int = 1024):
    """The reference ``SAM2VideoPredictor`` of config ``name`` with its ``torch.nn.init`` calls
    skipped: every parameter has its name, shape and dtype but arbitrary values, for fast checks
    of state-dict keys and shapes (Meta's Hiera calls ``.item()`` while building, so the ``meta``
    device cannot be used for the reference)."""
    from sam2.build_sam import build_sam2_video_predictor

    saved = {n: getattr(torch.nn.init, n) for n in _INIT_FUNCTIONS}
    for n in _INIT_FUNCTIONS:
        setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        extra = [f"++model.image_size={image_size}"]
        return build_sam2_video_predictor(config_path(name), None, device="cpu", hydra_overrides_extra=extra)
    finally:
        for n, function in saved.items():
            setattr(torch.nn.init, n, function)
