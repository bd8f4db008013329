"""RepViT-M1 image trunk of EdgeTAM (pure PyTorch: no timm, no torchvision).

RepViT (Wang et al., "RepViT: Revisiting Mobile CNN From ViT Perspective", CVPR 2024) is a
mobile CNN laid out like a ViT: a separate token mixer (a re-parameterisable 3x3 depthwise
conv) and channel mixer (a 1x1 conv MLP) per block. EdgeTAM (Zhou et al., "EdgeTAM: On-Device
Track Anything Model", CVPR 2025) uses its M1 variant as the image encoder's trunk, built by
``timm.create_model("repvit_m1.dist_in1k", features_only=True, out_indices=(0, 1, 2, 3))``.

Weight-compatible with timm's ``timm/models/repvit.py`` (timm 1.0.31, Apache-2.0, ``legacy=True``
as for ``repvit_m1``) in its ``features_only`` form: :attr:`RepViTTrunk.body` has the same
state-dict keys, and evaluation follows the same arithmetic (BatchNorm with running statistics,
exact-erf GELU). The train-time branches are not needed and the convs are not fused.

Layout, for an ``(B, 3, H, W)`` image (all activations ``(B, C, h, w)``):

* stem: 3x3 conv stride 2 (to 24 channels), GELU, 3x3 conv stride 2 (to 48): stride 4;
* stage 0: 2 blocks at 48 channels (no downsampling);
* stages 1-3: a downsample (a block without SE, a 3x3 depthwise conv stride 2, a 1x1 conv to
  the new width, a residual MLP), then 2 / 14 / 2 blocks at 96 / 192 / 384 channels;
* blocks alternate squeeze-excitation on (even index in the stage) and off (odd index).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

M1_DIMS = (48, 96, 192, 384)
M1_DEPTHS = (2, 2, 14, 2)
MLP_RATIO = 2


class _ConvBN(nn.Module):
    """Bias-free conv then BatchNorm with running statistics (timm ``ConvNorm``: ``c``, ``bn``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn  # always the eval-mode formula, whatever the module's training flag
        return F.batch_norm(self.c(x), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


class _TokenMixer(nn.Module):
    """RepVGG-style depthwise mixer: ``dw3x3(x) + dw1x1(x) + x`` (timm ``RepVggDw``, legacy)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = _ConvBN(dim, dim, 3, groups=dim)
        self.conv1 = _ConvBN(dim, dim, 1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.conv1(x) + x


class _SqueezeExcite(nn.Module):
    """Channel gate ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``, hidden width ``dim / 4`` rounded
    to a multiple of 8 (timm ``SEModule`` with ``rd_ratio=0.25``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = max(8, int(dim * 0.25 + 4) // 8 * 8)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))).sigmoid()


class _Mlp(nn.Module):
    """1x1 conv-BN to ``ratio * dim``, GELU, 1x1 conv-BN back to ``dim`` (timm ``RepVitMlp``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = _ConvBN(dim, dim * MLP_RATIO)
        self.conv2 = _ConvBN(dim * MLP_RATIO, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.gelu(self.conv1(x)))


class _Block(nn.Module):
    """Token mixer, optional SE, then a residual channel-mixer MLP (timm ``RepViTBlock``)."""

    def __init__(self, dim: int, use_se: bool) -> None:
        super().__init__()
        self.token_mixer = _TokenMixer(dim)
        self.se = _SqueezeExcite(dim) if use_se else nn.Identity()
        self.channel_mixer = _Mlp(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.token_mixer(x))
        return x + self.channel_mixer(x)


class _Downsample(nn.Module):
    """Halve the resolution and change the width (timm ``RepVitDownsample``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.pre_block = _Block(cin, use_se=False)
        self.spatial_downsample = _ConvBN(cin, cin, 3, stride=2, groups=cin)
        self.channel_downsample = _ConvBN(cin, cout)
        self.ffn = _Mlp(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel_downsample(self.spatial_downsample(self.pre_block(x)))
        return x + self.ffn(x)


class _Stage(nn.Module):
    """Optional downsample, then ``depth`` blocks, SE on the even ones (timm ``RepVitStage``)."""

    def __init__(self, cin: int, cout: int, depth: int) -> None:
        super().__init__()
        self.downsample = _Downsample(cin, cout) if cin != cout else nn.Identity()
        self.blocks = nn.Sequential(*(_Block(cout, use_se=i % 2 == 0) for i in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class _Stem(nn.Module):
    """Two 3x3 stride-2 conv-BNs with a GELU between (timm ``RepVitStem``): stride 4."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _ConvBN(cin, cout // 2, 3, stride=2)
        self.conv2 = _ConvBN(cout // 2, cout, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.gelu(self.conv1(x)))


class RepViTTrunk(nn.Module):
    """RepViT trunk returning one feature map per stage, finest first (EdgeTAM's ``TimmBackbone``).

    Args:
        dims: Output channels per stage (RepViT-M1: ``(48, 96, 192, 384)``); consecutive
            stages must have different widths (each stage after the first downsamples).
        depths: Blocks per stage (RepViT-M1: ``(2, 2, 14, 2)``), same length as ``dims``.

    Attributes:
        body: ``nn.ModuleDict`` with ``stem``, ``stages_0``, ``stages_1``, ...; its state-dict
            keys equal those of timm's ``features_only`` model, so EdgeTAM checkpoints'
            ``image_encoder.trunk.body.*`` entries load into this module with ``strict=True``.
        channel_list: Output channels per stage, coarsest first (the neck's
            ``backbone_channel_list``): ``(384, 192, 96, 48)`` for M1.

    Raises:
        ValueError: ``dims`` and ``depths`` differ in length or are empty, or two consecutive
            ``dims`` are equal.

    Inference only: BatchNorm always uses its running statistics (the module's ``training``
    flag is ignored), so ``train()`` does not change the outputs.
    """

    def __init__(self, dims: tuple[int, ...] = M1_DIMS, depths: tuple[int, ...] = M1_DEPTHS) -> None:
        super().__init__()
        if not dims or len(dims) != len(depths):
            raise ValueError(f"dims {dims} and depths {depths} must be non-empty and of equal length")
        if any(a == b for a, b in zip(dims, dims[1:])):
            raise ValueError(f"consecutive stage widths must differ (each stage downsamples): {dims}")
        modules = {"stem": _Stem(3, dims[0])}
        for i, (cin, cout, depth) in enumerate(zip((dims[0],) + tuple(dims[:-1]), dims, depths)):
            modules[f"stages_{i}"] = _Stage(cin, cout, depth)
        self.body = nn.ModuleDict(modules)
        self.channel_list = tuple(reversed(dims))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of every stage.

        Args:
            x: ``(B, 3, H, W)`` image batch of the weights' floating dtype (float32 for a
                checkpoint as loaded), normalised as the checkpoint expects. ``H, W`` multiples
                of 32 give the sizes below exactly; other sizes work (each stride-2 conv gives
                ``ceil(n / 2)``).

        Returns:
            List of ``len(dims)`` tensors, finest first, dtype of ``x``: for M1 ``(B, 48, H/4,
            W/4)``, ``(B, 96, H/8, W/8)``, ``(B, 192, H/16, W/16)``, ``(B, 384, H/32, W/32)``.

        Raises:
            ValueError: ``x`` is not 4-D with 3 channels.
            RuntimeError: from PyTorch, when ``x``'s dtype or device differs from the weights'.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) image batch, got shape {tuple(x.shape)}")
        x = self.body["stem"](x)
        features = []
        for i in range(len(self.channel_list)):
            x = self.body[f"stages_{i}"](x)
            features.append(x)
        return features
