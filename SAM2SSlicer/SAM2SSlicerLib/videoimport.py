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

Memory guard. VTK allocates the volume with ``vtkImageData::AllocateScalars``
(``Common/DataModel/vtkImageData.cxx``), which allocates the scalar array through
``vtkGenericDataArray::Allocate`` (``Common/Core/vtkGenericDataArray.txx``); when that allocation
fails VTK logs "Unable to allocate ... elements" and a C++ ``std::bad_alloc`` escapes that the
Python wrapping does not turn into ``MemoryError``, so the process aborts (SIGABRT, exit code
134; observed with VTK 9 of ``slicer-core`` under ``RLIMIT_AS``): inside Slicer the application
dies. Before allocating, :func:`checkVideoMemory` therefore compares the bytes the import
needs (the ``T x H x W x 3`` RGB volume plus ``labelmaps`` uint8 volumes of ``T x H x W`` that
tracking and export will need: the segmentation's labelmap layer and a label export, by default
2) with :func:`availableMemoryBytes` less a safety margin (``MEMORY_MARGIN_FRACTION`` of it plus
``MEMORY_MARGIN_BYTES``), and raises :class:`NotEnoughMemoryError` with import options that fit
(frame step, maximum width, shorter range) before anything is allocated or added to the scene.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import slicer
import vtk
from sam2s.resources import available_memory_bytes as availableMemoryBytes
from vtk.util import numpy_support

VIDEO_ATTRIBUTE = "SAM2S.Video"
"""Node attribute ``"1"`` marking a video volume of this module; the others are in ``ATTRIBUTES``."""
SOURCE, SOURCE_TYPE, FRAME_RATE, FRAME_STEP, FRAME_TIMES, SOURCE_FRAME_INDICES, SOURCE_SIZE, SCALE = ATTRIBUTES = tuple(
    f"SAM2S.{name}"
    for name in (
        "Source",
        "SourceType",
        "FrameRate",
        "FrameStep",
        "FrameTimes",
        "SourceFrameIndices",
        "SourceSize",
        "Scale",
    )
)
"""The video volume's node attributes (strings; see the module docstring), one definition each."""
IJK_TO_RAS_DIRECTIONS = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))
"""Row-major 3x3: IJK to RAS directions putting row 0 at the top of an axial slice view."""

ProgressCallback = Callable[[int, int], None]

MEMORY_MARGIN_FRACTION = 0.10
"""Part of the available memory never planned for (other allocations of Slicer, decoding buffers)."""
MEMORY_MARGIN_BYTES = 256 * 2**20
"""Memory never planned for on top of ``MEMORY_MARGIN_FRACTION`` (256 MiB)."""
_GIB = float(2**30)

__all__ = [
    "IJK_TO_RAS_DIRECTIONS",
    "MEMORY_MARGIN_BYTES",
    "MEMORY_MARGIN_FRACTION",
    "ImportCancelled",
    "NotEnoughMemoryError",
    "availableMemoryBytes",
    "checkVideoMemory",
    "frameRate",
    "frameTimes",
    "importFrames",
    "importSequence",
    "isVideoVolume",
    "sourceFrameIndices",
    "selectFrames",
    "videoArray",
]


class ImportCancelled(RuntimeError):
    """The import was cancelled; no node was left in the scene."""


class NotEnoughMemoryError(MemoryError):
    """The video volume and its labelmaps would not fit in the available memory; nothing was allocated.

    Attributes:
        neededBytes: ``videoBytes + labelmapBytes``.
        videoBytes: ``frames x H x W x 3`` (the RGB uint8 video volume).
        labelmapBytes: ``labelmaps x frames x H x W`` (uint8 labelmaps / label volumes).
        availableBytes: the memory available (before the safety margin), in bytes.
        usableBytes: ``availableBytes`` less the safety margin (what the import may use).
        suggestions: import options that fit, e.g. ``{"frameStep": 3, "maxWidth": 640,
            "lastFrame": 57, "endTime": 2.28}`` (only those that could be computed).
    """

    def __init__(
        self,
        message: str,
        neededBytes: int,
        videoBytes: int,
        labelmapBytes: int,
        availableBytes: int,
        usableBytes: int,
        suggestions: dict[str, Any],
    ) -> None:
        super().__init__(message)
        self.neededBytes = neededBytes
        self.videoBytes = videoBytes
        self.labelmapBytes = labelmapBytes
        self.availableBytes = availableBytes
        self.usableBytes = usableBytes
        self.suggestions = suggestions


