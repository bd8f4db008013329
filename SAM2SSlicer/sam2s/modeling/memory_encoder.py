"""Memory encoder: fuses a frame's features with its predicted mask into a 64-channel memory.

Follows the reference ``sam2/modeling/memory_encoder.py`` (mask down-sampler, ConvNeXt fuser,
arXiv 2201.03545), state-dict keys ``memory_encoder.*``.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import LayerNorm2d, Linear
from .position_encoding import sine_position_encoding


class CXBlock(nn.Module):
    """ConvNeXt block: depth-wise 7x7 conv, LayerNorm, 4x MLP with GELU, layer scale, residual."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = Linear(dim, 4 * dim)
        self.pwconv2 = Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        h = self.gamma * self.pwconv2(self.pwconv1(h, "gelu"))
        return x + h.permute(0, 3, 1, 2)


class MemoryEncoder(nn.Module):
    """``pix_feat (B, 256, f, f)`` + ``mask (B, 1, 16f, 16f)`` (already scaled sigmoid) ->
    ``(features (B, 64, f, f), sine position encoding (B, 64, f, f))``."""

    def __init__(self, in_dim: int = 256, out_dim: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        chans = 1
        for _ in range(4):  # kernel 3, stride 2, padding 1: total stride 16, channels x4 each
            layers += [nn.Conv2d(chans, chans * 4, 3, 2, 1), LayerNorm2d(chans * 4), nn.GELU()]
            chans *= 4
        layers.append(nn.Conv2d(chans, in_dim, 1))
        self.mask_downsampler = nn.Module()
        self.mask_downsampler.encoder = nn.Sequential(*layers)
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, 1)
        self.fuser = nn.Module()
        self.fuser.layers = nn.ModuleList([CXBlock(in_dim), CXBlock(in_dim)])
        self.out_proj = nn.Conv2d(in_dim, out_dim, 1)
        self.out_dim = out_dim

    def forward(self, pix_feat: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler.encoder(mask)
        for block in self.fuser.layers:
            x = block(x)
        x = self.out_proj(x)
        b, _, h, w = x.shape
        pos = sine_position_encoding(b, h, w, self.out_dim, device=x.device, dtype=x.dtype)
        return x, pos
