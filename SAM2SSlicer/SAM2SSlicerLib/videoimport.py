"""Import a video file, an image folder or a Sequence of 2D frames as one video volume.

The result is a ``vtkMRMLVectorVolumeNode`` with dimensions ``W x H x T`` (IJK = column, row,
frame) and 3 uint8 components (RGB): ``slicer.util.arrayFromVolume(node)`` is the ``(T, H, W, 3)``
uint8 array whose ``[k]`` is frame k exactly as decoded (row 0 = top row of the image). The
IJK-to-RAS directions are ``(-1, 0, 0), (0, -1, 0), (0, 0, 1)`` with spacing 1 and origin 0, so an
axial slice view shows frame k upright (row 0 at the top, column 0 at the left) and scrolling
the slice scrolls the frames. Node attributes (strings) record where the frames came from:

=========================== ================================================================
``SAM2S.Video``             ``"1"`` (marks a SAM2S video volume)
``SAM2S.Source``            absolute path of the file / folder, or ``sequence:<node name>``
``SAM2S.SourceType``        ``video``, ``folder``, ``sequence`` or ``array``
``SAM2S.FrameRate``         source frames per second (e.g. ``"25.0"``); empty when unknown
``SAM2S.FrameStep``         every how many source frames one was kept (``"1"`` = all)
``SAM2S.FrameTimes``        comma-separated time of each imported frame in seconds from the
                            first source frame; empty when the frame rate is unknown
``SAM2S.SourceFrameIndices`` comma-separated index of each imported frame in the source
``SAM2S.SourceSize``        ``"W,H"`` of the source frames in pixels
``SAM2S.Scale``             imported width / source width (``"1"`` when not resized)
=========================== ================================================================

Frames are decoded one at a time with the engine's ``sam2s.open_frames`` (PyAV for video
files, PIL for images) straight into the volume's memory: the whole video is never held twice.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

VIDEO_ATTRIBUTE = "SAM2S.Video"
ATTRIBUTES = (
    "SAM2S.Source",
    "SAM2S.SourceType",
    "SAM2S.FrameRate",
    "SAM2S.FrameStep",
    "SAM2S.FrameTimes",
    "SAM2S.SourceFrameIndices",
    "SAM2S.SourceSize",
    "SAM2S.Scale",
)
IJK_TO_RAS_DIRECTIONS = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))
"""Row-major 3x3: IJK to RAS directions putting row 0 at the top of an axial slice view."""

ProgressCallback = Callable[[int, int], None]

__all__ = [
    "IJK_TO_RAS_DIRECTIONS",
    "ImportCancelled",
    "frameRate",
    "frameTimes",
    "importFrames",
    "importSequence",
    "isVideoVolume",
    "selectFrames",
]


class ImportCancelled(RuntimeError):
    """The import was cancelled; no node was left in the scene."""


def isVideoVolume(node) -> bool:
    """True for a volume made by this module (``SAM2S.Video`` attribute)."""
    return node is not None and node.GetAttribute(VIDEO_ATTRIBUTE) == "1"


def frameRate(videoNode) -> float | None:
    """The source frame rate (frames per second) recorded on ``videoNode``, or None."""
    value = videoNode.GetAttribute("SAM2S.FrameRate") or ""
    try:
        return float(value) if value else None
    except ValueError:
        return None


def frameTimes(videoNode) -> list[float] | None:
    """The time of each frame of ``videoNode`` in seconds, or None when unknown."""
    value = videoNode.GetAttribute("SAM2S.FrameTimes") or ""
    return [float(v) for v in value.split(",")] if value else None


def _sourceTimes(source) -> list[float] | None:
    """Time in seconds of every frame of an ``sam2s`` frame source, relative to its first frame.

    Uses the source's public ``frame_times`` when it has one; for PyAV sources the decoded
    presentation timestamps times the stream's time base; otherwise ``index / fps``; None when the
    source has no frame rate (image folders).
    """
    times = getattr(source, "frame_times", None)
    if times is not None:
        times = [float(t) for t in times]
        return [t - times[0] for t in times]
    pts, stream = getattr(source, "_pts", None), getattr(source, "_stream", None)
    base = getattr(stream, "time_base", None)
    if pts and base:
        return [float((Fraction(p) - Fraction(pts[0])) * Fraction(base)) for p in pts]
    fps = getattr(source, "fps", None)
    if fps:
        return [i / float(fps) for i in range(len(source))]
    return None


def selectFrames(
    count: int,
    times: list[float] | None,
    frameStep: int = 1,
    startTime: float | None = None,
    endTime: float | None = None,
    firstFrame: int | None = None,
    lastFrame: int | None = None,
) -> list[int]:
    """Indices of the source frames to import.

    Keeps source frames ``firstFrame .. lastFrame`` (inclusive, default all) whose time lies in
    ``[startTime, endTime]`` seconds (default unbounded), then every ``frameStep``-th of them,
    starting with the first.

    Raises:
        ValueError: ``frameStep`` < 1, a time range without known frame times, or a selection
            that keeps no frame (the message gives the video's frame and time range).
    """
    if isinstance(frameStep, bool) or int(frameStep) != frameStep or frameStep < 1:
        raise ValueError(f"frameStep must be an integer >= 1 (1 keeps every frame); got {frameStep!r}.")
    first = 0 if firstFrame is None else int(firstFrame)
    last = count - 1 if lastFrame is None else int(lastFrame)
    if not (0 <= first <= last <= count - 1):
        raise ValueError(f"Frame range {first}..{last} is not within the source's frames 0..{count - 1}.")
    indices = list(range(first, last + 1))
    if startTime is not None or endTime is not None:
        if times is None:
            raise ValueError(
                "A time range needs frame times, but this source has no frame rate (an image folder?); "
                "pass frameRate=... or select frames with firstFrame/lastFrame instead."
            )
        lo = -math.inf if startTime is None else float(startTime)
        hi = math.inf if endTime is None else float(endTime)
        eps = 1e-6
        indices = [i for i in indices if lo - eps <= times[i] <= hi + eps]
        if not indices:
            raise ValueError(
                f"No frame lies between {lo} s and {hi} s; the source's frames span {times[0]:.3f} .. "
                f"{times[-1]:.3f} s."
            )
    return indices[:: int(frameStep)]


def _targetSize(width: int, height: int, maxWidth: int | None) -> tuple[int, int]:
    if maxWidth is None or maxWidth <= 0 or width <= maxWidth:
        return width, height
    return int(maxWidth), max(1, int(round(height * maxWidth / width)))


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Downscale an ``(H, W, 3)`` uint8 frame to ``size`` = (W, H) with OpenCV's INTER_AREA."""
    if (frame.shape[1], frame.shape[0]) == size:
        return frame
    import cv2

    return cv2.resize(np.ascontiguousarray(frame), size, interpolation=cv2.INTER_AREA)


def _allocateVideoVolume(scene, name: str, width: int, height: int, count: int, volumeNode=None):
    """A vector volume of ``width x height x count`` RGB uint8 voxels and its ``(T, H, W, 3)`` numpy view."""
    image = vtk.vtkImageData()
    image.SetDimensions(width, height, count)
    try:
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    except MemoryError as error:  # pragma: no cover - depends on the machine
        raise MemoryError(
            f"Not enough memory for {count} frames of {width}x{height} RGB ({count * width * height * 3 / 2**30:.1f} "
            "GiB); import fewer frames (frame step, time range) or smaller ones (maximum width)."
        ) from error
    if image.GetPointData().GetScalars() is None:  # pragma: no cover - VTK reports failure this way
        raise MemoryError(f"Could not allocate {count} frames of {width}x{height} RGB; import fewer or smaller frames.")
    view = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(count, height, width, 3)
    node = volumeNode or slicer.vtkMRMLVectorVolumeNode()
    node.SetName(name)
    node.SetAndObserveImageData(image)
    node.SetSpacing(1.0, 1.0, 1.0)
    node.SetOrigin(0.0, 0.0, 0.0)
    node.SetIJKToRASDirections(*IJK_TO_RAS_DIRECTIONS[0], *IJK_TO_RAS_DIRECTIONS[1], *IJK_TO_RAS_DIRECTIONS[2])
    return node, view


def _finishNode(scene, node, attributes: dict[str, str], addToScene: bool) -> None:
    node.SetAttribute(VIDEO_ATTRIBUTE, "1")
    for key, value in attributes.items():
        node.SetAttribute(key, value)
    if addToScene and node.GetScene() is None:
        scene.AddNode(node)
    if node.GetScene() is not None and node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    node.Modified()


def _fmt(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def importFrames(
    scene,
    source,
    name: str | None = None,
    frameStep: int = 1,
    startTime: float | None = None,
    endTime: float | None = None,
    firstFrame: int | None = None,
    lastFrame: int | None = None,
    maxWidth: int | None = None,
    frameRate: float | None = None,
    progressCallback: ProgressCallback | None = None,
    cancelEvent: threading.Event | None = None,
):
    """Import a video file (mp4/avi/mov/mkv/webm/m4v), an image folder or frames into a new video volume.

    Args:
        scene: the MRML scene the node is added to.
        source: a video file path, a folder of images (jpg/png/bmp/tif, ordered by the number in their
            names), a ``(T, H, W, 3)`` uint8 RGB array or a ``sam2s.FrameSource``.
        name: node name (default: the file or folder name).
        frameStep: keep every ``frameStep``-th selected frame (>= 1).
        startTime, endTime: keep frames whose time (seconds from the first frame) is in this range.
        firstFrame, lastFrame: keep source frames in this index range (inclusive).
        maxWidth: downscale frames wider than this many pixels (aspect ratio kept, OpenCV INTER_AREA).
        frameRate: frames per second for sources without one (image folders, arrays); ignored for videos.
        progressCallback: called as ``(doneFrames, totalFrames)`` after each frame.
        cancelEvent: set it (from any thread) to stop; the partial node is then discarded.

    Returns:
        The new ``vtkMRMLVectorVolumeNode`` (see the module docstring for layout and attributes).

    Raises:
        FileNotFoundError, ValueError, sam2s.FrameSourceError: unreadable source or bad options
            (the message names the fix). ImportCancelled: cancelled. MemoryError: too many frames.
    """
    from sam2s.frames import open_frames

    kind = "array" if isinstance(source, np.ndarray) else None
    path = None
    if isinstance(source, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(source))
        kind = "folder" if os.path.isdir(path) else "video"
    frames = open_frames(source)
    if kind is None:
        kind = "array"
    try:
        times = _sourceTimes(frames)
        rate = frames.fps
        if times is None and frameRate:
            rate = float(frameRate)
            times = [i / rate for i in range(len(frames))]
        indices = selectFrames(len(frames), times, frameStep, startTime, endTime, firstFrame, lastFrame)
        if name is None:
            name = os.path.basename(path.rstrip(os.sep)) if path else "Video"
            name = os.path.splitext(name)[0] if kind == "video" else name
        width, height = _targetSize(frames.width, frames.height, maxWidth)
        node, view = _allocateVideoVolume(scene, name, width, height, len(indices))
        for done, index in enumerate(indices):
            if cancelEvent is not None and cancelEvent.is_set():
                raise ImportCancelled(f"Import of {frames.name} cancelled after {done} of {len(indices)} frames.")
            view[done] = _resize(frames.get(index), (width, height))
            if progressCallback is not None:
                progressCallback(done + 1, len(indices))
    finally:
        frames.close()
    attributes = {
        "SAM2S.Source": path if path else frames.name,
        "SAM2S.SourceType": kind,
        "SAM2S.FrameRate": _fmt(float(rate)) if rate else "",
        "SAM2S.FrameStep": str(int(frameStep)),
        "SAM2S.FrameTimes": ",".join(_fmt(round(times[i], 6)) for i in indices) if times else "",
        "SAM2S.SourceFrameIndices": ",".join(str(i) for i in indices),
        "SAM2S.SourceSize": f"{frames.width},{frames.height}",
        "SAM2S.Scale": _fmt(width / frames.width),
    }
    _finishNode(scene, node, attributes, addToScene=True)
    return node


def _sequenceFrameArray(dataNode, index: int, sequenceName: str) -> np.ndarray:
    """Frame ``index`` of a sequence as ``(H, W, 3)`` uint8 (grey replicated, alpha dropped)."""
    image = dataNode.GetImageData() if hasattr(dataNode, "GetImageData") else None
    if image is None:
        raise ValueError(
            f"Item {index} of sequence '{sequenceName}' is not an image volume; import a sequence of 2D frames."
        )
    dims = image.GetDimensions()
    if dims[2] != 1:
        raise ValueError(
            f"Item {index} of sequence '{sequenceName}' has {dims[2]} slices; only single-slice (2D) frames "
            "can be imported as video frames."
        )
    array = slicer.util.arrayFromVolume(dataNode)[0]  # (H, W) or (H, W, C)
    if array.dtype != np.uint8:
        raise ValueError(
            f"Sequence '{sequenceName}' has {array.dtype} pixels; video frames must be 8-bit. Rescale them to "
            "0..255 (e.g. with the Volumes module / Cast Scalar Volume) first."
        )
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if array.shape[2] in (3, 4):
        return array[:, :, :3]
    raise ValueError(f"Sequence '{sequenceName}' frames have {array.shape[2]} components; expected 1, 3 or 4.")


def importSequence(
    scene,
    sequenceNode,
    name: str | None = None,
    frameStep: int = 1,
    startTime: float | None = None,
    endTime: float | None = None,
    firstFrame: int | None = None,
    lastFrame: int | None = None,
    maxWidth: int | None = None,
    progressCallback: ProgressCallback | None = None,
    cancelEvent: threading.Event | None = None,
):
    """Stack the 2D frames of a ``vtkMRMLSequenceNode`` (scalar or vector volumes, one slice each,
    8-bit; e.g. 2D+t ultrasound loaded from DICOM) into a new video volume.

    Frame times come from the sequence's index values when its index unit is ``s`` or ``ms``
    (converted to seconds, relative to the first item); other units leave the times unknown.
    Pixel rows keep their array order (row 0 of each frame's ``arrayFromVolume`` is the top row).
    Options are those of :func:`importFrames`.

    Raises:
        ValueError: an empty sequence, non-image items, several slices, non-8-bit pixels or frames
            of different sizes. ImportCancelled: cancelled (no node is left).
    """
    sequenceName = sequenceNode.GetName()
    count = sequenceNode.GetNumberOfDataNodes()
    if count == 0:
        raise ValueError(f"Sequence '{sequenceName}' is empty; record or load frames into it first.")
    unit = (sequenceNode.GetIndexUnit() or "").strip().lower()
    times = None
    if unit in ("s", "sec", "second", "seconds", "ms", "msec", "millisecond", "milliseconds"):
        scale = 0.001 if unit.startswith("m") else 1.0
        try:
            values = [float(sequenceNode.GetNthIndexValue(i)) * scale for i in range(count)]
            times = [v - values[0] for v in values]
        except ValueError:
            times = None
    indices = selectFrames(count, times, frameStep, startTime, endTime, firstFrame, lastFrame)
    first = _sequenceFrameArray(sequenceNode.GetNthDataNode(indices[0]), indices[0], sequenceName)
    sourceHeight, sourceWidth = first.shape[:2]
    width, height = _targetSize(sourceWidth, sourceHeight, maxWidth)
    node, view = _allocateVideoVolume(scene, name or sequenceName, width, height, len(indices))
    for done, index in enumerate(indices):
        if cancelEvent is not None and cancelEvent.is_set():
            raise ImportCancelled(f"Import of sequence '{sequenceName}' cancelled after {done} frames.")
        frame = _sequenceFrameArray(sequenceNode.GetNthDataNode(index), index, sequenceName)
        if frame.shape[:2] != (sourceHeight, sourceWidth):
            raise ValueError(
                f"Item {index} of sequence '{sequenceName}' is {frame.shape[1]}x{frame.shape[0]} pixels but item "
                f"{indices[0]} is {sourceWidth}x{sourceHeight}; all frames must have one size."
            )
        view[done] = _resize(frame, (width, height))
        if progressCallback is not None:
            progressCallback(done + 1, len(indices))
    rate = None
    if times is not None and len(times) > 1:
        steps = np.diff(times)
        if np.all(steps > 0):
            rate = 1.0 / float(np.median(steps))
    attributes = {
        "SAM2S.Source": f"sequence:{sequenceName}",
        "SAM2S.SourceType": "sequence",
        "SAM2S.FrameRate": _fmt(round(rate, 6)) if rate else "",
        "SAM2S.FrameStep": str(int(frameStep)),
        "SAM2S.FrameTimes": ",".join(_fmt(round(times[i], 6)) for i in indices) if times else "",
        "SAM2S.SourceFrameIndices": ",".join(str(i) for i in indices),
        "SAM2S.SourceSize": f"{sourceWidth},{sourceHeight}",
        "SAM2S.Scale": _fmt(width / sourceWidth),
    }
    _finishNode(scene, node, attributes, addToScene=True)
    return node
