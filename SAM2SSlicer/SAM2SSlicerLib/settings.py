"""Model settings (config, checkpoint, device, image size, precision, memory policy), model building and
checkpoint downloads with progress and cancel.

Nothing here touches the network unless :func:`downloadCheckpoint` is called, or
:func:`buildModel` with ``allowDownload=True`` (the GUI only does so after the user clicks
"Download"). ``torch`` and ``sam2s`` are imported on first use, never on import of this module.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sam2s.config import CONFIGS
from sam2s.modelspec import ModelSpec
from sam2s.spec import DEFAULT_CONFIG, DEVICES, ENGINES, MEMORY_POLICIES, PRECISIONS

CONFIG_NAMES = tuple(CONFIGS)
"""The engine's config names (``sam2s.CONFIGS``; ``sam2s.config`` imports without torch)."""

__all__ = [
    "CONFIG_NAMES",
    "DEFAULT_CONFIG",
    "DEVICES",
    "ENGINES",
    "PRECISIONS",
    "MEMORY_POLICIES",
    "ModelSettings",
    "buildModel",
    "checkpointStatus",
    "configNames",
    "modelDescription",
    "downloadCheckpoint",
    "resolveDeviceName",
]


@dataclasses.dataclass
class ModelSettings:
    """What model to run and how.

    Attributes:
        configName: a ``sam2s`` config name (``sam2.1_hiera_t`` ... ``sam2_hiera_l``).
        checkpoint: path of a local ``.pt`` file; empty = the registry checkpoint of ``configName``
            from the cache (downloaded by :func:`downloadCheckpoint`).
        device: ``auto`` (CUDA, else Apple MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        imageSize: model input side in pixels (``sam2s.spec.check_image_size``: a multiple of 32 from 64
            to 4096; 512 is ~4x faster than 1024), or None: the size the checkpoint was trained at
            (``ModelSpec.input_size``: 1024; 512 for MedSAM2 and SurgSAM-2).
        precision: ``auto`` (bf16 on CUDA and on CPUs with native bf16, AVX512-BF16 / AMX; else
            fp32: ``sam2s.build.auto_precision``), ``fp32`` (Meta's reference numerics) or ``bf16``.
        memory: memory policy, ``sam2`` (Meta's) or ``divemem`` (SAM2S's diverse long-term memory).
        memoryParams: keyword parameters of the memory policy (e.g. ``{"long_term_size": 3}``).
        engine: ``sam2`` (the model above) or ``flow`` (optical flow + GrabCut, no weights; the
            model fields are then unused).
    """

    configName: str = DEFAULT_CONFIG
    checkpoint: str = ""
    device: str = "auto"
    imageSize: int | None = None
    precision: str = "auto"
    memory: str = "sam2"
    memoryParams: dict[str, Any] = dataclasses.field(default_factory=dict)
    engine: str = "sam2"

    def toSpec(self) -> ModelSpec:
        """The engine's ``sam2s.spec.ModelSpec`` of these settings (an empty checkpoint: None)."""
        return ModelSpec(
            engine=self.engine,
            config=self.configName,
            checkpoint=self.checkpoint or None,
            image_size=self.imageSize,
            precision=self.precision,
            device=self.device,
            memory=self.memory,
            memory_params=dict(self.memoryParams),
        )

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field and the accepted values (``ModelSpec.validate``,
        the one rule of every front end), or a checkpoint file that does not exist."""
        self.toSpec().validate()
        if self.checkpoint and not Path(self.checkpoint).expanduser().is_file():
            raise ValueError(
                f"Checkpoint file {self.checkpoint!r} does not exist; choose an existing .pt file or leave it empty "
                "to use the downloaded checkpoint of the config."
            )

    def toDict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (e.g. for Qt settings)."""
        return dataclasses.asdict(self)

    @classmethod
    def fromDict(cls, values: dict[str, Any]) -> ModelSettings:
        """Settings from :meth:`toDict` output; unknown keys are ignored, missing ones take defaults."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in fields})


def configNames() -> list[str]:
    """The model config names the engine knows (without importing torch)."""
    return list(CONFIG_NAMES)


def modelDescription(configName: str, imageSize: int | None, precision: str = "auto", device: str = "cpu") -> str:
    """What choosing ``configName`` means, for the model list's tooltips (issue 24, item 4):
    ``"edgetam: SA-V test J&F 71.7, MOSE 70.0, DAVIS 2017 87.7; 0.42 s/frame here at 1024 px
    (auto, cpu)"`` (``sam2s.modelcost``: the published accuracy, and the speed measured on this
    computer by its first use or by ``sam2s models --measure``; "not measured yet" before).
    ``imageSize`` None: the config's training size (``ModelSpec.input_size``). Torch-free.
    ``device`` ``auto`` counts as ``cpu`` here (no torch to ask)."""
    from sam2s import modelcost

    device = "cpu" if device == "auto" else device
    imageSize = ModelSpec(config=configName, image_size=imageSize).input_size
    accuracy = modelcost.accuracy_text(configName)
    return f"{configName}: {accuracy}; {modelcost.cost_text(configName, imageSize, precision, device)}"


def resolveDeviceName(device: str) -> str:
    """``auto`` -> ``cuda`` when PyTorch sees a CUDA GPU, else ``mps`` when available, else ``cpu``;
    other names are returned unchanged (checked when the model is built)."""
    from sam2s.build import auto_device

    return auto_device(device)


def checkpointStatus(configName: str) -> Path | None:
    """Path of the cached registry checkpoint of ``configName`` (size checked), or None."""
    from sam2s import cache_status

    for info, path in cache_status():
        if info.name == configName:
            return path
    return None


def downloadCheckpoint(
    configName: str,
    progressCallback: Callable[[int, int | None], None] | None = None,
    cancelEvent: threading.Event | None = None,
    cacheDir: str | Path | None = None,
    info: Any = None,
) -> Path:
    """Download the registry checkpoint of ``configName`` with ``sam2s.download`` (SHA-256 checked).

    Args:
        progressCallback: ``(receivedBytes, totalBytes or None)``, called per 1 MiB block (from the
            calling thread).
        cancelEvent: set it from another thread to stop; ``DownloadCancelled`` is raised and
            the partial file is deleted by the engine (``sam2s.download``'s ``cancel`` hook).
        cacheDir: target directory (default: the engine's cache, ``$SAM2S_CACHE_DIR`` or ``~/.cache/sam2s``).
        info: a ``sam2s.CheckpointInfo`` to download instead of the registry entry (tests, mirrors).

    Returns:
        Path of the verified checkpoint file.

    Raises:
        DownloadCancelled; sam2s.DownloadError (offline ...); sam2s.ChecksumError; ValueError (unknown name).
    """
    from sam2s.checkpoints import download

    progress = progressCallback if progressCallback is not None else False
    return download(info or configName, cache_dir=cacheDir, progress=progress, cancel=cancelEvent)


def buildModel(settings: ModelSettings, allowDownload: bool = False):
    """Build the ``sam2s`` model of ``settings`` on its device, in eval mode.

    Args:
        allowDownload: download the registry checkpoint when it is not cached (see
            :func:`downloadCheckpoint`).

    Raises:
        ValueError: invalid settings. FileNotFoundError: no local checkpoint and the registry one is
            not downloaded (the message says how). RuntimeError: device not available.
        sam2s.CheckpointError: the file is not a checkpoint of ``configName``.
    """
    settings.validate()
    if not settings.checkpoint and not allowDownload and checkpointStatus(settings.configName) is None:
        raise FileNotFoundError(
            f"The checkpoint of {settings.configName} is not downloaded yet. Click 'Download' in the "
            "SAM2S module's Model section (about 150-900 MB from Meta's server), or choose a local .pt file."
        )
    return settings.toSpec().build(allow_download=allowDownload)


def __getattr__(name: str):
    """``DownloadCancelled`` is the engine's ``sam2s.checkpoints.DownloadCancelled`` (one error class),
    imported on first use so that this module imports without torch."""
    if name == "DownloadCancelled":
        from sam2s.checkpoints import DownloadCancelled

        return DownloadCancelled
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
