"""EdgeTAM's RepViT-M1 trunk (``sam2s.modeling.repvit``) against timm's ``repvit_m1.dist_in1k``.

timm runs in EdgeTAM's reference environment (``benchmarks/edgetam_reference.py``: a subprocess
with timm 1.0.31 importable and a torchvision stand-in that must never be called). The reference
is part of ``make env``; without it these parity tests fail (they do not skip).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sam2s.modeling.repvit import RepViTTrunk

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from edgetam_reference import run_in_reference  # noqa: E402

SIZES = {256: 2, 1024: 1}  # image size -> batch size

_REFERENCE_SCRIPT = """
import torch, timm
path, sizes = sys.argv[1], [tuple(map(int, s.split("x"))) for s in sys.argv[2:]]
torch.manual_seed(0)
model = timm.create_model("repvit_m1.dist_in1k", pretrained=False, features_only=True, out_indices=(0, 1, 2, 3))
with torch.no_grad():  # BatchNorm defaults (identity statistics, zero-initialised gains) would hide bugs
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
model.eval()
cases = {}
with torch.no_grad():
    for size, batch in sizes:
        x = torch.randn(batch, 3, size, size)
        cases[size] = {"x": x, "outs": list(model(x))}
torch.save({"state_dict": model.state_dict(), "cases": cases}, path)
_results["channels"] = model.feature_info.channels()
_results["reductions"] = model.feature_info.reduction()
"""

_cache: dict = {}


def _reference(tmp_path_factory) -> tuple[dict, dict]:
    """timm's state dict, inputs and outputs for every size in :data:`SIZES` (computed once)."""
    if "saved" not in _cache:
        path = tmp_path_factory.mktemp("repvit") / "reference.pt"
        result = run_in_reference(_REFERENCE_SCRIPT, str(path), *(f"{s}x{b}" for s, b in SIZES.items()))
        _cache["saved"] = (torch.load(path, weights_only=True), result)
    return _cache["saved"]


@pytest.mark.slow  # the reference's subprocess (timm)
@pytest.mark.parametrize("size", sorted(SIZES))
def test_trunk_matches_timm(size, tmp_path_factory):
    saved, result = _reference(tmp_path_factory)
    assert result["standin_calls"] == []
    assert tuple(result["channels"]) == (48, 96, 192, 384) and result["reductions"] == [4, 8, 16, 32]

    trunk = RepViTTrunk().eval()
    assert trunk.channel_list == (384, 192, 96, 48)
    assert list(trunk.body.state_dict()) == list(saved["state_dict"])  # same keys, same order (676)
    assert len(saved["state_dict"]) == 676
    trunk.body.load_state_dict(saved["state_dict"], strict=True)

    case = saved["cases"][size]
    x = case["x"]
    with torch.no_grad():
        outs = trunk(x)
    assert len(outs) == len(case["outs"]) == 4
    batch = SIZES[size]
    for i, (out, ref) in enumerate(zip(outs, case["outs"])):
        stride = 4 * 2**i
        assert out.shape == ref.shape == (batch, 48 * 2**i, size // stride, size // stride)
        assert out.dtype == ref.dtype == torch.float32
        scale = max(1.0, ref.abs().max().item())
        diff = (out - ref).abs().max().item()
        assert diff <= 1e-4 * scale, f"stage {i}: max |diff| {diff:.3g} (max |ref| {scale:.3g})"


def test_trunk_ignores_training_flag():
    torch.manual_seed(0)
    trunk = RepViTTrunk()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        eval_outs = trunk.eval()(x)
        train_outs = trunk.train()(x)
    assert all(torch.equal(a, b) for a, b in zip(eval_outs, train_outs))
    assert all(int(m.num_batches_tracked) == 0 for m in trunk.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_trunk_rejects_bad_arguments():
    with pytest.raises(ValueError, match="3, H, W"):
        RepViTTrunk()(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="equal length"):
        RepViTTrunk(dims=(48, 96), depths=(2,))
    with pytest.raises(ValueError, match="must differ"):
        RepViTTrunk(dims=(48, 48), depths=(2, 2))


def test_trunk_needs_neither_timm_nor_torchvision():
    code = (
        "import sys, json, torch\n"
        "from sam2s.modeling.repvit import RepViTTrunk\n"
        "outs = RepViTTrunk().eval()(torch.zeros(1, 3, 64, 64))\n"
        "print(json.dumps({'shapes': [list(o.shape) for o in outs],"
        " 'timm': 'timm' in sys.modules, 'torchvision': 'torchvision' in sys.modules}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "SAM2SSlicer"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result == {
        "shapes": [[1, 48, 16, 16], [1, 96, 8, 8], [1, 192, 4, 4], [1, 384, 2, 2]],
        "timm": False,
        "torchvision": False,
    }
