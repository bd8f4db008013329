"""Build a SAM 2 / 2.1 model by config name and load Meta's checkpoint into it, strictly."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import torch

from .checkpoints import DEFAULT_IMAGE_SIZE, CheckpointError, default_image_size, load_state_dict, resolve_checkpoint
from .config import CONFIGS, TrunkConfig, get_config
from .modeling.sam2 import SAM2Model
from .resources import cpu_flags
from .spec import check_precision

LONG_TERM_KEY = "long_term_tpos_enc"  # optional key of SAM2S checkpoints (see SAM2Model.memory_tpos)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 matrix products natively: x86 with AVX512-BF16 or
    AMX-BF16 (Intel Cooper Lake, Sapphire Rapids and later; AMD Zen 4 and later).

    Read from the ``flags`` of ``/proc/cpuinfo`` on Linux (``avx512_bf16`` / ``amx_bf16``); on
    other systems, from ``torch.backends.cpu.get_cpu_capability()`` reporting ``AVX512_BF16`` or
    ``AMX`` (PyTorch's oneDNN dispatch; recent builds report at most ``AVX512``, hence False on
    most machines: conservative). False elsewhere (Arm, Apple silicon, older x86), where bf16
    matrix products are emulated and slower than float32.
    """
    flags = cpu_flags()
    if flags is not None:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    try:
        capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    except (AttributeError, RuntimeError):
        return False
    return "AVX512_BF16" in capability or "AMX" in capability


