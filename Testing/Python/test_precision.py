"""Model precision (``"auto"``, ``"fp32"``, ``"bf16"``): the choice of ``auto``, the settings and
command-line plumbing, ``fp32`` unchanged, and the fidelity of ``bf16`` to ``fp32`` on the real clip.

``bf16`` runs the model with bfloat16 weights and activations (float32 norms, position encodings
and mask logits; see ``sam2s.modeling.sam2.SAM2Model``); Meta's ``sam2`` runs video tracking
under bf16 autocast on CUDA (``tools/vos_inference.py``, the demo backend).
"""

from __future__ import annotations

import copy
import json
import sys

import numpy as np
import pytest
import sam2s
import torch
from conftest import random_model
from sam2s import build

SIZE = 64


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    return np.stack([np.roll(base, 2 * t, axis=1) for t in range(4)])


def _track(model, frames, **kwargs):
    tracker = sam2s.VideoTracker(model, frames, **kwargs)
    first = tracker.add_points(0, 1, [[30, 20]], [1])
    box = tracker.add_box(0, 2, [5, 5, 40, 30])
    return [first, box] + [logits for _, _, logits in tracker.propagate()]


# ----------------------------------------------------------------------------- auto precision
def test_auto_precision_rule(monkeypatch):
    monkeypatch.setattr(build, "cpu_has_native_bf16", lambda: True)
    assert build.auto_precision("cpu") == "bf16"
    monkeypatch.setattr(build, "cpu_has_native_bf16", lambda: False)
    assert build.auto_precision("cpu") == "fp32"
    assert build.auto_precision(torch.device("cuda")) == "bf16"  # as Meta runs SAM 2 on GPUs
    assert build.auto_precision(torch.device("mps")) == "fp32"
    assert build.resolve_precision("fp32", "cuda") == "fp32"
    assert build.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision"):
        build.resolve_precision("fp16", "cpu")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo")
def test_native_bf16_detection_follows_cpu_flags():
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    assert build.cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})


# ----------------------------------------------------------------------------- fp32 / bf16 models
def test_fp32_is_the_default_and_unchanged(frames):
    """``precision="fp32"`` (build_model's default) is float32 throughout and gives bit-identical
    outputs to a model whose precision is never set, with or without ``VideoTracker(precision=)``."""
    model = random_model("sam2.1_hiera_t", SIZE)
    assert model.precision == "fp32" and model.dtype == torch.float32
    explicit = sam2s.build_model("sam2.1_hiera_t", image_size=SIZE, precision="fp32")
    explicit.load_state_dict(model.state_dict())
    assert all(p.dtype == torch.float32 for p in explicit.state_dict().values())
    plain = sam2s.modeling.sam2.SAM2Model(model.config)
    plain.load_state_dict(model.state_dict())
    plain.eval()
    want = _track(plain, frames)
    for got in (_track(explicit, frames), _track(model, frames, precision="fp32")):
        for a, b in zip(got, want):
            assert a.dtype == np.float32
            np.testing.assert_array_equal(a, b)


def test_bf16_model(frames):
    model = copy.deepcopy(random_model("sam2.1_hiera_t", SIZE))
    outputs = _track(model, frames, precision="bf16")  # VideoTracker converts the model in place
    assert model.precision == "bf16" and model.dtype == torch.bfloat16
    assert model.image_encoder.trunk.blocks[0].mlp.layers[0].weight.dtype == torch.bfloat16
    assert model.sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.dtype == torch.float32
    assert all(o.dtype == np.float32 and np.isfinite(o).all() for o in outputs)
    with pytest.raises(ValueError, match="bfloat16 weights"):
        model.set_precision("fp32")
    with pytest.raises(ValueError, match="precision"):
        model.set_precision("fp16")
    built = sam2s.build_model("sam2.1_hiera_t", image_size=SIZE, precision="bf16")
    assert built.precision == "bf16" and built.dtype == torch.bfloat16
    auto = sam2s.build_model("sam2.1_hiera_t", image_size=SIZE, precision="auto")
    assert auto.precision == build.auto_precision("cpu")


