"""A short timing of a model on this computer (``sam2s models --measure``; issue 24, item 4).

The speed a user sees beside each model (``sam2s.modelcost``) is measured by the model's first
real propagation; :func:`measure` times one without a video or weights, for a model not used yet.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from . import modelcost
from .build import build_model
from .tracker import VideoTracker

__all__ = ["measure"]


def measure(
    config: str,
    image_size: int = 1024,
    precision: str = "auto",
    device: str = "cpu",
    frames: int = 4,
    cache_dir: str | Path | None = None,
) -> float:
    """Time a short propagation and ``modelcost.record`` it: ``config`` with random weights (speed does
    not depend on the values), ``frames`` random 854 x 480 frames (the real clip's size), a click on
    each of 2 objects on frame 0; returns the median seconds per tracked frame (frames 1..).

    Raises:
        ValueError: an unknown config, a bad image size or precision, ``frames < 2``.
    """
    if frames < 2:
        raise ValueError(f"frames must be >= 2 (frame 0 holds the prompts); got {frames}")
    torch.manual_seed(0)
    model = build_model(config, device=device, image_size=image_size, precision=precision)
    video = np.random.default_rng(0).integers(0, 256, (frames, 480, 854, 3), dtype=np.uint8)
    tracker = VideoTracker(model, video)
    tracker.add_points(0, 1, [[300.0, 200.0]], [1])
    tracker.add_points(0, 2, [[600.0, 300.0]], [1])
    times, start = [], time.perf_counter()
    for _ in tracker.propagate():
        now = time.perf_counter()
        times.append(now - start)
        start = now
    tracked = sorted(times[1:])
    seconds = tracked[len(tracked) // 2]
    modelcost.record(config, image_size, precision, device, seconds, len(tracked), cache_dir)
    return seconds
