"""sam2s: SAM 2 / 2.1 video object tracking in pure PyTorch, with SAM2S's DiveMem memory.

Weight-compatible with Meta's checkpoints (``torch.load(p, weights_only=True)["model"]``),
no torchvision / hydra / iopath. Typical use::

    import sam2s
    model = sam2s.build_model("sam2.1_hiera_t", checkpoint="sam2.1_hiera_tiny.pt")
    tracker = sam2s.VideoTracker(model, "video.mp4")
    tracker.add_points(0, obj_id=1, points=[[451, 137]], labels=[1])
    plan = sam2s.TrackingPlan(tuple(sam2s.plan_passes([0], 0, tracker.num_frames - 1)))
    for tracked in tracker.run(plan):  # the one stream: a TrackedFrame per frame
        masks = tracked.masks()  # {obj_id: (H, W) bool}

``tracker.propagate(start, end, reverse)`` is one pass of it (``(frame_idx, obj_ids, logits)``);
``sam2s.ModelSpec`` describes a model and builds it and its tracker in one place.

Importing the package is cheap: the public names below (and the submodules, e.g.
``sam2s.checkpoints``) are imported on first use (PEP 562), so ``import sam2s.session`` or
``sam2s.MIN_OBJECT_ID`` do not import torch, while ``sam2s.VideoTracker`` does.

Modules: ``session`` (the ``Tracker`` contract and its one stream, ``run(TrackingPlan)``,
``plan_passes``; prompt records, errors; numpy only), ``spec`` / ``modelspec`` (the model
settings' rules and ``ModelSpec``; no torch), ``tracker``
(``VideoTracker``), ``flow`` (``FlowTracker``, no weights, no torch), ``memory`` / ``divemem``
(memory policies), ``frames`` (frame sources), ``checkpoints`` (registry, download),
``safeload`` (safe loading), ``build`` / ``config`` (models), ``modeling`` (the network), ``serving`` (tracking over
HTTP: the server, its client and protocol, the path-access rule).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "CONFIGS": "config",
    "CheckpointError": "checkpoints",
    "CheckpointInfo": "checkpoints",
    "ChecksumError": "checkpoints",
    "ClickPrompt": "session",
    "DownloadCancelled": "checkpoints",
    "DownloadError": "checkpoints",
    "FlowTracker": "flow",
    "FrameSource": "frames",
    "FrameSourceError": "frames",
    "MAX_OBJECT_ID": "session",
    "MIN_OBJECT_ID": "session",
    "MaskPrompt": "session",
    "ModelConfig": "config",
    "ModelSpec": "modelspec",
    "PromptError": "session",
    "TrackedFrame": "session",
    "Tracker": "session",
    "TrackerBusyError": "session",
    "TrackingPlan": "session",
    "VideoTracker": "tracker",
    "build_model": "build",
    "cache_dir": "checkpoints",
    "cache_status": "checkpoints",
    "download": "checkpoints",
    "get_config": "config",
    "guess_config": "build",
    "load_checkpoint": "build",
    "load_state_dict": "checkpoints",
    "open_frames": "frames",
    "plan_passes": "session",
    "resolve_checkpoint": "checkpoints",
    "resolve_device": "build",
}
"""Public name -> the submodule that defines it."""

_SUBMODULES = (
    "build",
    "checkpoints",
    "config",
    "divemem",
    "flow",
    "frames",
    "memory",
    "modeling",
    "modelspec",
    "safeload",
    "serving",
    "session",
    "tracker",
)

__all__ = [
    "CONFIGS",
    "CheckpointError",
    "CheckpointInfo",
    "ChecksumError",
    "ClickPrompt",
    "DownloadCancelled",
    "DownloadError",
    "FlowTracker",
    "FrameSource",
    "FrameSourceError",
    "MAX_OBJECT_ID",
    "MIN_OBJECT_ID",
    "MaskPrompt",
    "ModelConfig",
    "ModelSpec",
    "PromptError",
    "TrackedFrame",
    "Tracker",
    "TrackerBusyError",
    "TrackingPlan",
    "VideoTracker",
    "build_model",
    "cache_dir",
    "cache_status",
    "download",
    "get_config",
    "guess_config",
    "load_checkpoint",
    "load_state_dict",
    "open_frames",
    "plan_passes",
    "resolve_checkpoint",
    "resolve_device",
]


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule) on first access; raise ``AttributeError`` otherwise."""
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from .build import build_model, guess_config, load_checkpoint, resolve_device
    from .checkpoints import (
        CheckpointError,
        CheckpointInfo,
        ChecksumError,
        DownloadCancelled,
        DownloadError,
        cache_dir,
        cache_status,
        download,
        load_state_dict,
        resolve_checkpoint,
    )
    from .config import CONFIGS, ModelConfig, get_config
    from .flow import FlowTracker
    from .frames import FrameSource, FrameSourceError, open_frames
    from .modelspec import ModelSpec
    from .session import (
        MAX_OBJECT_ID,
        MIN_OBJECT_ID,
        ClickPrompt,
        MaskPrompt,
        PromptError,
        TrackedFrame,
        Tracker,
        TrackerBusyError,
        TrackingPlan,
        plan_passes,
    )
    from .tracker import VideoTracker