# ----------------------------------------------------------------------------- settings, CLI, server
def test_settings_precision():
    from SAM2SSlicerLib.settings import ModelSettings

    settings = ModelSettings()
    assert settings.precision == "auto"
    settings.validate()
    assert ModelSettings.fromDict({**settings.toDict(), "precision": "fp32"}).precision == "fp32"
    with pytest.raises(ValueError, match="precision 'fp16'"):
        ModelSettings(precision="fp16").validate()


def test_cli_precision_option():
    from sam2sapp.cli import build_parser

    parser = build_parser()
    base = ["track", "video.mp4", "--prompts", "p.json", "--output", "o.seg.nrrd"]
    assert parser.parse_args(base).precision == "auto"
    assert parser.parse_args(base + ["--precision", "fp32"]).precision == "fp32"
    # a bad value is refused in one line by sam2s.spec, as by every front end: test_spec.py


def test_server_model_spec_precision():
    pytest.importorskip("fastapi")
    from pydantic import ValidationError
    from sam2s.serving.server import ModelRequest

    assert ModelRequest(config="sam2.1_hiera_t").precision is None  # protocol-1 clients: the old behaviour
    assert ModelRequest(config="sam2.1_hiera_t", precision="bf16").precision == "bf16"
    with pytest.raises(ValidationError):
        ModelRequest(config="sam2.1_hiera_t", precision="fp16")


# ----------------------------------------------------------------------------- fidelity
@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.parametrize("config", ["sam2.1_hiera_t", "edgetam"])
def test_bf16_tracks_like_fp32_on_the_real_clip(shared_data, config):
    """30 frames of the real clip at 256 px (SAM 2.1 tiny at 512 px, measured by hand: IoU 0.9972
    at worst, mean 0.9986; 256 px keeps `make test-heavy` short), two objects (a click and a box
    on frame 0, from prompts.json): bf16 masks agree with fp32 ones, IoU >= 0.99 on every frame
    and object, the prompted frame 0 included, and >= 0.995 on average. The masks are informative
    (neither empty nor the whole frame). EdgeTAM (issue 24) passes since the heads keep float32
    weights (``SAM2Model.heads_dtype``): with bf16 heads its box mask on frame 0 had IoU 0.980."""
    from PIL import Image

    torch.set_num_threads(2)
    video = np.stack(
        [np.asarray(Image.open(shared_data / "frames" / f"{i:05d}.jpg").convert("RGB")) for i in range(30)]
    )
    prompts = json.loads((shared_data / "prompts.json").read_text())["objects"]
    points, box = prompts[0]["prompts"][0], prompts[1]["prompts"][0]["box"]
    fp32 = random_model(config, 256)
    bf16 = copy.deepcopy(fp32).set_precision("bf16")
    results = {}
    for name, model in (("fp32", fp32), ("bf16", bf16)):
        tracker = sam2s.VideoTracker(model, video)
        tracker.add_points(0, 1, points["points"], points["labels"])
        tracker.add_box(0, 2, box)
        results[name] = {t: logits > 0 for t, _, logits in tracker.propagate()}
    assert sorted(results["bf16"]) == list(range(30))
    ious = []
    for t in range(30):
        for k in range(2):
            a, b = results["fp32"][t][k], results["bf16"][t][k]
            assert 0.01 < a.mean() < 0.99, f"frame {t}, object {k + 1}: uninformative mask"
            union = (a | b).sum()
            ious.append(1.0 if union == 0 else (a & b).sum() / union)
            assert ious[-1] >= 0.99, f"frame {t}, object {k + 1}: IoU {ious[-1]:.4f}"
    print(
        f"{config} bf16 vs fp32: min IoU {min(ious):.4f}, mean {np.mean(ious):.4f} (frame 0: {ious[0]:.4f}, {ious[1]:.4f})"
    )
    assert np.mean(ious) >= 0.995, f"mean IoU {np.mean(ious):.4f}"
