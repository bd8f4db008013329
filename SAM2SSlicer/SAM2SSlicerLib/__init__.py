"""Headless logic of the SAM2SSlicer extension (no Qt; imports with ``slicer-core`` alone).

Modules:

* ``logic`` -- ``SAM2STrackingLogic``: video + segmentation + prompts + tracking + export.
* ``videoimport`` -- video file / image folder / Sequence -> one ``vtkMRMLVectorVolumeNode``,
  with a memory check before allocating (``NotEnoughMemoryError``).
* ``prompts`` -- prompts per segment and frame stored as markups control points.
* ``segments`` -- object ids (1..254), reading masks, replacing frame ranges of a segment.
* ``export`` -- ``.seg.nrrd`` (and ``readSegmentation``, keeping non-ASCII names) and per-frame label PNGs.
* ``settings`` -- model settings, model building, checkpoint download with progress / cancel.
* ``headless`` -- an MRML scene with module logics from ``slicer-core`` (tests, command line).
* ``dependencies`` -- the Python packages the extension needs, and what is missing.

``torch``, ``sam2s``, ``av`` and ``cv2`` are imported on first use, not by importing this package.
"""

from .export import readSegmentation
from .logic import DIRECTIONS, SAM2STrackingLogic, TrackingBusyError, TrackingJob, TrackingPlan, TrackingSession
from .prompts import FramePrompts, PromptError, PromptStore
from .segments import MAX_OBJECT_ID, MIN_OBJECT_ID
from .settings import ModelSettings
from .videoimport import NotEnoughMemoryError, availableMemoryBytes, checkVideoMemory

__all__ = [
    "DIRECTIONS",
    "MAX_OBJECT_ID",
    "MIN_OBJECT_ID",
    "FramePrompts",
    "ModelSettings",
    "NotEnoughMemoryError",
    "PromptError",
    "PromptStore",
    "SAM2STrackingLogic",
    "TrackingBusyError",
    "TrackingJob",
    "TrackingPlan",
    "TrackingSession",
    "availableMemoryBytes",
    "checkVideoMemory",
    "readSegmentation",
]
