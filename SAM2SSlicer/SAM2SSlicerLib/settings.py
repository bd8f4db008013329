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

from sam2s.spec import ENGINES, MEMORY_POLICIES, PRECISIONS, check_image_size, check_precision

DEFAULT_CONFIG = "sam2.1_hiera_t"
CONFIG_NAMES = (
    "sam2.1_hiera_t",
    "sam2.1_hiera_s",
    "sam2.1_hiera_b+",
    "sam2.1_hiera_l",
    "sam2_hiera_t",
    "sam2_hiera_s",
    "sam2_hiera_b+",
    "sam2_hiera_l",
)
"""The engine's config names (``sam2s.CONFIGS``), listed here so that settings can be checked
without importing torch."""
DEVICES = ("auto", "cpu", "cuda", "mps")

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
            to 4096; 1024 as trained, 512 is ~4x faster).
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
    imageSize: int = 1024
    precision: str = "auto"
    memory: str = "sam2"
    memoryParams: dict[str, Any] = dataclasses.field(default_factory=dict)
    engine: str = "sam2"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field and the accepted values."""
        names = configNames()
        if self.configName not in names:
            raise ValueError(f"Unknown model config {self.configName!r}; choose one of {', '.join(names)}.")
        check_image_size(self.imageSize)  # sam2s.spec: the one rule of every front end
        check_precision(self.precision)
        if self.engine not in ENGINES:
            raise ValueError(f"Unknown engine {self.engine!r}; use one of {', '.join(ENGINES)}.")
        if self.memory not in MEMORY_POLICIES:
            raise ValueError(f"Unknown memory policy {self.memory!r}; use one of {', '.join(MEMORY_POLICIES)}.")
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


def buildModel(settings: ModelSettings, allowDownload: bool = False, **downloadOptions: Any):
    """Build the ``sam2s`` model of ``settings`` on its device, in eval mode.

    Args:
        allowDownload: download the registry checkpoint when it is not cached (see
            :func:`downloadCheckpoint`, whose keyword options ``downloadOptions`` are).

    Raises:
        ValueError: invalid settings. FileNotFoundError: no local checkpoint and the registry one is
            not downloaded (the message says how). RuntimeError: device not available.
        sam2s.CheckpointError: the file is not a checkpoint of ``configName``.
    """
    settings.validate()
    import sam2s

    checkpoint: str | Path = settings.checkpoint
    if not checkpoint:
        cached = checkpointStatus(settings.configName)
        if cached is None:
            if not allowDownload:
                raise FileNotFoundError(
                    f"The checkpoint of {settings.configName} is not downloaded yet. Click 'Download' in the "
                    "SAM2S module's Model section (about 150-900 MB from Meta's server), or choose a local .pt file."
                )
            cached = downloadCheckpoint(settings.configName, **downloadOptions)
        checkpoint = cached
    return sam2s.build_model(
        settings.configName,
        checkpoint=checkpoint,
        device=resolveDeviceName(settings.device),
        image_size=int(settings.imageSize),
        precision=settings.precision,
    )


def __getattr__(name: str):
    """``DownloadCancelled`` is the engine's ``sam2s.checkpoints.DownloadCancelled`` (one error class),
    imported on first use so that this module imports without torch."""
    if name == "DownloadCancelled":
        from sam2s.checkpoints import DownloadCancelled

        return DownloadCancelled
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
