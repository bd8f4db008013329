"""Random but informative weights for tests and benchmarks, and the paths they use (no pytest here,
so that benchmarks can import it)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "SAM2SSlicer"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SHARED_DATA = ROOT.parent / "shared" / "data" / "endoscapes_v4"


def random_model(name: str = "sam2.1_hiera_t", image_size: int = 256, seed: int = 0):
    """``sam2s.build_model(name)`` with seeded random weights: parameters PyTorch leaves constant
    get N(0, 0.02) noise and the object-score head's last bias is +2, so objects are predicted
    present and masks depend on the image (the same recipe as ``reference.build_reference``)."""
    import sam2s
    import torch

    torch.manual_seed(seed)
    return perturb_(sam2s.build_model(name, image_size=image_size), seed)


def perturb_(model, seed: int = 0):
    """Give every constant-initialised parameter (except norms) N(0, 0.02) noise and set the
    object-score head's last bias to +2, in place; works on ours and on Meta's model (same keys)."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for key, p in model.state_dict().items():
            if p.dtype.is_floating_point and p.numel() > 1 and torch.all(p == p.flatten()[0]) and "norm" not in key:
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(2.0)
    return model.eval()
