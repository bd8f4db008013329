"""The SAM 2 / 2.1 model: parameters with Meta's state-dict layout and the per-frame steps.

The steps mirror the reference ``sam2/modeling/sam2_base.py`` (``_forward_sam_heads``,
``_use_mask_as_output``, ``_prepare_memory_conditioned_features``, ``_encode_new_memory``),
rewritten to process all objects of a frame as one batch. Session logic (which memories a
frame attends to) lives in ``sam2s.tracker``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .common import MLP
from .image_encoder import ImageEncoder
from .mask_decoder import MaskDecoder
from .memory_attention import MemoryAttention
from .memory_encoder import MemoryEncoder
from .perceiver import PerceiverResampler
from .prompt_encoder import PromptEncoder
from .rope_attention_v2 import RoPEAttentionV2

NO_OBJ_SCORE = -1024.0  # logit written where the object is predicted absent (reference value)
PRECISIONS = ("fp32", "bf16")  # resolved precisions of a model (``"auto"`` is resolved by sam2s.build)


@dataclass
class FrameFeatures:
    """Image-encoder output for one frame (batch 1), ready for the heads.

    feat: ``(1, 256, f, f)`` stride-16 features; pos: its sine encoding, same shape;
    high_res: ``((1, 32, 4f, 4f), (1, 64, 2f, 2f))`` stride-4 / stride-8 features already
    projected by the decoder's ``conv_s0`` / ``conv_s1``. f = image_size / 16.
    """

    feat: torch.Tensor
    pos: torch.Tensor
    high_res: tuple[torch.Tensor, torch.Tensor]

    def expand(self, n: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Features and high-res features broadcast to a batch of ``n`` objects (no copy)."""
        return self.feat.expand(n, -1, -1, -1), tuple(h.expand(n, -1, -1, -1) for h in self.high_res)


@dataclass
class HeadOutput:
    """Per-object result of the SAM heads on one frame (batch B).

    low_res: ``(B, 1, 4f, 4f)`` float32 logits of the chosen mask (``NO_OBJ_SCORE`` where the
    object is judged absent); iou: ``(B, M)`` predicted IoU of the M candidate masks;
    obj_ptr: ``(B, 256)`` object pointer; object_score: ``(B, 1)`` presence logit (> 0 = present).
    """

    low_res: torch.Tensor
    iou: torch.Tensor
    obj_ptr: torch.Tensor
    object_score: torch.Tensor


