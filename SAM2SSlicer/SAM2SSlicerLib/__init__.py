"""SAM2SSlicerLib: what the Slicer extension needs between the tracking engine ``sam2s`` (which it
uses) and the Qt shell (``SAM2SSlicer.py``, ``SegmentEditorSAM2S/``, which uses it). No Qt: it runs
headless on ``slicer-core``. Slicer naming (camelCase). With the engine, this is all the extension
installs (``CMakeLists.txt``); the command line, batch, sinks and web app are ``sam2sapp``.

* ``logic`` -- ``SAM2STrackingLogic``: video + segmentation + prompts + tracking + export; its jobs
  consume the engine's one stream (``sam2s.Tracker.run``) and write it into the segmentation (the
  MRML sink, in chunks).
* ``jobs`` -- ``TrackingJob``, ``JobPlan``, ``TrackingSession``: a preview or propagation and the
  engine session it uses, with no MRML access (re-exported by ``logic``).
* ``controller`` -- ``SAM2SController``: what the module panel and the Segment Editor effect do
  (clicks, keys, enabled actions, busy / cancel, settings, first use); the Qt files only bind to it.
* ``controls`` -- what the controller and the Qt files share: the shortcut table, the settings
  stores, the first-use install gate, slice-view geometry (re-exported by ``controller``).
* ``runner`` -- ``JobRunner``: starts jobs and writes their frames from a GUI timer (no threads).
* ``backends`` -- where the engine runs: in this process, a local server process, a remote server.
* ``undo`` -- what one Segment Editor undo state costs, and how many fit.
* ``videoimport`` / ``dicomvideo`` -- video file / image folder / DICOM / Sequence -> one
  ``vtkMRMLVectorVolumeNode``, with a memory check before allocating (``NotEnoughMemoryError``).
* ``prompts`` -- prompts per segment and frame stored as markups control points.
* ``segments`` -- object ids (1..254), reading masks, replacing frame ranges of a segment.
* ``export`` / ``coco`` / ``stats`` -- ``.seg.nrrd``, label PNGs, COCO, masklet statistics.
* ``provenance`` -- what made an output, recorded in every format and on the segmentation node.
* ``outputs`` -- output files and folders that never lose what the user had (checks, atomic writes).
* ``settings`` -- the module's model settings (derived from ``sam2s.ModelSpec``), checkpoint download.
* ``headless`` -- an MRML scene with module logics from ``slicer-core`` (tests, command line, web app).
* ``dependencies`` -- the Python packages the extension needs, and what is missing.
* ``synthetic`` -- a generated clip with ground truth (the module's self-test).

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