def auto_precision(device: str | torch.device = "cpu") -> str:
    """The precision ``"auto"`` means on ``device``: ``"bf16"`` or ``"fp32"``.

    - CUDA: ``"bf16"``, as Meta's ``sam2`` runs video tracking (``torch.autocast("cuda",
      dtype=torch.bfloat16)`` in ``tools/vos_inference.py``, the video-predictor notebook and the
      demo backend ``demo/backend/server/inference/predictor.py``).
    - CPU: ``"bf16"`` when the CPU has native bf16 arithmetic (``cpu_has_native_bf16``: AVX512-BF16
      or AMX), else ``"fp32"``.
    - MPS and anything else: ``"fp32"`` (conservative; Meta's predictor uses float32 there).
    """
    dev = torch.device(auto_device(device) if isinstance(device, str) else device)
    if dev.type == "cuda":
        return "bf16"
    if dev.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``"auto"`` -> ``auto_precision(device)``; ``"fp32"`` / ``"bf16"`` unchanged.

    Raises:
        ValueError: not one of ``"auto"``, ``"fp32"``, ``"bf16"`` (the message lists them).
    """
    check_precision(precision)
    return auto_precision(device) if precision == "auto" else precision


def auto_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when PyTorch sees a CUDA GPU, else ``"mps"`` (Apple Metal) when
    available, else ``"cpu"``; any other name is returned unchanged (``resolve_device`` checks it)."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` as a ``torch.device``.

    Raises:
        RuntimeError: the device is not available in this PyTorch build / on this machine
            (the message says what to use instead).
        ValueError: an unknown device string.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Unknown device {device!r}; use 'cpu', 'cuda' or 'mps'.") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                "Device 'cuda' was requested but PyTorch sees no CUDA GPU (torch.cuda.is_available() "
                "is False: a CPU-only PyTorch build or no NVIDIA driver). Use device='cpu', or install "
                "a CUDA build of PyTorch."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"cuda:{dev.index} requested but only {torch.cuda.device_count()} GPU(s) exist.")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise RuntimeError("Device 'mps' was requested but Apple's Metal backend is not available; use 'cpu'.")
    elif dev.type != "cpu":
        raise ValueError(f"Unsupported device {device!r}; use 'cpu', 'cuda' or 'mps'.")
    return dev


def guess_config(state_dict: dict[str, torch.Tensor]) -> str | None:
    """Config name whose architecture a state dict has (EdgeTAM: its RepViT trunk and spatial
    perceiver; SAM 2 / 2.1: the Hiera trunk's width and depth and the SAM 2.1-only keys), or None
    when it matches none."""
    if "image_encoder.trunk.body.stem.conv1.c.weight" in state_dict and "spatial_perceiver.latents" in state_dict:
        return "edgetam"
    w = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    if w is None:
        return None
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))}
    sam21 = "no_obj_embed_spatial" in state_dict
    for name, cfg in CONFIGS.items():
        hiera = isinstance(cfg.trunk, TrunkConfig)
        if hiera and cfg.trunk.embed_dim == w.shape[0] and sum(cfg.trunk.stages) == len(blocks) and cfg.sam21 == sam21:
            return name
    return None


def load_checkpoint(model: SAM2Model, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state_dict`` into ``model`` strictly (every key, every shape).

    The one optional key is ``long_term_tpos_enc`` ``(1, 1, 1, 64)``: DiveMem's dedicated
    long-term temporal embedding, which SAM2S checkpoints may carry; it is added to the model.

    Raises:
        CheckpointError: missing / unexpected keys or shape mismatches, naming them (first few)
            and the config the checkpoint matches, if any. The model is left unchanged.
    """
    own = dict(model.state_dict())
    if LONG_TERM_KEY in state_dict:  # SAM2S checkpoints: DiveMem's long-term temporal embedding
        own.setdefault(LONG_TERM_KEY, torch.zeros(1, 1, 1, model.config.mem_dim))
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        name = model.config.name
        hint = guess_config(state_dict)
        if any(k.startswith("image_encoder.blocks.") for k in state_dict):
            advice = "It looks like a SAM (v1) checkpoint; sam2s needs a SAM 2 / 2.1 checkpoint."
        elif hint:
            advice = f"It matches config {hint!r}: build_model({hint!r}, checkpoint=...)."
        else:
            advice = "It matches no known SAM 2 / 2.1 config."

        def few(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" ... ({len(items)} in all)" if len(items) > 5 else "")

        parts = [f"{source} does not fit model config {name!r}."]
        if missing:
            parts.append(f"Missing keys: {few(missing)}.")
        if unexpected:
            parts.append(f"Unexpected keys: {few(unexpected)}.")
        if shapes:
            parts.append(f"Shape mismatches: {few(shapes)}.")
        parts.append(advice)
        raise CheckpointError(" ".join(parts))
    if LONG_TERM_KEY in state_dict and not hasattr(model, LONG_TERM_KEY):
        model.register_parameter(LONG_TERM_KEY, torch.nn.Parameter(torch.zeros_like(own[LONG_TERM_KEY])))
    model.load_state_dict(state_dict, strict=True)


def build_model(
    name: str,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
    precision: str = "fp32",
) -> SAM2Model:
    """Build SAM 2 / 2.1 ``name`` (``sam2.1_hiera_t`` ... ``sam2_hiera_l``) in eval mode.

    Args:
        name: a config name (Meta's config stems; see ``sam2s.CONFIGS``).
        checkpoint: path to Meta's ``.pt`` file, or a registry name that is already downloaded
            (``sam2s.download``); None keeps PyTorch's default initialisation (for tests).
        device: ``"cpu"``, ``"cuda"`` or ``"mps"``.
        image_size: input side in pixels, a multiple of 32; None: the size the checkpoint's registry
            entry was trained at (``checkpoints.default_image_size``: 512 for SurgSAM-2 and MedSAM2),
            else 1024. Meta trained at 1024; 512 runs about
            4x faster on the image encoder and memory attention with the same weights (position
            embeddings are interpolated) at some loss of boundary detail (not benchmarked by Meta).
        precision: ``"fp32"`` (the default: float32 throughout, Meta's reference numerics, as
            Meta's ``build_sam2`` builds it), ``"auto"`` (``auto_precision(device)``: bf16 on CUDA
            and on CPUs with native bf16, else fp32; the default of the command line, the
            server and the Slicer module) or ``"bf16"`` (bfloat16 weights and activations on CPU / MPS,
            with norms, position encodings and the heads (prompt encoder, mask decoder) in
            float32; on CUDA float32 weights
            under bf16 autocast as Meta does). See ``SAM2Model`` and ``model.precision``.

    Raises:
        ValueError: unknown name / bad image size / unknown device / unknown precision.
        RuntimeError: device missing.
        FileNotFoundError: checkpoint not found. CheckpointError: not a checkpoint of this config.
    """
    if image_size is None:
        image_size = default_image_size(checkpoint) if checkpoint is not None else DEFAULT_IMAGE_SIZE
    cfg = get_config(name, image_size)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    model = SAM2Model(cfg)
    if checkpoint is not None:
        path = resolve_checkpoint(checkpoint)
        load_checkpoint(model, load_state_dict(path), source=f"Checkpoint {str(path)!r}")
    model.requires_grad_(False)  # inference only (no autograd bookkeeping; module hooks see plain tensors)
    return model.to(dev).set_precision(prec).eval()
