"""Image encoder (Hiera trunk + FPN neck + sine position encoding) against Meta's reference.

Checks key-for-key weight compatibility for every config and fp32 numerical parity with
random weights (``sam2/modeling/backbones/{hieradet,image_encoder}.py``).
"""

from __future__ import annotations

import pytest
import torch
from sam2s.config import CONFIGS, ModelConfig, TrunkConfig, get_config
from sam2s.modeling import hiera
from sam2s.modeling.image_encoder import ImageEncoder
from sam2s.modeling.position_encoding import sine_position_encoding

pytest.importorskip("sam2")

ATOL = 1e-4


def _reference_encoder(name: str) -> torch.nn.Module:
    """Reference ``image_encoder`` built from Meta's YAML (it has no image-size parameter)."""
    import sam2  # noqa: F401  (initialises hydra's config module)
    from hydra import compose
    from hydra.utils import instantiate

    folder = "sam2.1" if name.startswith("sam2.1") else "sam2"
    cfg = compose(config_name=f"configs/{folder}/{name}.yaml")
    return instantiate(cfg.model.image_encoder, _recursive_=True).eval()


def _perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Add N(0, 0.02) noise to every parameter so that zero-initialised ones (pos_embed) matter."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _assert_outputs_close(ref: dict, ours: dict, atol: float = ATOL) -> None:
    assert set(ours) == set(ref)
    for key in ("backbone_fpn", "vision_pos_enc"):
        assert len(ours[key]) == len(ref[key]) == 3
        for r, o in zip(ref[key], ours[key]):
            assert o.shape == r.shape and o.dtype == r.dtype, key
            torch.testing.assert_close(o, r, rtol=0, atol=atol, msg=key)
    torch.testing.assert_close(ours["vision_features"], ref["vision_features"], rtol=0, atol=atol)


@pytest.mark.parametrize("name", [n for n, c in CONFIGS.items() if isinstance(c.trunk, TrunkConfig)])  # Meta's
def test_state_dict_matches_reference(name: str) -> None:
    ref_sd = _reference_encoder(name).state_dict()
    with torch.device("meta"):  # no weight init: only names and shapes matter here
        ours = ImageEncoder(get_config(name))
    ours_sd = ours.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in ref_sd.items()}
    ours.load_state_dict(ref_sd, strict=True, assign=True)
    assert ours.trunk.channel_list == list(CONFIGS[name].trunk.channel_list)


@pytest.mark.parametrize(
    ("name", "image_size", "batch"),
    [
        ("sam2.1_hiera_t", 512, 1),
        pytest.param("sam2.1_hiera_t", 1024, 1, marks=pytest.mark.slow),
        ("sam2.1_hiera_b+", 256, 1),
    ],
)
def test_forward_matches_reference(name: str, image_size: int, batch: int) -> None:
    ref = _perturb(_reference_encoder(name))
    ours = ImageEncoder(get_config(name, image_size)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, got = ref(x), ours(x)
    assert [t.shape[-1] for t in got["backbone_fpn"]] == [image_size // s for s in (4, 8, 16)]
    _assert_outputs_close(expected, got)


def test_forward_batch_non_square_small_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch of 2, 256 x 384 (padded windows in stages 3 and 4), one window row per band."""
    monkeypatch.setattr(hiera, "_BAND_ELEMENTS", 1)
    ref = _perturb(_reference_encoder("sam2_hiera_t"), seed=3)
    ours = ImageEncoder(get_config("sam2_hiera_t", 256)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 256, 384, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        _assert_outputs_close(ref(x), ours(x))


def test_toy_config_forward_and_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    """A toy trunk (odd background pos-embed grid, padded windows, global blocks) with autograd,
    computed in bands of one window row.

    (The reference cannot q-pool inside a global block, so the toy does not either.)
    """
    monkeypatch.setattr(hiera, "_BAND_ELEMENTS", 1)
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.backbones.image_encoder import FpnNeck
    from sam2.modeling.backbones.image_encoder import ImageEncoder as RefImageEncoder
    from sam2.modeling.position_encoding import PositionEmbeddingSine

    trunk = TrunkConfig(
        embed_dim=8,
        num_heads=1,
        stages=(1, 2, 2, 1),
        global_att_blocks=(2, 4),
        window_pos_embed_bkg_spatial_size=(3, 5),
        window_spec=(8, 4, 6, 2),
    )
    cfg = ModelConfig(name="toy", trunk=trunk, sam21=True, image_size=128, d_model=16)
    ref_trunk = Hiera(
        embed_dim=8,
        num_heads=1,
        stages=trunk.stages,
        global_att_blocks=trunk.global_att_blocks,
        window_pos_embed_bkg_spatial_size=trunk.window_pos_embed_bkg_spatial_size,
        window_spec=trunk.window_spec,
    )
    neck = FpnNeck(
        PositionEmbeddingSine(16),
        16,
        ref_trunk.channel_list,
        fpn_top_down_levels=[2, 3],
        fpn_interp_model="nearest",
    )
    ref = _perturb(RefImageEncoder(ref_trunk, neck, scalp=1), seed=5).eval()
    ours = ImageEncoder(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)

    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(4))
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected, got = ref(x_ref), ours(x_ours)
    _assert_outputs_close(expected, got)
    sum(t.square().sum() for t in expected["backbone_fpn"]).backward()
    sum(t.square().sum() for t in got["backbone_fpn"]).backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("batch", "height", "width", "feats"), [(1, 64, 64, 256), (2, 32, 48, 64), (3, 7, 5, 64)])
def test_sine_position_encoding_matches_reference(batch: int, height: int, width: int, feats: int) -> None:
    from sam2.modeling.position_encoding import PositionEmbeddingSine

    expected = PositionEmbeddingSine(feats)(torch.zeros(batch, 1, height, width))
    got = sine_position_encoding(batch, height, width, feats)
    assert got.shape == (batch, feats, height, width) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert sine_position_encoding(1, height, width, feats, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert len(PositionEmbeddingSine(feats).state_dict()) == 0  # so no state-dict entries on our side


def test_rejects_image_size_not_multiple_of_32() -> None:
    with torch.device("meta"):
        ours = ImageEncoder(get_config("sam2.1_hiera_t"))
    with pytest.raises(ValueError, match="multiples of 32"):
        ours(torch.zeros(1, 3, 100, 128, device="meta"))