class SAM2Model(nn.Module):
    """SAM 2 / 2.1 with Meta's parameter names (``image_encoder.*``, ``memory_attention.*``,
    ``memory_encoder.*``, ``sam_prompt_encoder.*``, ``sam_mask_decoder.*``, ``obj_ptr_proj.*``,
    ``obj_ptr_tpos_proj.*`` (2.1), ``maskmem_tpos_enc``, ``no_mem_embed``, ``no_mem_pos_enc``,
    ``no_obj_ptr``, ``no_obj_embed_spatial`` (2.1), ``mask_downsample.*``).

    Precision (``precision``, set by ``set_precision``; ``sam2s.build_model`` chooses it):

    - ``"fp32"`` (the default of a new model): float32 everywhere, Meta's reference numerics.
    - ``"bf16"`` on CPU / MPS: bfloat16 weights and activations in the image encoder, memory
      attention and memory encoder, so that their matrix products run as bf16 kernels (native on
      CPUs with AVX512-BF16 / AMX). Kept in float32 there: LayerNorm2d (``common.py``), the sine
      and RoPE tables, the Hiera position-embedding resize; ``nn.LayerNorm`` and
      ``scaled_dot_product_attention`` accumulate in float32 inside PyTorch's bf16 CPU kernels.
      The heads (``sam_prompt_encoder``, and ``sam_mask_decoder`` but its ``conv_s0`` /
      ``conv_s1``, which project each frame's features once in ``encode_image``) keep their
      float32 weights and run in float32 (``heads_dtype``): they decide where the mask boundary
      (logit 0) lies, they cost 2-3% of a tracked frame (87 against 55 ms at 1024 px for 2
      objects on our AVX512-BF16 CPU without AMX), and in bf16 they flipped 2% of EdgeTAM's box
      mask on its prompted frame (IoU 0.980 against fp32 in
      ``test_precision.test_bf16_tracks_like_fp32_on_the_real_clip``; 0.996 with float32 heads).
      Inputs are cast to the model dtype (the heads' for the heads) at the methods below
      (``encode_image``, ``forward_heads``, ``add_no_memory``, ``mask_as_output``,
      ``condition_on_memory``, ``encode_memory``, ``pointer_pos_enc``); ``HeadOutput.low_res``,
      ``iou`` and ``object_score`` are float32, ``obj_ptr`` has the model dtype.
    - ``"bf16"`` on CUDA: float32 weights and ``torch.autocast("cuda", torch.bfloat16)`` around
      the steps (``autocast()``), as Meta's ``sam2`` does (``tools/vos_inference.py``, the
      video-predictor notebook, ``demo/backend/server/inference/predictor.py``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c, m = config.d_model, config.mem_dim
        self.image_encoder = ImageEncoder(config)
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        perceiver = config.perceiver
        cross_attention = None
        if perceiver is not None:  # EdgeTAM: RoPE v2 over each memory frame's perceiver latents
            side = int(round(perceiver.num_latents_2d**0.5))
            tokens = perceiver.num_latents + perceiver.num_latents_2d

            def cross_attention() -> nn.Module:
                return RoPEAttentionV2(c, kv_in_dim=m, k_sizes=(side, side), tokens_per_frame=tokens)

        self.memory_attention = MemoryAttention(c, m, config.memory_attention_layers, cross_attention)
        self.memory_encoder = MemoryEncoder(c, m)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(config.num_maskmem, 1, 1, m))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, c))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, c))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, c))
        self.sam_prompt_encoder = PromptEncoder(c, config.image_size, config.feat_size)
        self.sam_mask_decoder = MaskDecoder(c)
        self.obj_ptr_proj = MLP(c, c, c, 3)
        if config.sam21:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, m))
            self.obj_ptr_tpos_proj = nn.Linear(c, m)
        if perceiver is not None:  # EdgeTAM
            self.spatial_perceiver = PerceiverResampler(
                dim=perceiver.dim,
                depth=perceiver.depth,
                dim_head=perceiver.dim_head,
                heads=perceiver.heads,
                num_latents=perceiver.num_latents,
                num_latents_2d=perceiver.num_latents_2d,
                ff_mult=perceiver.ff_mult,
            )
        self.precision = "fp32"

    @property
    def device(self) -> torch.device:
        return self.no_mem_embed.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the weights and activations: float32, or bfloat16 for a bf16 model off CUDA."""
        return self.no_mem_embed.dtype

    @property
    def heads_dtype(self) -> torch.dtype:
        """Dtype of the prompt encoder and mask decoder: float32 in every precision (see the
        class docstring)."""
        return self.sam_mask_decoder.iou_token.weight.dtype

    def set_precision(self, precision: str) -> SAM2Model:
        """Switch to ``"fp32"`` or ``"bf16"`` (see the class docstring) in place; returns self.

        Call it after moving the model to its device: on CUDA ``"bf16"`` keeps float32 weights
        (autocast), elsewhere it casts the weights to bfloat16 (except the heads, kept float32:
        see the class docstring).

        Raises:
            ValueError: unknown precision, or ``"fp32"`` asked of a model whose weights are
                already bfloat16 (its float32 weights are gone: build the model again).
        """
        if precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {precision!r}; use one of {PRECISIONS} (or 'auto' in build_model).")
        if precision == "fp32":
            if self.dtype != torch.float32:
                raise ValueError(
                    "This model has bfloat16 weights; its float32 weights are gone. Build it again with "
                    "precision='fp32' (sam2s.build_model(..., precision='fp32'))."
                )
        elif self.device.type != "cuda":
            # The heads keep their float32 weights as loaded (a round trip through bf16 would
            # round them: that alone flipped 1% of EdgeTAM's box mask).
            heads = (self.sam_prompt_encoder, self.sam_mask_decoder)
            for child in self.children():
                if all(child is not h for h in heads):
                    child.to(torch.bfloat16)
            for param in self.parameters(recurse=False):
                param.data = param.data.to(torch.bfloat16)
            self.sam_mask_decoder.conv_s0.to(torch.bfloat16)
            self.sam_mask_decoder.conv_s1.to(torch.bfloat16)
        self.precision = precision
        return self

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast("cuda", torch.bfloat16)`` for a bf16 model on CUDA (Meta's way), else a
        no-op context (float32 models, and bf16 models off CUDA, whose weights are bf16)."""
        if self.precision == "bf16" and self.device.type == "cuda" and self.dtype == torch.float32:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ----------------------------------------------------------------------------- image
    def encode_image(self, image: torch.Tensor) -> FrameFeatures:
        """Encode one preprocessed frame ``(1, 3, S, S)`` (ImageNet-normalised, any float dtype:
        cast to the model's) into ``FrameFeatures`` of the model's dtype."""
        dt = self.dtype
        out = self.image_encoder(image.to(dt))
        s0, s1, feat = out["backbone_fpn"]
        dec = self.sam_mask_decoder
        pos = out["vision_pos_enc"][-1]
        return FrameFeatures(feat.to(dt), pos.to(dt), (dec.conv_s0(s0.to(dt)), dec.conv_s1(s1.to(dt))))

    # ----------------------------------------------------------------------------- heads
    def forward_heads(
        self,
        feat: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask_input: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> HeadOutput:
        """Prompt encoder + mask decoder + object pointer (reference ``_forward_sam_heads``).

        Args:
            feat: ``(B, 256, f, f)`` memory-conditioned features; high_res as in ``FrameFeatures``.
            points: ``(coords (B, N, 2) float32 model-input pixels, labels (B, N) int)`` or None.
            mask_input: ``(B, 1, 4f, 4f)`` mask logits prompt, or None.
            multimask: output the best of 3 candidate masks (else single mask with the
                stability fallback of ``dynamic_multimask_via_stability``).
        """
        cfg = self.config
        b = feat.shape[0]
        dt, hd = self.dtype, self.heads_dtype
        feat, high_res = feat.to(hd), tuple(h.to(hd) for h in high_res)
        if points is None:
            points = (feat.new_zeros(b, 1, 2), torch.full((b, 1), -1, dtype=torch.int32, device=feat.device))
        sparse = self.sam_prompt_encoder.embed_points(*points)
        dense = self.sam_prompt_encoder.embed_masks(mask_input, b)
        out = self.sam_mask_decoder(feat, self.sam_prompt_encoder.dense_pe(), sparse, dense, high_res)
        if multimask:
            masks, iou, tokens = out.masks[:, 1:], out.iou[:, 1:], out.tokens[:, 1:]
        else:
            masks, iou = out.masks[:, :1], out.iou[:, :1]
            tokens = out.tokens[:, :1]
            if cfg.dynamic_multimask_via_stability:
                masks, iou = _stability_fallback(out.masks, out.iou, cfg)
        present = out.object_score > 0
        masks = torch.where(present[:, None, None], masks, NO_OBJ_SCORE).float()
        if multimask:
            best = iou.argmax(dim=-1)
            rows = torch.arange(b, device=feat.device)
            low_res, token = masks[rows, best].unsqueeze(1), tokens[rows, best]
        else:
            low_res, token = masks, tokens[:, 0]
        obj_ptr = self.obj_ptr_proj(token.to(dt))
        lam = present.to(dt)
        obj_ptr = lam * obj_ptr + (1 - lam) * self.no_obj_ptr
        return HeadOutput(low_res, iou, obj_ptr, out.object_score)

    def mask_as_output(self, feat: torch.Tensor, high_res, mask: torch.Tensor) -> HeadOutput:
        """A binary mask prompt ``(B, 1, S, S)`` float {0, 1} becomes the output directly
        (reference ``_use_mask_as_output``: logits +-10, pointer from the heads on raw features)."""
        mask = mask.float()
        high = mask * 20.0 - 10.0
        size = (high.shape[-2] // 4, high.shape[-1] // 4)
        low_res = F.interpolate(high, size=size, mode="bilinear", align_corners=False, antialias=True)
        ptr = self.forward_heads(feat, high_res, mask_input=self.mask_downsample(mask.to(self.dtype))).obj_ptr
        lam = torch.any(mask.flatten(1) > 0.0, dim=1, keepdim=True).float()
        obj_ptr = lam * ptr + (1 - lam) * self.no_obj_ptr
        return HeadOutput(low_res, mask.new_ones(mask.shape[0], 1), obj_ptr, 20.0 * lam - 10.0)

    # ---------------------------------------------------------------------------- memory
    def condition_on_memory(
        self,
        feat: torch.Tensor,
        pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_ptr_tokens: int,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Memory attention: ``feat``, ``pos`` ``(B, 256, f, f)``; memory ``(B, M, 64)`` -> ``(B, 256, f, f)``."""
        b, c, h, w = feat.shape
        dt = self.dtype
        feat, pos, memory, memory_pos = feat.to(dt), pos.to(dt), memory.to(dt), memory_pos.to(dt)
        tokens = feat.flatten(2).transpose(1, 2)
        tokens_pos = pos.flatten(2).transpose(1, 2)
        out = self.memory_attention(tokens, tokens_pos, memory, memory_pos, num_ptr_tokens, attn_mask)
        return out.transpose(1, 2).reshape(b, c, h, w)

    def add_no_memory(self, feat: torch.Tensor) -> torch.Tensor:
        """Features of a first conditioning frame: ``feat + no_mem_embed`` (``directly_add_no_mem_embed``),
        ``(B, 256, f, f)``, in the heads' dtype (float32), which take them: a bf16 sum would round
        the features by up to 2**-9 of their size before the mask decoder."""
        hd = self.heads_dtype
        return feat.to(hd) + self.no_mem_embed.reshape(1, -1, 1, 1).to(hd)

    def encode_memory(
        self, feat: torch.Tensor, high_res_masks: torch.Tensor, object_score: torch.Tensor, binarize: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory of a frame (reference ``_encode_new_memory``).

        Args:
            feat: ``(B, 256, f, f)`` raw image features; high_res_masks: ``(B, 1, S, S)`` logits;
            object_score: ``(B, 1)``; binarize: threshold the mask at 0 instead of a sigmoid
            (masks from clicks, ``binarize_mask_from_pts_for_mem_enc``).

        Returns:
            ``(features (B, 64, f, f), position encoding (B, 64, f, f))``, in the model's dtype
            (the mask's sigmoid is taken in float32, then cast). EdgeTAM: the spatial
            perceiver's ``(B, N, 64)`` latents and their position encoding (N = 512), as the
            reference's ``_encode_new_memory`` gives them (edgetam-dimos ``sam2_base.py``).
        """
        cfg = self.config
        high_res_masks = high_res_masks.float()
        mask = (high_res_masks > 0).float() if binarize else torch.sigmoid(high_res_masks)
        mask = mask * cfg.sigmoid_scale_for_mem_enc + cfg.sigmoid_bias_for_mem_enc
        mem, mem_pos = self.memory_encoder(feat.to(self.dtype), mask.to(self.dtype))
        if self.config.sam21:
            absent = 1 - (object_score > 0).float()
            mem = mem + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        if self.config.perceiver is not None:
            mem, mem_pos = self.spatial_perceiver(mem, mem_pos)
        return mem, mem_pos

    def memory_tpos(self, slot: int) -> torch.Tensor:
        """Temporal embedding ``(1, 1, 64)`` of a memory slot (``sam2s.memory.MemorySelection``).

        Slot 0 (conditioning) and slots 1..6 index ``maskmem_tpos_enc`` as the reference does;
        slot -1 (a DiveMem long-term memory) uses ``long_term_tpos_enc`` when the checkpoint
        carries one (SAM2S), else the conditioning slot, the training-free rule of ReSurgSAM2.
        """
        n = self.config.num_maskmem
        if slot < 0:
            long_term = getattr(self, "long_term_tpos_enc", None)
            return long_term.reshape(1, 1, -1) if long_term is not None else self.maskmem_tpos_enc[n - 1, 0]
        return self.maskmem_tpos_enc[n - slot - 1, 0]

    def pointer_pos_enc(self, rel_pos: torch.Tensor, max_rel: int) -> torch.Tensor:
        """Temporal encoding ``(P, 64)`` of object pointers at relative frame distances ``rel_pos (P,)``.

        SAM 2.1: 1-D sine encoding of ``rel_pos / max_rel`` (256-d) projected by
        ``obj_ptr_tpos_proj``; SAM 2.0 adds no temporal encoding (zeros).
        """
        if not self.config.sam21:
            return rel_pos.new_zeros(rel_pos.shape[0], self.config.mem_dim, dtype=torch.float32)
        dim = self.config.d_model
        half = dim // 2
        dim_t = torch.arange(half, dtype=torch.float32, device=rel_pos.device)
        dim_t = 10000 ** (2 * (dim_t // 2) / half)
        x = (rel_pos.float() / max_rel).unsqueeze(-1) / dim_t
        return self.obj_ptr_tpos_proj(torch.cat([x.sin(), x.cos()], dim=-1).to(self.dtype))


def _stability_fallback(masks: torch.Tensor, iou: torch.Tensor, cfg: ModelConfig):
    """Single-mask output, replaced by the best multimask output where the single mask is
    unstable (reference ``MaskDecoder._dynamic_multimask_via_stability``).

    masks ``(B, 4, h, w)``, iou ``(B, 4)`` -> ``((B, 1, h, w), (B, 1))``.
    """
    b = masks.shape[0]
    rows = torch.arange(b, device=masks.device)
    best = iou[:, 1:].argmax(dim=-1) + 1
    flat = masks[:, 0].flatten(1)
    delta = cfg.dynamic_multimask_stability_delta
    inter = (flat > delta).sum(-1).float()
    union = (flat > -delta).sum(-1).float()
    stability = torch.where(union > 0, inter / union, 1.0)
    stable = (stability >= cfg.dynamic_multimask_stability_thresh)[:, None]
    out_masks = torch.where(stable[..., None, None], masks[:, :1], masks[rows, best].unsqueeze(1))
    out_iou = torch.where(stable, iou[:, :1], iou[rows, best].unsqueeze(1))
    return out_masks, out_iou
