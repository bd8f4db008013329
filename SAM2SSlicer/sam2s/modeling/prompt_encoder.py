"""SAM prompt encoder: points, box corners and mask prompts to decoder tokens.

Follows the reference ``sam2/modeling/sam/prompt_encoder.py`` (SAM, arXiv 2304.02643),
state-dict keys ``sam_prompt_encoder.*``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerNorm2d

# Point labels understood by the prompt encoder (reference convention).
LABEL_PAD, LABEL_NEGATIVE, LABEL_POSITIVE, LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT = -1, 0, 1, 2, 3


class RandomFourierEncoding(nn.Module):
    """Positional encoding with random spatial frequencies (SAM's ``PositionEmbeddingRandom``).

    The ``(2, num_feats)`` Gaussian matrix is a buffer that checkpoints carry. It stays float32
    in a bf16 model (``SAM2Model.set_precision``): the sine arguments reach ~20 rad, where bf16
    would be off by ~0.1 rad.
    """

    def __init__(self, num_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """``(..., 2)`` coordinates normalised to [0, 1] (x, y) -> ``(..., 2 * num_feats)`` float32."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([coords.sin(), coords.cos()], dim=-1)

    def grid(self, size: int) -> torch.Tensor:
        """Dense encoding of a ``size x size`` grid of cell centres: ``(1, C, size, size)``."""
        device = self.positional_encoding_gaussian_matrix.device
        centres = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
        y, x = torch.meshgrid(centres, centres, indexing="ij")
        return self.encode(torch.stack([x, y], dim=-1)).permute(2, 0, 1).unsqueeze(0)


class PromptEncoder(nn.Module):
    """Encodes point / box-corner prompts (sparse tokens) and mask prompts (dense embedding).

    Args:
        embed_dim: token width (256).
        image_size: model input side in pixels (points are given in this frame).
        feat_size: side of the stride-16 feature map (``image_size // 16``).
    """

    def __init__(self, embed_dim: int = 256, image_size: int = 1024, feat_size: int = 64, mask_in_chans: int = 16):
        super().__init__()
        self.embed_dim = embed_dim
        self.image_size = image_size
        self.feat_size = feat_size
        self.pe_layer = RandomFourierEncoding(embed_dim // 2)
        # 0: negative point, 1: positive point, 2: box top-left, 3: box bottom-right.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image tokens: ``(1, embed_dim, feat_size, feat_size)``,
        computed in float32 and returned in the model's dtype."""
        return self.pe_layer.grid(self.feat_size).to(self.no_mask_embed.weight.dtype)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sparse tokens for points.

        Args:
            coords: ``(B, N, 2)`` float32 pixel coordinates (x right, y down) in the
                ``image_size`` x ``image_size`` model input frame.
            labels: ``(B, N)`` int labels (-1 pad, 0 negative, 1 positive, 2/3 box corners).

        Returns:
            ``(B, N + 1, embed_dim)``: a padding point is appended, as the reference does
            when no box tensor is passed (SAM 2 always passes boxes as labelled points).
        """
        b = coords.shape[0]
        coords = torch.cat([coords + 0.5, coords.new_zeros(b, 1, 2)], dim=1) / self.image_size
        labels = torch.cat([labels, labels.new_full((b, 1), LABEL_PAD)], dim=1)
        emb = self.pe_layer.encode(coords.float()).to(self.not_a_point_embed.weight.dtype)
        lab = labels.unsqueeze(-1)
        emb = torch.where(lab == LABEL_PAD, self.not_a_point_embed.weight.expand_as(emb), emb)
        for value, table in enumerate(self.point_embeddings):
            emb = torch.where(lab == value, emb + table.weight, emb)
        return emb

    def embed_masks(self, masks: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Dense embedding ``(B, embed_dim, feat, feat)`` of ``(B, 1, 4 feat, 4 feat)`` mask logits, or
        the learned "no mask" embedding when ``masks`` is None."""
        if masks is not None:
            return self.mask_downscaling(masks.to(self.no_mask_embed.weight.dtype))
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, self.feat_size, self.feat_size)
