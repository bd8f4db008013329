"""SAM 2 mask decoder: two-way transformer, mask / IoU / object-score heads.

Follows the reference ``sam2/modeling/sam/mask_decoder.py`` and ``transformer.py``
(SAM, arXiv 2304.02643; SAM 2, arXiv 2408.00714), state-dict keys ``sam_mask_decoder.*``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .common import MLP, Attention, LayerNorm2d


class TwoWayBlock(nn.Module):
    """Self-attention of tokens, token->image and image->token cross-attention, token MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, skip_first_layer_pe: bool) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_dim, dim, 2)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate=2)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, queries + query_pe, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``image (B, C, H, W)``, ``image_pe`` same shape, ``tokens (B, N, C)`` ->
    ``(tokens (B, N, C), image tokens (B, H*W, C))``."""

    def __init__(self, depth: int = 2, dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TwoWayBlock(dim, num_heads, mlp_dim, i == 0) for i in range(depth))
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample_rate=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor):
        keys = image.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        queries = queries + self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries), keys


@dataclass
class DecoderOutput:
    """Raw decoder outputs for a batch of B prompts.

    masks: ``(B, 4, 4 feat, 4 feat)`` low-res logits; index 0 is the single-mask output, 1..3 the
    multimask outputs. iou: ``(B, 4)`` predicted IoU. tokens: ``(B, 4, C)`` mask output tokens.
    object_score: ``(B, 1)`` object-presence logit. All have the decoder's dtype: float32, also
    in a bf16 model (``SAM2Model.heads_dtype``).
    """

    masks: torch.Tensor
    iou: torch.Tensor
    tokens: torch.Tensor
    object_score: torch.Tensor


class MaskDecoder(nn.Module):
    """Predicts masks from image features and prompt tokens (SAM 2 variant with high-res skip
    features, sigmoid IoU head and an object-score MLP head)."""

    def __init__(self, dim: int = 256, num_multimask_outputs: int = 3) -> None:
        super().__init__()
        self.num_mask_tokens = num_multimask_outputs + 1
        self.transformer = TwoWayTransformer(dim=dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.obj_score_token = nn.Embedding(1, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, 256, self.num_mask_tokens, 3, sigmoid_output=True)
        self.pred_obj_score_head = MLP(dim, dim, 1, 3)

    def forward(
        self,
        image: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
    ) -> DecoderOutput:
        """Run the decoder.

        Args:
            image: ``(B, C, f, f)`` memory-conditioned features (stride 16).
            image_pe: ``(1, C, f, f)`` dense positional encoding.
            sparse: ``(B, N, C)`` prompt tokens; dense: ``(B, C, f, f)`` mask-prompt embedding.
            high_res: stride-4 ``(B, C/8, 4f, 4f)`` and stride-8 ``(B, C/4, 2f, 2f)`` features
                (already projected by ``conv_s0`` / ``conv_s1``).
        """
        b = sparse.shape[0]
        out_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        src = image + dense
        _, c, h, w = src.shape
        hs, src = self.transformer(src, image_pe.expand(b, -1, -1, -1), tokens)
        mask_tokens = hs[:, 2 : 2 + self.num_mask_tokens]
        src = src.transpose(1, 2).reshape(b, c, h, w)
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        feat_s0, feat_s1 = high_res
        up = act1(ln1(dc1(src) + feat_s1))
        up = act2(dc2(up) + feat_s0)
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        b, c, h, w = up.shape
        masks = (hyper @ up.view(b, c, h * w)).view(b, -1, h, w)
        return DecoderOutput(masks, self.iou_prediction_head(hs[:, 1]), mask_tokens, self.pred_obj_score_head(hs[:, 0]))
