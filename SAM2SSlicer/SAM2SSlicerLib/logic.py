"""Headless tracking logic: video volume + segmentation + prompts in MRML, the ``sam2s`` engine.

``SAM2STrackingLogic`` is a plain Python class (no Qt, no ``slicer.app``): it is given an MRML
scene and, optionally, the module logics (in Slicer from ``slicer.mrmlScene`` and
``slicer.modules``; in tests and on the command line from ``headless.createHeadlessScene``).

Where the engine runs (``backends``): in this process (``InProcessBackend``: command line, tests)
or in a tracking server (``ServerBackend``: a local server process, the Slicer module's default,
or a remote GPU server). Tracking is split in three steps so that MRML is only touched by the
caller (Slicer's main thread), which never waits for the engine:

1. ``createTrackingJob`` / ``createPreviewJob`` read the prompts and the object / segment mapping
   from MRML into a plain :class:`JobPlan`;
2. ``TrackingJob.begin`` / ``advance`` (``runner.JobRunner``, from a GUI timer) hand the prompts
   to the reused engine session and, in a server, start the propagation there and fetch finished
   frames, one request per tick, never waiting; in this process the job loads the model if needed
   and propagates; either way each frame's masks go into a queue, no MRML access;
3. ``applyTrackingResults`` writes the queued frames into the segments in bulk chunks
   (``chunkSize`` frames, and everything left with ``flush=True``).

``track`` and ``previewFrame`` do the three steps synchronously in the calling thread. The jobs and
the engine session they share (no MRML) are in ``jobs``; their names are importable from here too.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from sam2s.session import DIRECTIONS, plan_passes

from . import export as _export
from . import provenance as _provenance
from . import segments as _segments
from . import videoimport as _videoimport
from .backends import InProcessBackend
from .jobs import (
    JobPlan,
    ProgressCallback,
    TrackingBusyError,
    TrackingFailedError,
    TrackingJob,
    TrackingSession,
    maskDigest,
)
from .prompts import FramePrompts, PromptError, PromptStore, checkMaskPrompt
from .settings import ModelSettings, buildModel

__all__ = [
    "DIRECTIONS",
    "JobPlan",
    "ProgressCallback",
    "SAM2STrackingLogic",
    "TrackingBusyError",
    "TrackingFailedError",
    "TrackingJob",
    "TrackingSession",
    "maskDigest",
]


# ---------------------------------------------------------------------------------------------
# The logic
# ---------------------------------------------------------------------------------------------


class SAM2STrackingLogic:
    """Track objects through a video volume into segments, with prompts stored in MRML.

    Args:
        scene: the ``vtkMRMLScene``.
        segmentationsLogic, markupsLogic, sequencesLogic, volumesLogic: the module logics (optional;
            kept for callers and future use - the operations used are static or scene-level).
        modelFactory: ``(ModelSettings) -> model``; default ``settings.buildModel`` (needs a downloaded
            or local checkpoint). Tests pass a model with ``setModel`` instead.
        chunkSize: frames per bulk write of a segment during tracking.
        backend: where the engine runs (``backends``): ``InProcessBackend()`` (the default: command
            line, tests) or ``ServerBackend()`` (a local tracking server; the Slicer module's
            default) / ``ServerBackend(url, token)`` (a remote one). With a server, jobs are started
            with ``TrackingJob.start`` and polled with ``TrackingJob.poll`` (``runner.JobRunner``),
            and the model comes from the settings (``setModel`` applies in this process only).

    Frame / pixel conventions: frame = K index of the video volume (0-based), x = column (right),
    y = row (down, 0 at the top), all in pixels of the imported frames.
    """

    def __init__(
        self,
        scene,
        segmentationsLogic=None,
        markupsLogic=None,
        sequencesLogic=None,
        volumesLogic=None,
        modelFactory: Callable[[ModelSettings], Any] | None = None,
        chunkSize: int = 16,
        backend=None,
    ) -> None:
        self.scene = scene
        self.segmentationsLogic = segmentationsLogic
        self.markupsLogic = markupsLogic
        self.sequencesLogic = sequencesLogic
        self.volumesLogic = volumesLogic
        self.modelFactory = modelFactory or (lambda settings: buildModel(settings))
        self.chunkSize = max(1, int(chunkSize))
        self.prompts = PromptStore(scene)
        self.settings = ModelSettings()
        self.videoNode = None
        self.segmentationNode = None
        self._model = None
        self._modelGeneration = 0
        self._modelLock = threading.Lock()
        self._session: TrackingSession | None = None
        self._activeJob: TrackingJob | None = None
        self.backend = backend if backend is not None else InProcessBackend()
        # per segmentation node: (node, segmentId -> frame -> (predicted IoU, object score)) of the
        # written engine results (not saved in the scene); see confidencesOf
        self._confidences: dict[str, tuple[Any, dict[str, dict[int, tuple[float, float]]]]] = {}
        self.statisticsNodes = None  # stats.StatisticsNodes of the last updateStatistics

    @property
    def segmentConfidences(self) -> dict[str, dict[int, tuple[float, float]]]:
        """``{segmentId: {frame: (predicted_iou, object_score)}}`` of the selected segmentation
        (``confidencesOf``; empty without one)."""
        return self.confidencesOf(self.segmentationNode)

    def confidencesOf(self, segmentationNode) -> dict[str, dict[int, tuple[float, float]]]:
        """``{segmentId: {frame: (predicted_iou, object_score)}}`` of the engine results written into
        ``segmentationNode``: kept per node (segments of two segmentations may share IDs), a new
        node reusing an ID after a scene close starts empty."""
        if segmentationNode is None:
            return {}
        key = segmentationNode.GetID()
        entry = self._confidences.get(key)
        if entry is None or entry[0] is not segmentationNode:
            entry = self._confidences[key] = (segmentationNode, {})
        return entry[1]

    # ------------------------------------------------------------------ model
    def setModelSettings(self, settings: ModelSettings) -> None:
        """Use ``settings`` from now on; the model is rebuilt on next use if they changed.

        Raises ``ValueError`` for invalid settings (the current ones stay).
        """
        settings.validate()
        if settings != self.settings:
            fields = ("configName", "checkpoint", "device", "imageSize", "precision")  # what the model is built from
            modelChanged = any(getattr(settings, f) != getattr(self.settings, f) for f in fields)
            self.settings = dataclasses.replace(settings, memoryParams=dict(settings.memoryParams))
            if modelChanged:
                self._setModel(None)
            self._dropSession()

    def setModel(self, model) -> None:
        """Use this ``sam2s`` model (e.g. random weights in tests) instead of building one from settings."""
        self._setModel(model)

    def _setModel(self, model) -> None:
        self._checkIdle()
        with self._modelLock:
            self._model = model
            self._modelGeneration += 1
            self._dropSession()

    def getModel(self):
        """The model, built from ``settings`` with ``modelFactory`` on first use (any thread).

        Raises what ``modelFactory`` raises (see ``settings.buildModel``).
        """
        with self._modelLock:
            if self._model is None:
                self._model = self.modelFactory(self.settings)
            return self._model

    # ------------------------------------------------------------------ nodes
    def setVideoNode(self, videoNode) -> None:
        """Track on ``videoNode`` (``(T, H, W, 3)`` uint8 vector volume, or a uint8 scalar volume).

        A current segmentation drawn on another video is deselected (not modified).

        Raises:
            ValueError: the volume is not 8-bit RGB or grey. TrackingBusyError: tracking runs.
        """
        if videoNode is not None:
            _videoimport.videoArray(videoNode)  # validates
        if videoNode is not self.videoNode:
            self._checkIdle()
            self.videoNode = videoNode
            self._dropSession()
        if videoNode is not None and self.segmentationNode is not None:
            try:
                _segments.ensureReferenceGeometry(self.segmentationNode, videoNode)
            except ValueError:
                self.segmentationNode = None

    def setSegmentationNode(self, segmentationNode) -> None:
        """Write results into ``segmentationNode`` (gets the video as reference geometry).

        Raises:
            ValueError: it holds voxels drawn on another geometry (see ``segments.ensureReferenceGeometry``).
        """
        if segmentationNode is not None and self.videoNode is not None:
            _segments.ensureReferenceGeometry(segmentationNode, self.videoNode)
        if segmentationNode is not self.segmentationNode:
            self._checkIdle()
            self.segmentationNode = segmentationNode
            self._dropSession()

    def importVideo(self, source, **options):
        """Import a video file, image folder or ``(T, H, W, 3)`` array and make it the current video.

        Options and errors: ``videoimport.importFrames`` (``frameStep``, ``startTime`` / ``endTime``
        seconds, ``firstFrame`` / ``lastFrame``, ``maxWidth`` pixels, ``frameRate``, ``labelmaps``,
        ``availableMemory`` bytes, ...). The memory needed is checked before anything is allocated:
        ``videoimport.NotEnoughMemoryError`` (a ``MemoryError``) names options that fit; the current
        video is then unchanged. Returns the new vector volume node.
        """
        node = _videoimport.importFrames(self.scene, source, **options)
        self.setVideoNode(node)
        return node

    def importSequence(self, sequenceNode, **options):
        """Stack a Sequence of 2D frames into a new video volume and make it current
        (``videoimport.importSequence``; same options as ``importVideo``, including ``labelmaps`` and
        ``availableMemory``; raises ``NotEnoughMemoryError`` before allocating)."""
        node = _videoimport.importSequence(self.scene, sequenceNode, **options)
        self.setVideoNode(node)
        return node

    def createSegmentation(self, name: str | None = None):
        """A new segmentation node on the current video (reference geometry set), made current.

        Raises ``RuntimeError`` when no video is selected.
        """
        video = self._requireVideo()
        node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or f"{video.GetName()} segmentation")
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(video)
        self.setSegmentationNode(node)
        return node

    def addSegment(self, name: str, color=None, objectId: int | None = None) -> str:
        """Add an empty segment (``color``: RGB 0..1, default from Slicer's palette) with an object id.

        Args:
            objectId: the tracker object id, an integer in 1..254 (``segments.MAX_OBJECT_ID``) not
                used by another segment; None assigns the smallest free one.

        Returns the segment ID.

        Raises:
            ValueError: ``objectId`` outside 1..254, not an integer or already used, or all 254
                ids are used (no segment is added then). RuntimeError: no segmentation.
        """
        node = self._requireSegmentation()
        segmentation = node.GetSegmentation()
        if objectId is None:
            _segments.freeObjectId(node)  # all 254 ids used: refuse before adding the segment
        else:
            objectId = _segments.checkObjectId(objectId)
            used = _segments.segmentIdForObject(node, objectId)
            if used is not None:
                raise ValueError(
                    f"Object id {objectId} is already used by segment '{segmentation.GetSegment(used).GetName()}'; "
                    "choose another id or leave it empty."
                )
        segmentId = segmentation.AddEmptySegment("", name, list(color) if color is not None else None)
        segment = segmentation.GetSegment(segmentId)
        segment.SetNameAutoGenerated(False)
        if color is not None:
            segment.SetColorAutoGenerated(False)
        try:
            _segments.assignObjectId(node, segmentId, objectId)
        except ValueError:
            segmentation.RemoveSegment(segmentId)
            raise
        return segmentId

    def objectIdOfSegment(self, segmentId: str, create: bool = True) -> int | None:
        """The segment's tracker object id (``SAM2S.ObjectId`` tag); assigned when missing and ``create``."""
        node = self._requireSegmentation()
        if create:
            return _segments.assignObjectId(node, segmentId)
        return _segments.objectIdOfSegment(node, segmentId)

    def segmentIdForObject(self, objectId: int) -> str | None:
        """The ID of the segment with tracker object id ``objectId``, or None."""
        return _segments.segmentIdForObject(self._requireSegmentation(), objectId)

    # ------------------------------------------------------------------ prompts
    def addPointPrompt(self, segmentId: str, frameIndex: int, x: float, y: float, positive: bool = True) -> int:
        """Store a positive (inside) or negative (outside) click at pixel (x, y) of frame ``frameIndex``.

        Returns the control point index in the segment's prompts node. Gives the segment an object
        id if needed. Nothing is computed: call ``previewFrame`` or ``track``.

        Raises:
            PromptError: frame or point outside the video. KeyError: unknown segment. ValueError: the
                segment's object id tag is invalid or all 254 ids are used. Nothing is added then.
        """
        video, node = self._requireVideo(), self._requireSegmentation()
        self._checkSegment(segmentId)
        self._checkObjectIdPossible(node, segmentId)
        index = self.prompts.addPoint(node, segmentId, video, frameIndex, x, y, positive)
        _segments.assignObjectId(node, segmentId)
        return index

    def setBoxPrompt(self, segmentId: str, frameIndex: int, box) -> None:
        """Store the box ``(x0, y0, x1, y1)`` (pixels, x right, y down, any two opposite corners) of frame
        ``frameIndex``, replacing its earlier box. Gives the segment an object id if needed.

        Raises:
            PromptError: a corner outside the frame, a frame outside the video or a box less than one
                pixel wide or high. KeyError: unknown segment. ValueError: the segment's object id
                tag is invalid or all 254 ids are used. Nothing is changed then.
        """
        video, node = self._requireVideo(), self._requireSegmentation()
        self._checkSegment(segmentId)
        self._checkObjectIdPossible(node, segmentId)
        self.prompts.setBox(node, segmentId, video, frameIndex, box)
        _segments.assignObjectId(node, segmentId)

    def clearPrompts(self, segmentId: str, frameIndex: int | None = None) -> int:
        """Delete the segment's prompts on ``frameIndex`` (all frames when None): clicks, boxes and
        mask-prompt marks (the voxels stay). Returns how many points were deleted."""
        node = self._requireSegmentation()
        if node.GetSegmentation().GetSegment(segmentId) is not None:
            keep = (
                []
                if frameIndex is None
                else [f for f in _segments.maskPromptFrames(node, segmentId) if f != frameIndex]
            )
            _segments.setMaskPromptFrames(node, segmentId, keep)
        return self.prompts.clear(node, segmentId, self._requireVideo(), frameIndex)

    def removeLastPointPrompt(self, segmentId: str, frameIndex: int) -> bool:
        """Delete the last click of the segment on ``frameIndex``; False when there is none."""
        return self.prompts.removeLastPoint(self._requireSegmentation(), segmentId, self._requireVideo(), frameIndex)

    def getPrompts(self, segmentId: str) -> dict[int, FramePrompts]:
        """``{frame: FramePrompts}`` of the segment (see ``prompts.PromptStore.framePrompts``); a
        frame marked as a mask prompt carries the segment's voxels there as ``mask``."""
        node, video = self._requireSegmentation(), self._requireVideo()
        frames = dict(self.prompts.framePrompts(node, segmentId, video))
        maskFrames = _segments.maskPromptFrames(node, segmentId)
        if maskFrames:
            volume = _segments.readSegmentMask(node, segmentId, video)
            for frame in maskFrames:
                mask = volume[frame].astype(bool)
                old = frames.get(frame, FramePrompts())
                frames[frame] = dataclasses.replace(old, mask=mask, maskDigest=maskDigest(mask))
        return dict(sorted(frames.items()))

    def setMaskPrompt(self, segmentId: str, frameIndex: int, mask: np.ndarray) -> None:
        """Use ``mask`` as the segment's prompt on ``frameIndex``: it is written into the segment on
        that frame and the frame is marked as a mask prompt (segment tag ``SAM2S.MaskPromptFrames``).

        Clicks (``addPointPrompt``) or a box (``setBoxPrompt``) on the same frame refine this mask:
        the engine gets the mask first, then the clicks / box (``TrackingSession.syncPrompts``), and
        the refined result of a preview or propagation is written back into these voxels, so it
        becomes the frame's mask prompt from then on (it is not re-sent while unchanged).

        Args:
            mask: ``(H, W)`` bool or 0/1 array, row 0 at the top (``[row, column]`` of the frame).

        Raises:
            KeyError: unknown segment. ValueError: wrong mask shape, values other than 0/1 (threshold
                a probability map first), frame outside the video, or no free object id. Nothing
                is changed then.
        """
        node, video = self._requireSegmentation(), self._requireVideo()
        self._checkSegment(segmentId)
        mask = checkMaskPrompt(mask, _videoimport.videoArray(video).shape[:3], frameIndex)
        _segments.assignObjectId(node, segmentId)  # an invalid tag or no free id fails before the write
        _segments.writeSegmentFrames(node, segmentId, video, int(frameIndex), (mask != 0)[None])
        _segments.setMaskPromptFrames(node, segmentId, _segments.maskPromptFrames(node, segmentId) + [int(frameIndex)])

    def promptedSegmentIds(self) -> list[str]:
        """IDs of the current segmentation's segments that have prompts (clicks, boxes or masks)."""
        node = self._requireSegmentation()
        ids = list(self.prompts.promptedSegmentIds(node))
        segmentation = node.GetSegmentation()
        for i in range(segmentation.GetNumberOfSegments()):
            segmentId = segmentation.GetNthSegmentID(i)
            if segmentId not in ids and _segments.maskPromptFrames(node, segmentId):
                ids.append(segmentId)
        return ids

    # ------------------------------------------------------------------ jobs
    def isTracking(self) -> bool:
        """True while the last started job runs or has finished frames not yet written: a new job
        then would have its frames overwritten by the old job's late writes, so it is refused."""
        job = self._activeJob
        return job is not None and job.started.is_set() and (not job.finished.is_set() or job.hasUnwrittenResults())

    def requestCancel(self) -> None:
        """Ask the running job to stop after its current frame (thread-safe); finished frames are kept."""
        if self._activeJob is not None:
            self._activeJob.requestCancel()

    def forgetNodes(self) -> None:
        """Forget the current video, segmentation, engine session and kept confidences (e.g. when the
        scene closes); a running job is asked to stop (its results are dropped: the segmentation is gone)."""
        self.requestCancel()
        if self._activeJob is not None:
            self._activeJob.discardResults()
        self.videoNode = self.segmentationNode = None
        self._confidences.clear()
        self._dropSession(wait=False)

    def setBackend(self, backend) -> None:
        """Run the engine through ``backend`` from now on (see the class docstring); the current
        engine session is closed (prompts are sent again from MRML on next use).

        Raises:
            TrackingBusyError: a job is running.
        """
        self._checkIdle()
        self._dropSession()
        self.backend = backend

    def close(self) -> None:
        """Close the engine session and the backend (stops a local server); call when done (the
        Slicer module does when Slicer quits)."""
        self.requestCancel()
        self._dropSession()
        self.backend.close()

    def _dropSession(self, wait: bool = True) -> None:
        """Close the engine session, if any (a server session is closed there, shared memory freed;
        ``wait`` False: without waiting for the server's answer)."""
        session, self._session = self._session, None
        if session is not None:
            session.close(wait)

    def resetSession(self) -> None:
        """Forget the engine session (prompts are re-sent from MRML on next use)."""
        self._checkIdle()
        self._dropSession()

    def createPreviewJob(self, segmentId: str, frameIndex: int) -> TrackingJob:
        """A job computing the mask of ``segmentId`` on ``frameIndex`` from that frame's prompts.

        Raises:
            PromptError: the segment has no prompt on that frame, or a prompt is invalid.
            TrackingBusyError: another job is running.
        """
        self._checkIdle()
        video, node = self._requireVideo(), self._requireSegmentation()
        self._checkSegment(segmentId)
        objectId = _segments.assignObjectId(node, segmentId)
        prompts, _ = self.collectPrompts()
        if frameIndex not in prompts.get(objectId, {}):
            name = node.GetSegmentation().GetSegment(segmentId).GetName()
            raise PromptError(f"Segment '{name}' has no prompt on frame {frameIndex}; click on the object first.")
        names = {segmentId: node.GetSegmentation().GetSegment(segmentId).GetName()}
        plan = JobPlan(
            video, node, prompts, {objectId: segmentId}, [], 1, previewFrame=int(frameIndex), segmentNames=names
        )
        return self._newJob(plan, None)

    def createTrackingJob(
        self,
        segmentIds: Iterable[str] | None = None,
        startFrame: int | None = None,
        firstFrame: int | None = None,
        lastFrame: int | None = None,
        direction: str = "forward",
        progressCallback: ProgressCallback | None = None,
    ) -> TrackingJob:
        """A job tracking the chosen segments through frames ``firstFrame .. lastFrame``.

        Args:
            segmentIds: segments to write (default: every segment with prompts). Each needs prompts.
                Other segments and other segmentations are never modified.
            startFrame: where propagation starts (default: the chosen segments' earliest prompted
                frame in the range, or the latest for ``backward``; the range end when none is in it).
            firstFrame, lastFrame: inclusive frame range (default: the whole video).
            direction: ``forward`` (start .. last), ``backward`` (start .. first) or ``both``
                (start .. last, then start - 1 .. first).
            progressCallback: ``(doneFrames, totalFrames, frameIndex)`` after each frame.

        Raises:
            ValueError: bad direction or frame range, unknown segments, segments without prompts.
            PromptError: an invalid prompt in MRML. TrackingBusyError: another job is running.
        """
        self._checkIdle()
        video, node = self._requireVideo(), self._requireSegmentation()
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}.")
        frames = _videoimport.videoArray(video).shape[0]
        first = 0 if firstFrame is None else int(firstFrame)
        last = frames - 1 if lastFrame is None else int(lastFrame)
        if not 0 <= first <= last < frames:
            raise ValueError(f"Frame range {first}..{last} is not within the video's frames 0..{frames - 1}.")
        prompts, objectToSegment = self.collectPrompts()
        if segmentIds is None:
            chosen = list(objectToSegment.values())
            if not chosen:
                raise ValueError("No segment has prompts yet: click on an object in a frame first.")
        else:
            chosen = list(segmentIds)
        writeObjects: dict[int, str] = {}
        for segmentId in chosen:
            self._checkSegment(segmentId)
            objectId = _segments.objectIdOfSegment(node, segmentId)
            if objectId is None or objectId not in prompts:
                name = node.GetSegmentation().GetSegment(segmentId).GetName()
                raise ValueError(f"Segment '{name}' has no prompts; click on it in a frame before tracking it.")
            writeObjects[objectId] = segmentId
        promptFrames = [f for o in writeObjects for f in prompts[o]]
        passes = plan_passes(promptFrames, first, last, direction, None if startFrame is None else int(startFrame))
        total = sum(abs(end - begin) + 1 for begin, end, _ in passes)
        names = {s: node.GetSegmentation().GetSegment(s).GetName() for s in writeObjects.values()}
        plan = JobPlan(video, node, prompts, writeObjects, passes, total, segmentNames=names)
        return self._newJob(plan, progressCallback)

    def applyTrackingResults(
        self,
        job: TrackingJob,
        flush: bool = False,
        beforeWrite: Callable[[], None] | None = None,
        maxFrames: int | None = None,
    ) -> int:
        """Write the job's finished frames into their segments (main thread).

        Frames are collected until ``chunkSize`` are pending (or ``flush``), then each segment's
        runs of consecutive frames are replaced in one write each (``segments.writeSegmentFrames``);
        other frames and segments are untouched. With ``maxFrames`` (``runner.JobRunner``: a GUI
        tick's time budget) at most that many pending frames are written per call, as soon as
        any are pending (``TrackingJob.takeChunk``). ``beforeWrite`` is called once per job, before
        its first write (e.g. ``saveStateForUndo``).

        A segment deleted while the job runs gets nothing more; one warning per deleted segment
        (and one if the whole segmentation was removed from the scene) is added to
        ``job.warnings``. A written result of a mask-prompt frame is noted in the engine session
        (``TrackingSession.noteWrittenMask``) so that the next sync does not re-send it.

        Returns:
            The number of frames written now into at least one existing segment (also added to
            ``job.writtenFrames``).
        """
        chunk = job.takeChunk(self.chunkSize, flush, maxFrames)
        if not chunk:
            return 0
        live = self._liveSegments(job, chunk)
        if not live:
            return 0
        if beforeWrite is not None and not job.wroteAny:
            beforeWrite()
        job.wroteAny = True
        segmentationNode = job.plan.segmentationNode
        written: set[int] = set()
        wasModifying = segmentationNode.StartModify()
        try:
            for objectId, (segmentId, frames) in live.items():
                written.update(self._writeObjectFrames(job, objectId, segmentId, frames))
        finally:
            segmentationNode.EndModify(wasModifying)
        job.writtenFrames += len(written)
        _provenance.setNodeProvenance(
            segmentationNode, job.makeProvenance(self.settings), [s for s, _ in live.values()]
        )
        return len(written)

    @staticmethod
    def _liveSegments(
        job: TrackingJob, chunk: dict[int, dict[int, np.ndarray]]
    ) -> dict[int, tuple[str, dict[int, np.ndarray]]]:
        """``{objectId: (segmentId, {frame: mask})}`` of the chunk's objects whose segment still
        exists; the others (and everything when the segmentation left the scene) are dropped with a
        warning on the job."""
        segmentationNode = job.plan.segmentationNode
        if segmentationNode.GetScene() is None:
            job.dropSegmentation(min(f for frames in chunk.values() for f in frames))
            return {}
        segmentation = segmentationNode.GetSegmentation()
        live: dict[int, tuple[str, dict[int, np.ndarray]]] = {}
        for objectId, frames in chunk.items():
            segmentId = job.plan.writeObjects[objectId]
            if segmentation.GetSegment(segmentId) is not None:
                live[objectId] = (segmentId, frames)
            else:
                job.dropSegment(segmentId, min(frames))
        return live

    def _writeObjectFrames(
        self, job: TrackingJob, objectId: int, segmentId: str, frames: dict[int, np.ndarray]
    ) -> set[int]:
        """Write one object's frames into its segment (one write per run of consecutive frames), keep
        their confidences and note written mask-prompt results in the session; returns the frames."""
        plan = job.plan
        written: set[int] = set()
        # a propagation reserves its frames in the layer at once (one layer copy, not one per few frames)
        reserve = (
            (min(min(a, b) for a, b, _ in plan.passes), max(max(a, b) for a, b, _ in plan.passes))
            if plan.passes and plan.previewFrame is None
            else None
        )
        for begin, end in _segments.frameRuns(frames):
            masks = np.stack([frames[f] for f in range(begin, end + 1)])
            _segments.writeSegmentFrames(
                plan.segmentationNode, segmentId, plan.videoNode, begin, masks, reserve=reserve
            )
            written.update(range(begin, end + 1))
        known = job.confidences.get(objectId, {})
        kept = self.confidencesOf(plan.segmentationNode).setdefault(segmentId, {})
        for frame in frames:  # a frame written without a confidence loses its old one
            if frame in known:
                kept[frame] = known[frame]
            else:
                kept.pop(frame, None)
        objectPrompts = plan.prompts.get(objectId, {})
        for frame, mask in frames.items():
            prompt = objectPrompts.get(frame)
            if prompt is not None and prompt.mask is not None:
                job.session.noteWrittenMask(objectId, frame, prompt, mask)
        return written

    def track(
        self,
        segmentIds: Iterable[str] | None = None,
        startFrame: int | None = None,
        firstFrame: int | None = None,
        lastFrame: int | None = None,
        direction: str = "forward",
        progressCallback: ProgressCallback | None = None,
        cancelEvent: threading.Event | None = None,
    ) -> TrackingJob:
        """Track and write synchronously in the calling thread (see ``createTrackingJob`` for arguments).

        ``cancelEvent`` (or ``requestCancel()`` from another thread or from ``progressCallback``)
        stops after the current frame; every finished frame is written, the others keep their voxels.

        Returns:
            The finished job (``status``, ``trackedFrames``, ``cancelled``).

        Raises:
            What ``createTrackingJob`` raises, and the engine's errors (after writing finished frames).
        """
        job = self.createTrackingJob(segmentIds, startFrame, firstFrame, lastFrame, direction, progressCallback)
        if cancelEvent is not None:
            job.cancelEvent = cancelEvent
        return self._runSynchronously(job)

    def previewFrame(self, segmentId: str, frameIndex: int, apply: bool = True) -> np.ndarray | None:
        """Compute (and with ``apply`` write) the segment's mask on a prompted frame, synchronously.

        Returns:
            ``(H, W)`` bool mask (row 0 at the top), or None when the engine returned nothing.
        """
        job = self.createPreviewJob(segmentId, frameIndex)
        self._runSynchronously(job, write=apply)
        return job.previewMask

    def _runSynchronously(self, job: TrackingJob, write: bool = True) -> TrackingJob:
        job.run(onFrame=(lambda j: self.applyTrackingResults(j)) if write else None)
        if write:
            self.applyTrackingResults(job, flush=True)
        else:
            job.discardResults()
        if job.error is not None:
            raise job.error
        return job

    # ------------------------------------------------------------------ results and export
    def segmentMask(self, segmentId: str) -> np.ndarray:
        """The segment as ``(T, H, W)`` uint8 0/1, ``[frame, row, column]`` (``segments.readSegmentMask``)."""
        return _segments.readSegmentMask(self._requireSegmentation(), segmentId, self._requireVideo())

    def exportSegmentation(self, path: str, segmentIds: Iterable[str] | None = None, useCompression: bool = True):
        """Save the current segmentation (or some segments) as ``.seg.nrrd`` (``export.exportSegmentation``)."""
        return _export.exportSegmentation(
            self._requireSegmentation(), path, segmentIds, useCompression, referenceVolumeNode=self.videoNode
        )

    def exportLabelPngs(self, folder: str, segmentIds: Iterable[str] | None = None, **options):
        """Write one label PNG per frame (DAVIS style, label = object id) (``export.exportLabelPngs``),
        and the segmentation's provenance (``provenance.PROVENANCE_FILE``) when it has one."""
        node = self._requireSegmentation()
        record = _provenance.nodeProvenance(node)
        if record is not None and "extraFiles" not in options:
            options["extraFiles"] = {_provenance.PROVENANCE_FILE: record.toJson().encode("utf-8")}
        return _export.exportLabelPngs(node, self._requireVideo(), folder, segmentIds, **options)

    def exportCoco(self, path: str, segmentIds: Iterable[str] | None = None, overwrite: bool = False) -> str:
        """Write the segments as a COCO instance ``.json`` (one RLE annotation per object and frame
        where it is present, ``track_id`` = object id; format in ``SAM2SSlicerLib.coco``); returns the path.

        The path is checked before any mask is read (``outputs.OutputSet``: ``.json`` suffix, parent
        folder exists and is writable, not a folder); the file is written atomically.

        Raises:
            coco.CocoUnavailableError: pycocotools is missing (``coco.COCO_INSTALL_HINT``).
            outputs.OutputError (a ValueError): bad path, or an existing file without ``overwrite``.
            KeyError: unknown segments. RuntimeError: no video or segmentation selected.
            OSError: writing failed (an existing file is left as it was).
        """
        from . import coco as _coco
        from .outputs import OutputSet

        _coco.requirePycocotools()
        segmentation, video = self._requireSegmentation(), self._requireVideo()
        with OutputSet([], overwrite=overwrite, overwriteOption="overwrite=True") as outputs:
            target = outputs.addFile(path, "path", (".json",))
            outputs.check()
            _coco.segmentationCoco(segmentation, video, segmentIds).write(target)
        return str(target)

    def updateStatistics(self, segmentIds: Iterable[str] | None = None, **reviewOptions):
        """Compute the masklet statistics of the segments (default: all) and show them in MRML: a
        table node (one row per frame and segment), an area plot chart (one series per segment)
        and a review table (``stats.createStatisticsNodes``; the nodes of the previous call are
        refilled). Confidences are those of ``segmentConfidences``. ``reviewOptions`` go to
        ``stats.reviewList``.

        Returns:
            ``stats.StatisticsNodes`` (also kept in ``statisticsNodes``).

        Raises:
            RuntimeError: no video or segmentation selected. KeyError: unknown segments.
        """
        from . import stats as _stats

        segmentation, video = self._requireSegmentation(), self._requireVideo()
        statistics, colors = _stats.segmentationStatistics(segmentation, video, segmentIds, self.segmentConfidences)
        self.statisticsNodes = _stats.createStatisticsNodes(
            self.scene,
            statistics,
            colors,
            f"{segmentation.GetName()} statistics",
            self.statisticsNodes,
            **reviewOptions,
        )
        return self.statisticsNodes

    # ------------------------------------------------------------------ internals
    def _newJob(self, plan: JobPlan, progressCallback) -> TrackingJob:
        job = TrackingJob(self._getSession(plan.videoNode, plan.segmentationNode), plan, progressCallback)
        settings = dataclasses.replace(self.settings)
        job.prepareSteps = lambda: job.provenanceSteps(settings)
        self._activeJob = job
        return job

    def _checkIdle(self) -> None:
        if self.isTracking():
            raise TrackingBusyError("Tracking is running; press Cancel or wait for it to finish first.")

    def _requireVideo(self):
        if self.videoNode is None or self.videoNode.GetScene() is None:
            raise RuntimeError("No video is selected: import a video or choose its volume first.")
        return self.videoNode

    def _requireSegmentation(self):
        if self.segmentationNode is None or self.segmentationNode.GetScene() is None:
            raise RuntimeError("No segmentation is selected: create one for the video first.")
        return self.segmentationNode

    @staticmethod
    def _checkObjectIdPossible(node, segmentId: str) -> None:
        """Raise (changing nothing) when the segment has an invalid object id tag or needs an id and
        all 254 are used, so that a prompt is not stored for a segment that cannot be tracked."""
        if _segments.objectIdOfSegment(node, segmentId) is None:
            _segments.freeObjectId(node)

    def _checkSegment(self, segmentId: str) -> None:
        node = self._requireSegmentation()
        if node.GetSegmentation().GetSegment(segmentId) is None:
            raise KeyError(f"Segmentation '{node.GetName()}' has no segment with ID '{segmentId}'.")

    def collectPrompts(self) -> tuple[dict[int, dict[int, FramePrompts]], dict[int, str]]:
        """Prompts of every existing prompted segment of the current segmentation, as a job sends
        them to the engine: ``({objectId: {frame: FramePrompts}}, {objectId: segmentId})``.

        Raises:
            RuntimeError: no segmentation or video. PromptError: an invalid prompt in MRML.
        """
        node = self._requireSegmentation()
        prompts: dict[int, dict[int, FramePrompts]] = {}
        objectToSegment: dict[int, str] = {}
        for segmentId in self.promptedSegmentIds():
            frames = self.getPrompts(segmentId)
            if not frames:
                continue
            objectId = _segments.assignObjectId(node, segmentId)
            prompts[objectId] = frames
            objectToSegment[objectId] = segmentId
        return prompts, objectToSegment

    def _getSession(self, videoNode, segmentationNode) -> TrackingSession:
        frames = _videoimport.videoArray(videoNode)
        scalars = videoNode.GetImageData().GetPointData().GetScalars()
        key = (
            videoNode.GetID(),
            frames.__array_interface__["data"][0],
            frames.shape,
            scalars.GetMTime(),
            segmentationNode.GetID(),
            self._modelGeneration,
            self.settings.memory,
            json.dumps(self.settings.memoryParams, sort_keys=True),
            self.settings.engine,
        )
        key += (id(self.backend),)
        session = self._session
        if session is None or session.key != key or session.broken or session.stale:
            self._dropSession()
            backend, settings = self.backend, dataclasses.replace(self.settings)
            self._session = TrackingSession(
                lambda cancel=None: backend.createTrackerSteps(frames, videoNode, settings, self.getModel, cancel),
                key,
                lambda: backend.generation,
            )
        return self._session
