"""The application library of SAM2SSlicer: everything between the tracking engine ``sam2s`` (which
it uses) and the Qt shell (``SAM2SSlicer.py``, ``SegmentEditorSAM2S/``, which uses it). No Qt:
it runs headless on ``slicer-core``.

Slicer logic on MRML (Slicer naming, camelCase):

* ``logic`` -- ``SAM2STrackingLogic``: video + segmentation + prompts + tracking + export.
* ``controller`` -- ``SAM2SController``: what the module panel and the Segment Editor effect do
  (clicks, keys, enabled actions, busy / cancel, settings, first use); the Qt files only bind to it.
* ``runner`` -- ``JobRunner``: starts jobs and writes their frames from a GUI timer (no threads).
* ``undo`` -- what one Segment Editor undo state costs, and how many fit.
* ``videoimport`` -- video file / image folder / Sequence -> one ``vtkMRMLVectorVolumeNode``,
  with a memory check before allocating (``NotEnoughMemoryError``).
* ``prompts`` -- prompts per segment and frame stored as markups control points.
* ``segments`` -- object ids (1..254), reading masks, replacing frame ranges of a segment.
* ``export`` -- ``.seg.nrrd`` (and ``readSegmentation``, keeping non-ASCII names) and per-frame label PNGs.
* ``outputs`` -- output files and folders that never lose what the user had (checks, atomic writes).
* ``settings`` -- model settings, model building, checkpoint download with progress / cancel.
* ``headless`` -- an MRML scene with module logics from ``slicer-core`` (tests, command line).
* ``dependencies`` -- the Python packages the extension needs, and what is missing.

Files, metrics and the command line (PEP 8 naming, like the engine):

* ``promptsfile`` -- the prompts JSON format. ``metrics`` -- DAVIS J&F. ``visualize`` -- overlays,
  overlay videos, contact sheets. ``synthetic`` -- a generated clip with ground truth.
* ``cli`` -- the ``sam2s`` command line (``python -m SAM2SSlicerLib``); ``track`` -- ``sam2s
  track``'s work (``run_tracking``); ``demo`` -- ``sam2s demo``.

``torch``, ``av`` and ``cv2`` are imported on first use, not by importing this package (of the
engine only its torch-free ``sam2s.session`` is imported).
"""

from .export import readSegmentation
from .logic import DIRECTIONS, JobPlan, SAM2STrackingLogic, TrackingBusyError, TrackingJob, TrackingSession
from .prompts import FramePrompts, PromptError, PromptStore
from .segments import MAX_OBJECT_ID, MIN_OBJECT_ID
from .settings import ModelSettings
from .videoimport import NotEnoughMemoryError, availableMemoryBytes, checkVideoMemory

__all__ = [
    "JobPlan",
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
    "TrackingSession",
    "availableMemoryBytes",
    "checkVideoMemory",
    "readSegmentation",
]
