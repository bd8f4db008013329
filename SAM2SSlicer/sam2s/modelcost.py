"""What a model costs on this computer and how accurate it is published to be (issue 24, item 4).

A user choosing a model trades speed for accuracy. Every front end (``sam2s models``, the Slicer
module's model list, the web app's) shows, per config:

* its **published accuracy** (:data:`PUBLISHED_ACCURACY`, J&F on the benchmarks its authors report,
  with the source);
* its **measured seconds per frame on this computer** at a given image size, precision and device,
  once measured: every propagation of ``VideoTracker`` of 3 frames or more :func:`record` s its
  median (a model's first use is its timing), and ``sam2s.speedcheck.measure`` (``sam2s models
  --measure``) times a short propagation with random weights. Results are cached per CPU in
  ``speed.json`` of the checkpoint cache folder (``checkpoints.cache_dir``), keyed by config,
  image size, resolved precision (``"auto"`` is looked up as what it means on this computer),
  device and this CPU's model and bf16 flags (a figure from another CPU never shows).

Torch-free at import (the Slicer module imports it without PyTorch for a remote server).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PUBLISHED_ACCURACY",
    "PublishedAccuracy",
    "accuracy_text",
    "cost_text",
    "measured_seconds",
    "record",
    "speed_file",
]

_SAM21 = "Meta's SAM 2 README, SAM 2.1 checkpoints table (github.com/facebookresearch/sam2)"
_SAM20 = "Meta's SAM 2 README, SAM 2 checkpoints table (github.com/facebookresearch/sam2)"


@dataclass(frozen=True)
class PublishedAccuracy:
    """J&F (%) its authors report: ``sa_v`` on SA-V test, ``mose`` on MOSE (val), ``davis`` on
    DAVIS 2017 (val); None where not reported. ``source``: where the figures are published."""

    sa_v: float | None
    mose: float | None
    davis: float | None
    source: str


PUBLISHED_ACCURACY: dict[str, PublishedAccuracy] = {
    "sam2.1_hiera_t": PublishedAccuracy(76.5, 71.8, None, _SAM21),
    "sam2.1_hiera_s": PublishedAccuracy(76.6, 73.5, None, _SAM21),
    "sam2.1_hiera_b+": PublishedAccuracy(78.2, 73.7, None, _SAM21),
    "sam2.1_hiera_l": PublishedAccuracy(79.5, 74.6, None, _SAM21),
    "sam2_hiera_t": PublishedAccuracy(75.0, 70.9, None, _SAM20),
    "sam2_hiera_s": PublishedAccuracy(74.9, 71.5, None, _SAM20),
    "sam2_hiera_b+": PublishedAccuracy(74.7, 72.8, None, _SAM20),
    "sam2_hiera_l": PublishedAccuracy(76.0, 74.6, None, _SAM20),
    "edgetam": PublishedAccuracy(
        71.7, 70.0, 87.7, 'Zhou et al., "EdgeTAM: On-Device Track Anything Model", CVPR 2025 (facebookresearch/EdgeTAM)'
    ),
}
"""Published J&F per config name (Meta's general-purpose weights; fine-tuned checkpoints such as
SurgSAM-2 or MedSAM2 report on their own datasets, see the registry)."""

SPEED_FILE_NAME = "speed.json"


def accuracy_text(config: str) -> str:
    """``"SA-V test J&F 76.5, MOSE 71.8"`` for ``config``; ``"no published accuracy"`` when unknown."""
    acc = PUBLISHED_ACCURACY.get(config)
    if acc is None:
        return "no published accuracy"
    parts = [
        f"{name} {value:.1f}"
        for name, value in (("SA-V test J&F", acc.sa_v), ("MOSE", acc.mose), ("DAVIS 2017", acc.davis))
        if value is not None
    ]
    return ", ".join(parts)


def speed_file(cache_dir: str | Path | None = None) -> Path:
    """The cache file of measured speeds (``speed.json`` in ``cache_dir``, default
    ``checkpoints.cache_dir()``)."""
    if cache_dir is None:
        from .checkpoints import cache_dir as default_cache_dir

        cache_dir = default_cache_dir()
    return Path(cache_dir) / SPEED_FILE_NAME


@functools.lru_cache(maxsize=1)  # constant for the process: /proc/cpuinfo is read once, not per lookup
def _cpu() -> str:
    """This CPU: its model name and whether it has native bf16 / AMX (what changes the speed)."""
    from .resources import cpu_flags

    flags = cpu_flags() or frozenset()
    name = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
        except OSError:
            pass
    extras = "+".join(sorted(flags & {"avx512_bf16", "amx_bf16"})) or "no-bf16"
    return f"{name} [{extras}] x{os.cpu_count()}"


def _key(config: str, image_size: int, precision: str, device: str) -> str:
    return f"{config}@{int(image_size)}/{precision}/{device}/{_cpu() if device == 'cpu' else device}"


def _precisions(precision: str, device: str) -> tuple[str, ...]:
    """The stored precisions ``precision`` may mean here: ``"auto"`` resolved with
    ``sam2s.build.auto_precision`` where PyTorch is importable, else ``("bf16", "fp32")`` (either
    figure, the first found: a Slicer without PyTorch tracks on a server)."""
    if precision != "auto":
        return (precision,)
    try:
        from .build import auto_precision
    except ImportError:
        return ("bf16", "fp32")
    return (auto_precision(device),)


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def measured_seconds(
    config: str, image_size: int, precision: str = "auto", device: str = "cpu", cache_dir: str | Path | None = None
) -> float | None:
    """Seconds per tracked frame measured here for this config, image size (pixels), precision
    (``"auto"`` | ``"fp32"`` | ``"bf16"``) and device; None when never measured on this CPU."""
    data = _load(speed_file(cache_dir))
    for resolved in _precisions(precision, device):
        entry = data.get(_key(config, image_size, resolved, device))
        if isinstance(entry, dict) and "seconds_per_frame" in entry:
            return float(entry["seconds_per_frame"])
    return None


def record(
    config: str,
    image_size: int,
    precision: str,
    device: str,
    seconds_per_frame: float,
    frames: int,
    cache_dir: str | Path | None = None,
) -> None:
    """Keep a measured speed (median seconds per tracked frame over ``frames`` frames) in the cache
    file (written atomically; an unwritable cache folder is ignored: the speed stays unknown).
    ``precision`` ``"auto"`` is stored as what it resolves to here."""
    path = speed_file(cache_dir)
    data = _load(path)
    data[_key(config, image_size, _precisions(precision, device)[0], device)] = {
        "seconds_per_frame": round(float(seconds_per_frame), 4),
        "frames": int(frames),
        "measured": time.strftime("%Y-%m-%d"),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(f.name, path)
    except OSError:
        pass


def cost_text(
    config: str, image_size: int, precision: str = "auto", device: str = "cpu", cache_dir: str | Path | None = None
) -> str:
    """``"0.42 s/frame here at 1024 px"`` when measured on this computer, else ``"speed here not
    measured yet"``."""
    seconds = measured_seconds(config, image_size, precision, device, cache_dir)
    if seconds is None:
        return "speed here not measured yet"
    return f"{seconds:.2f} s/frame here at {int(image_size)} px ({precision}, {device})"
