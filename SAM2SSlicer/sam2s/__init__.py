"""sam2s: SAM 2 / 2.1 video object tracking in pure PyTorch, with SAM2S's DiveMem memory.

Weight-compatible with Meta's checkpoints (``torch.load(p, weights_only=True)["model"]``),
no torchvision / hydra / iopath. Typical use::

    import sam2s
    model = sam2s.build_model("sam2.1_hiera_t", checkpoint="sam2.1_hiera_tiny.pt")
    tracker = sam2s.VideoTracker(model, "video.mp4")
    tracker.add_points(0, obj_id=1, points=[[451, 137]], labels=[1])
    for frame_idx, obj_ids, logits in tracker.propagate():
        masks = logits > 0  # (n_objects, H, W)
"""

from .build import build_model, guess_config, load_checkpoint, resolve_device
from .checkpoints import (
    CheckpointError,
    CheckpointInfo,
    ChecksumError,
    DownloadError,
    cache_dir,
    cache_status,
    download,
    load_state_dict,
    resolve_checkpoint,
)
from .config import CONFIGS, ModelConfig, get_config
from .frames import FrameSource, FrameSourceError, open_frames
from .tracker import MAX_OBJECT_ID, MIN_OBJECT_ID, PromptError, TrackerBusyError, VideoTracker

__version__ = "0.1.0"

__all__ = [
    "CONFIGS",
    "CheckpointError",
    "CheckpointInfo",
    "ChecksumError",
    "DownloadError",
    "FrameSource",
    "FrameSourceError",
    "MAX_OBJECT_ID",
    "MIN_OBJECT_ID",
    "ModelConfig",
    "PromptError",
    "TrackerBusyError",
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
    "resolve_checkpoint",
    "resolve_device",
]
