"""SAM 2 image encoder: Hiera trunk + FPN neck (reference ``sam2/modeling/backbones/
image_encoder.py``, classes ``ImageEncoder`` and ``FpnNeck``; FPN: arXiv 1612.03144).

State-dict keys match the reference ``SAM2Base.image_encoder`` exactly: ``trunk.*`` (see
:mod:`sam2s.modeling.hiera`) and ``neck.convs.{i}.conv.{weight,bias}``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig, TrunkConfig
from .hiera import Hiera
from .position_encoding import sine_position_encoding
from .repvit import RepViTTrunk


class FpnNeck(nn.Module):
    """Feature pyramid neck without output convs (reference ``FpnNeck``, ``image_encoder.py``).

    Each trunk level gets a 1x1 lateral conv to ``d_model`` channels; ``convs[j]`` handles
    ``backbone_channel_list[j]`` (coarsest level first, like the reference). Levels listed in
    ``fpn_top_down_levels`` (indices into the finest-first trunk outputs) also add the coarser
    fused map, upsampled 2x with nearest interpolation in float32.
    """

    def __init__(
        self,
        d_model: int,
        backbone_channel_list: Sequence[int],
        fpn_top_down_levels: Sequence[int] = (2, 3),
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        self.fpn_top_down_levels = list(fpn_top_down_levels)
        self.convs = nn.ModuleList(  # keys: convs.{j}.conv.{weight,bias}
            nn.Sequential(OrderedDict(conv=nn.Conv2d(dim, d_model, kernel_size=1)))
            for dim in self.backbone_channel_list
        )

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Fuse trunk features.

        Args:
            xs: trunk outputs, finest first, ``xs[i]`` of shape ``(B, C_i, H_i, W_i)``.

        Returns:
            ``d_model``-channel maps ``(B, d_model, H_i, W_i)``, finest first. Top-down levels
            come out in float32 (the reference upcasts before interpolating), others in the
            input dtype.
        """
        n = len(self.convs) - 1
        assert len(xs) == n + 1
        out: list[torch.Tensor] = [None] * (n + 1)  # type: ignore[list-item]
        prev = None
        for i in range(n, -1, -1):  # coarse to fine
            # The 1x1 conv as a GEMM over channels-last memory (what the trunk returns): same
            # numbers, no layout conversion, fast on CPU with any thread count.
            conv = self.convs[n - i].conv
            lateral = F.linear(xs[i].permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias)
            lateral = lateral.permute(0, 3, 1, 2)
            if i in self.fpn_top_down_levels and prev is not None:
                prev = lateral + F.interpolate(prev.float(), scale_factor=2.0, mode="nearest")
            else:
                prev = lateral
            out[i] = prev
        return out


class ImageEncoder(nn.Module):
    """SAM 2 / 2.1 image encoder (reference ``ImageEncoder`` with ``scalp=1``).

    ``trunk`` is a :class:`~sam2s.modeling.hiera.Hiera` (EdgeTAM: a
    :class:`~sam2s.modeling.repvit.RepViTTrunk`), ``neck`` an :class:`FpnNeck` with
    ``d_model = cfg.d_model`` (256). The coarsest (stride-32) level is dropped after the
    top-down fusion. Position encodings are :func:`sine_position_encoding` with ``d_model``
    channels (no parameters, so no state-dict entries, as in the reference).

    Forward: ``(B, 3, S, S)`` normalised float image, ``S`` a multiple of 32 (1024 for Meta's
    weights) -> dict with

    - ``"backbone_fpn"``: ``[(B, 256, S/4, S/4), (B, 256, S/8, S/8), (B, 256, S/16, S/16)]``
    - ``"vision_pos_enc"``: the matching ``(B, 256, h, w)`` sine encodings
    - ``"vision_features"``: ``backbone_fpn[-1]``
    """

    def __init__(self, cfg: ModelConfig, scalp: int = 1) -> None:
        super().__init__()
        self.trunk = Hiera(cfg.trunk) if isinstance(cfg.trunk, TrunkConfig) else RepViTTrunk()  # EdgeTAM: RepViT-M1
        self.neck = FpnNeck(cfg.d_model, tuple(cfg.trunk.channel_list), fpn_top_down_levels=(2, 3))
        self.scalp = scalp
        assert list(self.trunk.channel_list) == self.neck.backbone_channel_list

    def forward(self, sample: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        features = self.neck(self.trunk(sample))
        if self.scalp > 0:
            features = features[: -self.scalp]
        pos = [
            sine_position_encoding(
                f.shape[0], f.shape[2], f.shape[3], self.neck.d_model, device=f.device, dtype=f.dtype
            )
            for f in features
        ]
        return {"vision_features": features[-1], "vision_pos_enc": pos, "backbone_fpn": features}


__all__ = ["FpnNeck", "ImageEncoder"]
