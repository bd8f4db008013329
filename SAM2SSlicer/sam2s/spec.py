"""The model settings every front end shares, each with its one rule (standard library only, no torch).

The command line (``sam2s track``, ``batch``, ``web``), the tracking server's request model, the
batch manifest's columns and the Slicer module's saved settings all take their choices from here
and check their values with these functions, so that a bad value gets the same message wherever
it is given.

* ``precision``: :data:`PRECISIONS` (:func:`check_precision`); ``auto`` is resolved per device by
  ``sam2s.build.resolve_precision``.
* ``image_size``: the model's input side in pixels, a multiple of :data:`IMAGE_SIZE_STEP` from
  :data:`MIN_IMAGE_SIZE` to :data:`MAX_IMAGE_SIZE` (:func:`check_image_size`): Hiera's
  windows need a multiple of 32 (the stride-32 stage must tile the image), and Meta trained at
  1024 (``sam2/configs/sam2.1/*.yaml``, ``image_size: 1024``).
* ``memory``: :data:`MEMORY_POLICIES`; ``engine``: :data:`ENGINES`; ``device``: :data:`DEVICES`.

``sam2s.modelspec.ModelSpec`` holds them all, frozen: the one description of a model from which
the front ends derive their options, and the one place a model and its tracker are built.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULT_CONFIG",
    "DEVICES",
    "ENGINES",
    "IMAGE_SIZE_STEP",
    "MAX_IMAGE_SIZE",
    "MEMORY_POLICIES",
    "MIN_IMAGE_SIZE",
    "PRECISIONS",
    "check_device",
    "check_image_size",
    "check_precision",
]

PRECISIONS = ("auto", "fp32", "bf16")
"""``auto``: bf16 on CUDA and on CPUs with native bf16, else fp32; ``fp32``: Meta's numerics."""
MEMORY_POLICIES = ("sam2", "divemem")
"""``sam2``: Meta's memory bank; ``divemem``: SAM2S's diverse long-term memory."""
ENGINES = ("sam2", "flow")
"""``sam2``: the SAM 2 model; ``flow``: optical flow and GrabCut, no weights (``sam2s.flow``)."""
DEVICES = ("auto", "cpu", "cuda", "mps")
"""``auto``: CUDA, else Apple MPS, else the CPU (``sam2s.build.auto_device``); ``cuda:N`` is accepted too."""
DEFAULT_CONFIG = "sam2.1_hiera_t"
"""The model config every front end starts with: SAM 2.1 tiny, the fastest on a CPU."""
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, IMAGE_SIZE_STEP = 64, 4096, 32
"""The model input side in pixels: a multiple of 32 from 64 to 4096."""


def check_precision(value: Any) -> str:
    """``value`` when it is one of :data:`PRECISIONS`.

    Raises:
        ValueError: anything else (the message lists the choices).
    """
    if not isinstance(value, str) or value not in PRECISIONS:
        raise ValueError(f"unknown precision {value!r:.40}: use auto, fp32 or bf16")
    return value


def check_image_size(value: Any) -> int:
    """The image size as an ``int`` when it is a multiple of :data:`IMAGE_SIZE_STEP` from
    :data:`MIN_IMAGE_SIZE` to :data:`MAX_IMAGE_SIZE` pixels (an ``int``, or a string of digits
    as a command line or a CSV cell gives it).

    Raises:
        ValueError: anything else (the message gives the rule).
    """
    number = int(value) if isinstance(value, str) and value.strip().isdigit() and len(value) < 12 else value
    if (
        isinstance(number, bool)
        or not isinstance(number, int)
        or not MIN_IMAGE_SIZE <= number <= MAX_IMAGE_SIZE
        or number % IMAGE_SIZE_STEP
    ):
        shown = number if isinstance(number, int) and not isinstance(number, bool) else repr(value)[:40]
        raise ValueError(
            f"image size {shown}: give a multiple of {IMAGE_SIZE_STEP} from {MIN_IMAGE_SIZE} to "
            f"{MAX_IMAGE_SIZE} pixels (Meta's weights are trained at 1024; 512 runs about 4x faster)"
        )
    return number


def check_device(value: Any) -> str:
    """``value`` when it names a device: one of :data:`DEVICES` or ``cuda:N``. Whether this machine
    has it is checked when the model is built (``sam2s.build.resolve_device``).

    Raises:
        ValueError: anything else (the message lists the choices).
    """
    ok = isinstance(value, str) and (value in DEVICES or (value.startswith("cuda:") and value[5:].isdigit()))
    if not ok:
        raise ValueError(f"unknown device {value!r:.40}: use auto, cpu, cuda, cuda:N or mps")
    return value
