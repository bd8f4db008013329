"""Model configurations, named like Meta's config stems (``sam2.1_hiera_t`` ...) and ``edgetam``.

Every SAM 2 / 2.1 value comes from the YAML files of Meta's reference (PyPI ``sam2`` 1.1.0,
``sam2/configs/sam2/*.yaml`` and ``sam2/configs/sam2.1/*.yaml``, plus the defaults of
``sam2/modeling/backbones/hieradet.py::Hiera`` for values a YAML leaves out).
The sizes differ only in the Hiera trunk; SAM 2.1 adds the spatial "no object"
embedding and the temporal encoding of object pointers.

``edgetam`` (Zhou et al., "EdgeTAM: On-Device Track Anything Model", CVPR 2025) takes its values
from ``sam2/configs/edgetam.yaml`` of its reference (PyPI ``edgetam-dimos`` 1.0.1): SAM 2.0 heads
and flags, a RepViT-M1 trunk (:class:`RepViTConfig`), a 2-D spatial perceiver that compresses each
memory frame (:class:`PerceiverConfig`) and 2 memory-attention layers whose cross-attention is
RoPE v2 (queries on the feature grid, keys on the perceiver's 16 x 16 latent grid).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .spec import check_image_size


@dataclass(frozen=True)
class TrunkConfig:
    """Hiera trunk hyper-parameters (arXiv 2306.00989; reference ``hieradet.py``)."""

    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (2, 3, 16, 3)
    global_att_blocks: tuple[int, ...] = (12, 16, 20)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    q_pool: int = 3
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Output channels per stage, coarsest first (the neck's ``backbone_channel_list``)."""
        n = len(self.stages)
        return tuple(int(self.embed_dim * self.dim_mul**i) for i in reversed(range(n)))


@dataclass(frozen=True)
class RepViTConfig:
    """RepViT-M1 trunk of EdgeTAM (timm ``repvit_m1.dist_in1k`` with ``features_only``; Wang et
    al., "RepViT: Revisiting Mobile CNN From ViT Perspective", CVPR 2024)."""

    name: str = "repvit_m1"
    channel_list: tuple[int, ...] = (384, 192, 96, 48)  # coarsest first, the neck's backbone_channel_list


@dataclass(frozen=True)
class PerceiverConfig:
    """EdgeTAM's spatial perceiver (``spatial_perceiver`` of ``edgetam.yaml``): each memory frame's
    ``(64, f, f)`` features become ``num_latents`` global plus ``num_latents_2d`` windowed latents."""

    depth: int = 2
    dim: int = 64
    dim_head: int = 64
    heads: int = 1
    ff_mult: int = 4
    num_latents: int = 256
    num_latents_2d: int = 256


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes a SAM 2 / 2.1 model's architecture and inference behaviour."""

    name: str
    trunk: TrunkConfig | RepViTConfig
    sam21: bool  # SAM 2.1 flags: no_obj_embed_spatial, add/proj/signed tpos enc of object pointers
    perceiver: PerceiverConfig | None = None  # EdgeTAM: memory frames pass through a spatial perceiver
    image_size: int = 1024
    d_model: int = 256  # hidden dim of neck, memory attention and SAM heads
    mem_dim: int = 64  # memory encoder output channels
    num_maskmem: int = 7  # 1 conditioning slot + 6 recent frames
    max_obj_ptrs_in_encoder: int = 16
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    memory_attention_layers: int = 4
    # Video-predictor post-processing that build_sam2_video_predictor turns on
    # (reference sam2/build_sam.py, hydra_overrides_extra).
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    binarize_mask_from_pts_for_mem_enc: bool = True

    @property
    def feat_size(self) -> int:
        """Side of the stride-16 feature map (64 at 1024 px)."""
        return self.image_size // 16

    def with_image_size(self, image_size: int) -> ModelConfig:
        """Same architecture at another input size (a multiple of 32, see ``build_model``)."""
        return replace(self, image_size=image_size)


_T = TrunkConfig(
    embed_dim=96,
    num_heads=1,
    stages=(1, 2, 7, 2),
    global_att_blocks=(5, 7, 9),
    window_pos_embed_bkg_spatial_size=(7, 7),
)
_S = TrunkConfig(
    embed_dim=96,
    num_heads=1,
    stages=(1, 2, 11, 2),
    global_att_blocks=(7, 10, 13),
    window_pos_embed_bkg_spatial_size=(7, 7),
)
_BP = TrunkConfig(embed_dim=112, num_heads=2)
_L = TrunkConfig(
    embed_dim=144,
    num_heads=2,
    stages=(2, 6, 36, 4),
    global_att_blocks=(23, 33, 43),
    window_pos_embed_bkg_spatial_size=(7, 7),
    window_spec=(8, 4, 16, 8),
)

CONFIGS: dict[str, ModelConfig] = {}
for _size, _trunk in (("t", _T), ("s", _S), ("b+", _BP), ("l", _L)):
    for _version in ("sam2", "sam2.1"):
        _name = f"{_version}_hiera_{_size}"
        CONFIGS[_name] = ModelConfig(name=_name, trunk=_trunk, sam21=_version == "sam2.1")
CONFIGS["edgetam"] = ModelConfig(
    name="edgetam", trunk=RepViTConfig(), sam21=False, perceiver=PerceiverConfig(), memory_attention_layers=2
)


def get_config(name: str, image_size: int = 1024) -> ModelConfig:
    """Return the configuration called ``name`` at ``image_size`` pixels.

    Raises:
        ValueError: unknown name (the message lists the known ones) or an image size that
            ``sam2s.spec.check_image_size`` refuses (a multiple of 32 from 64 to 4096).
    """
    stem = name.removesuffix(".yaml").rsplit("/", 1)[-1]
    if stem not in CONFIGS:
        raise ValueError(f"Unknown model config {name!r}; choose one of: {', '.join(CONFIGS)}.")
    if isinstance(image_size, str):
        raise ValueError(f"image size {image_size!r:.40}: give an integer")
    return CONFIGS[stem].with_image_size(check_image_size(image_size))
