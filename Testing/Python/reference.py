"""Meta's reference SAM 2 (PyPI ``sam2==1.1.0``) for parity tests: build it, give it random
weights, and patch its known CPU bug. Tests import this only after ``pytest.importorskip("sam2")``."""

from __future__ import annotations

import functools

import torch
from randomweights import SHARED_DATA, perturb_  # noqa: F401  (SHARED_DATA is re-exported for tests)


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


def build_reference(name: str, image_size: int = 1024, seed: int = 0, **overrides):
    """Reference ``SAM2VideoPredictor`` (``build_sam2_video_predictor`` defaults) with random weights.

    Every parameter that the reference initialises to a constant (zeros, e.g. Hiera's position
    embeddings) gets N(0, 0.02) noise so that all weights matter; the object-score head's last bias
    is set to +2 so that objects are predicted present and masks are non-trivial.
    """
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

    names = (
        "trunc_normal_",
        "normal_",
        "uniform_",
        "xavier_uniform_",
        "kaiming_uniform_",
        "zeros_",
        "ones_",
        "constant_",
    )
    saved = {n: getattr(torch.nn.init, n) for n in names}
    for n in names:
        setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        extra = [f"++model.image_size={image_size}"]
        return build_sam2_video_predictor(config_path(name), None, device="cpu", hydra_overrides_extra=extra)
    finally:
        for n, function in saved.items():
            setattr(torch.nn.init, n, function)