def _usableBytes(available: int) -> int:
    return max(0, int(available - available * MEMORY_MARGIN_FRACTION - MEMORY_MARGIN_BYTES))


def _checkCount(value, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _checkMemoryOptions(labelmaps, availableMemory, workBytes=0) -> None:
    """Validate the memory keywords of the import functions (before any work)."""
    _checkCount(labelmaps, "labelmaps (uint8 label volumes to plan memory for; 0 = only the video)", 0)
    _checkCount(workBytes, "workBytes (working memory in bytes besides the volumes)", 0)
    if availableMemory is not None:
        _checkCount(availableMemory, "availableMemory (bytes; None measures it)", 0)


def checkVideoMemory(
    width: int,
    height: int,
    frameCount: int,
    labelmaps: int = 2,
    availableBytes: int | None = None,
    *,
    sourceWidth: int | None = None,
    sourceHeight: int | None = None,
    selectedFrames: Sequence[int] | None = None,
    frameStep: int = 1,
    times: Sequence[float] | None = None,
    workBytes: int = 0,
) -> int:
    """Check that a video volume of ``frameCount`` frames of ``width x height`` pixels fits in memory.

    Needed: ``frameCount * height * width * 3`` bytes (RGB uint8 volume) plus
    ``labelmaps * frameCount * height * width`` bytes (uint8 labelmaps the caller will need) plus
    ``workBytes`` (the caller's working memory besides the volumes, e.g. a tracking engine's).
    Usable: ``availableBytes`` (default :func:`availableMemoryBytes`) less the safety margin
    ``MEMORY_MARGIN_FRACTION * available + MEMORY_MARGIN_BYTES``. Nothing is allocated.

    Args:
        width, height: frame size in pixels after resizing (columns, rows).
        frameCount: frames to import.
        labelmaps: number of ``frameCount x H x W`` uint8 volumes to plan for besides the video (>= 0).
        availableBytes: the memory available in bytes (an injected figure); None measures it.
            When it cannot be measured the check passes (the allocation's own ``MemoryError`` remains).
        sourceWidth, sourceHeight: source frame size (default: ``width``, ``height``), for the
            ``maxWidth`` suggestion (computed as ``importFrames`` resizes: aspect ratio kept).
        selectedFrames: source indices of the frames selected by the range options before the
            frame step (default ``range(frameCount * frameStep)``), for the ``frameStep`` and
            range suggestions.
        frameStep: the frame step the ``frameCount`` frames were taken with.
        times: time in seconds of every source frame (or None), for the ``endTime`` suggestion.
        workBytes: bytes needed besides the volumes, whatever the frame count (>= 0).

    Returns:
        The bytes needed.

    Raises:
        ValueError: a size, count or step that is not a positive integer (``labelmaps`` < 0).
        NotEnoughMemoryError: it does not fit; the message gives the needed GiB (video and
            labelmaps), the usable GiB and options that fit (``frameStep``, ``maxWidth``,
            ``lastFrame`` / ``endTime``); the same values are in its ``suggestions``.
    """
    width, height = _checkCount(width, "width", 1), _checkCount(height, "height", 1)
    frameCount = _checkCount(frameCount, "frameCount", 1)
    frameStep = _checkCount(frameStep, "frameStep", 1)
    _checkMemoryOptions(labelmaps, availableBytes, workBytes)
    labelmaps, workBytes = int(labelmaps), int(workBytes)
    perFrame = width * height * (3 + labelmaps)
    videoBytes, labelmapBytes = frameCount * width * height * 3, frameCount * width * height * labelmaps
    needed = videoBytes + labelmapBytes + workBytes
    available = availableMemoryBytes() if availableBytes is None else int(availableBytes)
    if available is None:
        return needed
    usable = _usableBytes(available)
    if needed <= usable:
        return needed
    fitFrames = max(0, usable - workBytes) // perFrame  # frames whose volumes fit besides workBytes
    selected = list(selectedFrames) if selectedFrames is not None else list(range(frameCount * frameStep))
    suggestions: dict[str, Any] = {}
    advice: list[str] = []
    _suggestFrameStep(selected, frameStep, fitFrames, suggestions, advice)
    sourceSize = (sourceWidth or width, sourceHeight or height)
    _suggestMaxWidth((width, height), sourceSize, frameCount, labelmaps, workBytes, usable, suggestions, advice)
    _suggestShorterRange(selected, frameStep, fitFrames, times, suggestions, advice)
    sizes = (needed, videoBytes, labelmapBytes, workBytes, usable, available)
    message = _notEnoughMemoryMessage(frameCount, width, height, labelmaps, sizes, advice)
    raise NotEnoughMemoryError(message, needed, videoBytes, labelmapBytes, available, usable, suggestions)


def _suggestFrameStep(selected: list[int], frameStep: int, fitFrames: int, suggestions: dict, advice: list) -> None:
    """Add the smallest larger ``frameStep`` whose frames fit (``fitFrames`` of the ``selected``)."""
    if fitFrames >= 1:
        step = max(frameStep + 1, math.ceil(len(selected) / fitFrames))
        kept = math.ceil(len(selected) / step)
        if kept <= fitFrames:
            suggestions["frameStep"] = step
            advice.append(f"frameStep={step} ({kept} frames)")


def _suggestMaxWidth(
    size: tuple[int, int],
    sourceSize: tuple[int, int],
    frameCount: int,
    labelmaps: int,
    workBytes: int,
    usable: int,
    suggestions: dict,
    advice: list,
) -> None:
    """Add the largest ``maxWidth`` (>= 16 pixels) at which ``frameCount`` frames fit in ``usable``
    bytes (frames resized from ``sourceSize`` as ``importFrames`` does; ``workBytes`` scaled with
    the frame area)."""
    width, height = size
    volumeRoom = max(0, usable - workBytes)  # what the volumes may take
    candidate = min(width - 1, int(math.sqrt(volumeRoom / max(1, frameCount * (3 + labelmaps)) * width / height)))
    while candidate >= 16:
        w, h = _targetSize(sourceSize[0], sourceSize[1], candidate)
        if frameCount * w * h * (3 + labelmaps) + workBytes * w * h / (width * height) <= usable:
            suggestions["maxWidth"] = candidate
            advice.append(f"maxWidth={candidate} ({w}x{h} pixels)")
            break
        candidate -= 1


def _suggestShorterRange(
    selected: list[int], frameStep: int, fitFrames: int, times, suggestions: dict, advice: list
) -> None:
    """Add the ``lastFrame`` (and, with frame ``times``, the ``endTime`` seconds) that keeps the first
    ``fitFrames`` frames."""
    if fitFrames >= 1:
        kept = selected[::frameStep][: int(fitFrames)]
        suggestions["lastFrame"] = kept[-1]
        text = f"a shorter range: lastFrame={kept[-1]} ({len(kept)} frames)"
        if times is not None and kept[-1] < len(times):
            suggestions["endTime"] = round(float(times[kept[-1]]), 3)
            text += f" or endTime={suggestions['endTime']:g} s"
        advice.append(text)


def _notEnoughMemoryMessage(
    frameCount: int, width: int, height: int, labelmaps: int, sizes: tuple[int, ...], advice: list[str]
) -> str:
    """The ``NotEnoughMemoryError`` message; ``sizes`` = ``(needed, videoBytes, labelmapBytes,
    workBytes, usable, available)`` bytes."""
    needed, videoBytes, labelmapBytes, workBytes, usable, available = sizes
    options = "; ".join(advice) if advice else "no import option fits"
    return (
        f"Not enough memory to import {frameCount} frames of {width}x{height} pixels: it needs "
        f"{needed / _GIB:.2f} GiB (video {videoBytes / _GIB:.2f} GiB = frames x H x W x 3 bytes, plus labelmaps "
        f"{labelmapBytes / _GIB:.2f} GiB = {labelmaps} x frames x H x W bytes"
        + (f", plus working memory {workBytes / _GIB:.2f} GiB" if workBytes else "")
        + f") but only {usable / _GIB:.2f} GiB "
        f"is usable ({available / _GIB:.2f} GiB available less a {MEMORY_MARGIN_FRACTION:.0%} + "
        f"{MEMORY_MARGIN_BYTES // 2**20} MiB safety margin). Import fewer or smaller frames: {options}; "
        "or free memory (close other volumes or applications) and import again. Nothing was imported."
    )


def isVideoVolume(node) -> bool:
    """True for a volume made by this module (``SAM2S.Video`` attribute)."""
    return node is not None and node.GetAttribute(VIDEO_ATTRIBUTE) == "1"


def videoArray(videoNode) -> np.ndarray:
    """``(T, H, W, 3)`` (or grey ``(T, H, W)``, or ``(T, H, W, 1|4)``) uint8 view of a video volume's
    voxels, ``[frame, row, column(, channel)]`` (no copy), as tracking reads it.

    Raises:
        ValueError: the volume has no image data, or is not 8-bit RGB or grey frames.
    """
    image = videoNode.GetImageData() if videoNode is not None else None
    if image is None or image.GetPointData().GetScalars() is None:
        raise ValueError(f"Volume '{videoNode.GetName() if videoNode else None}' has no image data.")
    array = slicer.util.arrayFromVolume(videoNode)
    if array.dtype != np.uint8 or not (array.ndim == 3 or (array.ndim == 4 and array.shape[3] in (1, 3, 4))):
        raise ValueError(
            f"Volume '{videoNode.GetName()}' is {array.dtype} with shape {array.shape}; tracking needs 8-bit "
            "RGB or grey frames: import the video with the SAM2S module."
        )
    return array


def frameRate(videoNode) -> float | None:
    """The source frame rate (frames per second) recorded on ``videoNode``, or None."""
    value = videoNode.GetAttribute(FRAME_RATE) or ""
    try:
        return float(value) if value else None
    except ValueError:
        return None


def frameTimes(videoNode) -> list[float] | None:
    """The time of each frame of ``videoNode`` in seconds, or None when unknown."""
    value = videoNode.GetAttribute(FRAME_TIMES) or ""
    return [float(v) for v in value.split(",")] if value else None


def sourceFrameIndices(videoNode) -> list[int]:
    """The index in the source video of each frame of ``videoNode`` (``SAM2S.SourceFrameIndices``);
    ``0 .. T-1`` when unknown or not one per frame."""
    count = videoNode.GetImageData().GetDimensions()[2]
    try:
        indices = [int(v) for v in (videoNode.GetAttribute(SOURCE_FRAME_INDICES) or "").split(",")]
    except ValueError:
        indices = []
    return indices if len(indices) == count else list(range(count))


def _attributes(source: str, kind: str, rate, frameStep: int, times, indices, sourceSize, width: int) -> dict[str, str]:
    """The ``ATTRIBUTES`` of a new video volume as strings (see the module docstring)."""
    return {
        SOURCE: source,
        SOURCE_TYPE: kind,
        FRAME_RATE: _fmt(round(float(rate), 6)) if rate else "",
        FRAME_STEP: str(int(frameStep)),
        FRAME_TIMES: ",".join(_fmt(round(times[i], 6)) for i in indices) if times else "",
        SOURCE_FRAME_INDICES: ",".join(str(i) for i in indices),
        SOURCE_SIZE: f"{sourceSize[0]},{sourceSize[1]}",
        SCALE: _fmt(width / sourceSize[0]),
    }


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
    """A vector volume of ``width x height x count`` RGB uint8 voxels and its ``(T, H, W, 3)`` numpy view.

    Call :func:`checkVideoMemory` first: a failed allocation inside VTK aborts the process (see the
    module docstring); the ``MemoryError`` handling below covers the cases VTK reports to Python.
    """
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
        # vtkMRMLVectorVolumeNode::CreateDefaultDisplayNodes, with the 8-bit identity window/level
        # set first: its automatic window/level would scan every voxel (~25 ms per 150 MB of video)
        display = node.GetScene().AddNewNodeByClass("vtkMRMLVectorVolumeDisplayNode")
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(255.0, 127.5)
        display.SetDefaultColorMap()
        node.SetAndObserveDisplayNodeID(display.GetID())
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
    labelmaps: int = 2,
    availableMemory: int | None = None,
    workBytes: int = 0,
):
    """Import a video file (mp4/avi/mov/mkv/webm/m4v, or DICOM: ``dicomvideo``), an image folder or frames
    into a new video volume.

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
        progressCallback: called as ``(doneFrames, totalFrames)`` once opened (0) and after each frame.
        cancelEvent: set it (from any thread) to stop; the partial node is then discarded.
        labelmaps: uint8 ``T x H x W`` volumes to plan memory for besides the video (>= 0; default 2:
            the segmentation's labelmap layer and a label export). See :func:`checkVideoMemory`.
        availableMemory: bytes available to the import (an injected figure, before the safety
            margin); None measures it with :func:`availableMemoryBytes`.
        workBytes: working memory the caller needs besides the volumes (see :func:`checkVideoMemory`).

    Returns:
        The new ``vtkMRMLVectorVolumeNode`` (see the module docstring for layout and attributes).

    Raises:
        FileNotFoundError, ValueError, sam2s.FrameSourceError: unreadable source or bad options
            (the message names the fix). ImportCancelled: cancelled.
        NotEnoughMemoryError: the volume and ``labelmaps`` would not fit in memory (checked before
            allocating; the message gives the sizes and options that fit). MemoryError: the
            allocation failed anyway.
    """
    _checkMemoryOptions(labelmaps, availableMemory, workBytes)
    from .dicomvideo import openVideo

    path = os.path.abspath(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else None
    kind = ("folder" if os.path.isdir(path) else "video") if path else "array"
    frames = openVideo(source)  # DICOM files by content, else sam2s.frames.open_frames
    try:
        times, rate = _sourceTimes(frames, frameRate)
        ranges = (startTime, endTime, firstFrame, lastFrame)
        indices = selectFrames(len(frames), times, frameStep, *ranges)
        sourceSize = (frames.width, frames.height)
        size = _targetSize(*sourceSize, maxWidth)
        _checkImportMemory(
            size, sourceSize, indices, len(frames), times, frameStep, ranges, labelmaps, availableMemory, workBytes
        )
        name = name if name is not None else _defaultName(path, kind)
        node, view = _allocateVideoVolume(scene, name, *size, len(indices))
        _copyFrames(
            view,
            indices,
            frames.get,
            size,
            progressCallback,
            cancelEvent,
            lambda done: f"Import of {frames.name} cancelled after {done} of {len(indices)} frames.",
        )
    finally:
        frames.close()
    attributes = _attributes(path if path else frames.name, kind, rate, frameStep, times, indices, sourceSize, size[0])
    _finishNode(scene, node, attributes, addToScene=True)
    return node


def _sourceTimes(frames, frameRate: float | None) -> tuple[list[float] | None, float | None]:
    """``(times, rate)`` of a ``sam2s.FrameSource``: seconds from the first frame of every frame, and
    frames per second; ``frameRate`` gives both to a source without times (image folder, array)."""
    times = frames.frame_times  # seconds from the first frame (the engine's FrameSource)
    rate = frames.fps
    if times is None and frameRate:
        rate = float(frameRate)
        times = [i / rate for i in range(len(frames))]
    return times, rate


def _defaultName(path: str | None, kind: str) -> str:
    """The node name of an import without ``name``: the file (without extension) or folder name, or
    ``"Video"`` for frames given as an array."""
    if not path:
        return "Video"
    name = os.path.basename(path.rstrip(os.sep))
    return os.path.splitext(name)[0] if kind == "video" else name


def _checkImportMemory(
    size: tuple[int, int],
    sourceSize: tuple[int, int],
    indices: list[int],
    count: int,
    times,
    frameStep: int,
    ranges: tuple,
    labelmaps: int,
    availableMemory: int | None,
    workBytes: int = 0,
) -> None:
    """:func:`checkVideoMemory` for the selected source ``indices`` (of ``count``) resized to ``size``
    = (W, H) pixels from ``sourceSize``; ``ranges`` = ``(startTime, endTime, firstFrame, lastFrame)``
    (the frames they select before the step give the suggestions). Raises ``NotEnoughMemoryError``."""
    checkVideoMemory(
        size[0],
        size[1],
        len(indices),
        labelmaps,
        availableMemory,
        sourceWidth=sourceSize[0],
        sourceHeight=sourceSize[1],
        selectedFrames=selectFrames(count, times, 1, *ranges),
        frameStep=int(frameStep),
        times=times,
        workBytes=workBytes,
    )


def _copyFrames(
    view: np.ndarray,
    indices: list[int],
    readFrame: Callable[[int], np.ndarray],
    size: tuple[int, int],
    progressCallback: ProgressCallback | None,
    cancelEvent: threading.Event | None,
    cancelMessage: Callable[[int], str],
) -> None:
    """Fill ``view`` (``(T, H, W, 3)`` uint8) with ``readFrame(index)`` (``(h, w, 3)`` uint8) of each
    selected source index, resized to ``size`` = (W, H); ``progressCallback(done, total)`` before
    the first frame (done 0) and after each frame. Raises ``ImportCancelled(cancelMessage(done))`` when ``cancelEvent`` is set."""
    if progressCallback is not None:
        progressCallback(0, len(indices))  # opened: a progress dialog shows "0 of T" before the first decode
    for done, index in enumerate(indices):
        if cancelEvent is not None and cancelEvent.is_set():
            raise ImportCancelled(cancelMessage(done))
        view[done] = _resize(readFrame(index), size)
        if progressCallback is not None:
            progressCallback(done + 1, len(indices))


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
    labelmaps: int = 2,
    availableMemory: int | None = None,
):
    """Stack the 2D frames of a ``vtkMRMLSequenceNode`` (scalar or vector volumes, one slice each,
    8-bit; e.g. 2D+t ultrasound loaded from DICOM) into a new video volume.

    Frame times come from the sequence's index values when its index unit is ``s`` or ``ms``
    (converted to seconds, relative to the first item); other units leave the times unknown.
    Pixel rows keep their array order (row 0 of each frame's ``arrayFromVolume`` is the top row).
    Options (also ``labelmaps`` and ``availableMemory``) are those of :func:`importFrames`; the
    frame size for the memory check is that of the first selected item.

    Raises:
        ValueError: an empty sequence, non-image items, several slices, non-8-bit pixels or frames
            of different sizes. ImportCancelled: cancelled (no node is left).
        NotEnoughMemoryError: too many or too large frames for the memory available (nothing allocated).
    """
    _checkMemoryOptions(labelmaps, availableMemory)
    sequenceName = sequenceNode.GetName()
    count = sequenceNode.GetNumberOfDataNodes()
    if count == 0:
        raise ValueError(f"Sequence '{sequenceName}' is empty; record or load frames into it first.")
    times = _sequenceTimes(sequenceNode, count)
    ranges = (startTime, endTime, firstFrame, lastFrame)
    indices = selectFrames(count, times, frameStep, *ranges)
    first = _sequenceFrameArray(sequenceNode.GetNthDataNode(indices[0]), indices[0], sequenceName)
    sourceSize = (first.shape[1], first.shape[0])
    size = _targetSize(*sourceSize, maxWidth)
    _checkImportMemory(size, sourceSize, indices, count, times, frameStep, ranges, labelmaps, availableMemory)
    node, view = _allocateVideoVolume(scene, name or sequenceName, *size, len(indices))

    def readFrame(index: int) -> np.ndarray:
        frame = _sequenceFrameArray(sequenceNode.GetNthDataNode(index), index, sequenceName)
        if frame.shape[:2] != (sourceSize[1], sourceSize[0]):
            raise ValueError(
                f"Item {index} of sequence '{sequenceName}' is {frame.shape[1]}x{frame.shape[0]} pixels but item "
                f"{indices[0]} is {sourceSize[0]}x{sourceSize[1]}; all frames must have one size."
            )
        return frame

    _copyFrames(
        view,
        indices,
        readFrame,
        size,
        progressCallback,
        cancelEvent,
        lambda done: f"Import of sequence '{sequenceName}' cancelled after {done} frames.",
    )
    attributes = _attributes(
        f"sequence:{sequenceName}", "sequence", _rateOfTimes(times), frameStep, times, indices, sourceSize, size[0]
    )
    _finishNode(scene, node, attributes, addToScene=True)
    return node


def _sequenceTimes(sequenceNode, count: int) -> list[float] | None:
    """Seconds from the first item of each of the ``count`` items of a sequence whose index unit is
    ``s`` or ``ms`` (None for other units or non-numeric index values)."""
    unit = (sequenceNode.GetIndexUnit() or "").strip().lower()
    if unit not in ("s", "sec", "second", "seconds", "ms", "msec", "millisecond", "milliseconds"):
        return None
    scale = 0.001 if unit.startswith("m") else 1.0
    try:
        values = [float(sequenceNode.GetNthIndexValue(i)) * scale for i in range(count)]
    except ValueError:
        return None
    return [v - values[0] for v in values]


def _rateOfTimes(times: list[float] | None) -> float | None:
    """Frames per second from frame times in seconds (the median step), or None when unknown or not
    increasing."""
    if times is None or len(times) <= 1:
        return None
    steps = np.diff(times)
    return 1.0 / float(np.median(steps)) if np.all(steps > 0) else None
