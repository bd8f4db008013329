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
2. ``TrackingJob.start`` hands the prompts to the reused engine session and, in a server, starts
   the propagation there (``TrackingJob.poll`` then fetches finished frames without blocking;
   ``runner.JobRunner`` does both from a GUI timer); in this process ``TrackingJob.run`` loads the
   model if needed and propagates; either way each frame's masks go into a queue, no MRML access;
3. ``applyTrackingResults`` writes the queued frames into the segments in bulk chunks
   (``chunkSize`` frames, and everything left with ``flush=True``).

``track`` and ``previewFrame`` do the three steps synchronously in the calling thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import slicer
from sam2s.session import DIRECTIONS, TrackerBusyError, TrackingPlan, plan_passes

from . import export as _export
from . import provenance as _provenance
from . import segments as _segments
from . import videoimport as _videoimport
from .backends import InProcessBackend
from .prompts import FramePrompts, PromptError, PromptStore
from .settings import ModelSettings, buildModel

ProgressCallback = Callable[[int, int, int], None]
"""``(doneFrames, totalFrames, frameIndex)``, called in the thread that runs or polls the job."""

__all__ = [
    "DIRECTIONS",
    "SAM2STrackingLogic",
    "TrackingBusyError",
    "TrackingFailedError",
    "TrackingJob",
    "JobPlan",
    "TrackingSession",
    "maskDigest",
]


def maskDigest(mask: np.ndarray) -> str:
    """SHA-1 hex digest of a ``(H, W)`` mask's bits (``np.packbits`` of ``mask != 0``), as stored in
    ``FramePrompts.maskDigest`` to tell whether a mask prompt changed."""
    return hashlib.sha1(np.packbits(np.asarray(mask) != 0).tobytes()).hexdigest()


def _isLostServer(error: BaseException) -> bool:
    """True for the client errors of a server that is gone or forgot the session (``sam2s.serving.client``)."""
    from sam2s.serving.client import ServerUnavailable, SessionNotFound

    return isinstance(error, (ServerUnavailable, SessionNotFound))


class TrackingBusyError(TrackerBusyError):
    """A tracking job is running; cancel it or wait for it before starting another (a kind of the
    engine's ``TrackerBusyError``, so one ``except`` catches both)."""


class TrackingFailedError(RuntimeError):
    """Tracking stopped with an error after it had started (the tracking server stopped answering
    or failed); the frames finished before it are kept.

    Attributes:
        reason: what failed, one line without advice (e.g. ``"the tracking server stopped
            answering (...)"``), for front ends that say what to do in their own words.
        trackedFrames: the frame indices finished before the failure, in tracking order.
    """

    def __init__(self, message: str, reason: str, trackedFrames: Sequence[int]) -> None:
        super().__init__(message)
        self.reason, self.trackedFrames = reason, list(trackedFrames)


# ---------------------------------------------------------------------------------------------
# Engine session (no MRML)
# ---------------------------------------------------------------------------------------------


class TrackingSession:
    """One ``sam2s.VideoTracker`` over a video volume's frames, reused across clicks and propagations.

    It remembers which prompts it was given (``applied``) so that ``syncPrompts`` only sends what
    changed: a changed frame replaces that frame's prompt; a frame whose prompts were all deleted
    removes the object from the engine and re-adds its remaining prompts (the engine cannot drop
    a single conditioning frame).

    Mask prompts. A frame's mask prompt is the segment's own voxels on that frame (frames listed
    in ``segments.MASK_PROMPT_TAG``), so writing a result onto such a frame changes the prompt.
    After a job writes the engine's result for a prompt frame, ``noteWrittenMask`` records the
    written mask's digest as that frame's applied mask: the frame then counts as unchanged (the
    engine already holds that result as the frame's conditioning output) and is not re-sent. For
    a frame with a mask and clicks / a box this keeps the next sync from applying the same clicks
    again to the already refined mask (which would change it on every sync). A real edit of the
    voxels or the clicks changes the digest or the clicks and re-sends the frame (mask, then
    clicks / box).

    Args:
        createTracker: makes the engine session on first use (``backends``: a ``sam2s.VideoTracker`` /
            ``FlowTracker`` in this process, or a ``sam2s.serving.client.RemoteSession`` in a
            tracking server): a ``sam2s.Tracker``.
        key: identifies what the session was built for (video data, segmentation, model, memory,
            backend).
    """

    def __init__(self, createTracker: Callable[[], Any], key, generation: Callable[[], int] = lambda: 0) -> None:
        self.createTracker = createTracker
        self.key = key
        self.applied: dict[int, dict[int, FramePrompts]] = {}
        self.broken = False  # the server lost it (killed, expired): the logic makes a new session
        self._generation = generation  # the backend's server generation (a local server restarted)
        self._createdIn: int | None = None
        self._tracker = None
        self.lock = threading.Lock()

    @property
    def stale(self) -> bool:
        """True when the engine session lived in a server that was restarted since (it is gone)."""
        return self._tracker is not None and self._createdIn != self._generation()

    @property
    def isLoaded(self) -> bool:
        """True once the engine session exists (the model is loaded)."""
        return self._tracker is not None

    @property
    def isRemote(self) -> bool:
        """True when the engine session lives in a tracking server (its stream is polled)."""
        from sam2s.serving.client import RemoteSession

        return isinstance(self._tracker, RemoteSession)

    @property
    def tracker(self):
        """The engine session (created on first use; loads the model)."""
        if self._tracker is None:
            self._tracker = self.createTracker()
            self._createdIn = self._generation()
        return self._tracker

    def close(self) -> None:
        """Release the engine session (a server session is closed; errors are ignored)."""
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            tracker.close()

    def renew(self) -> None:
        """Start over with a new engine session (the next ``syncPrompts`` sends every prompt again):
        used when a server forgot the session (it expired while idle)."""
        self.close()
        self.applied.clear()
        self.broken = False

    def syncPrompts(
        self, prompts: dict[int, dict[int, FramePrompts]], force: Iterable[tuple[int, int]] = ()
    ) -> dict[tuple[int, int], np.ndarray]:
        """Make the engine's prompts equal ``prompts`` (``{objectId: {frame: FramePrompts}}``).

        ``force`` lists ``(objectId, frame)`` pairs to send again even if unchanged (for a preview).

        A frame's prompt is sent as SAM 2 combines them: a mask alone -> ``add_mask``; clicks
        alone -> ``add_points``; a box (with or without clicks) -> ``add_box(box, points, labels)``;
        a mask WITH clicks and/or a box -> ``add_mask`` first, then ``add_box`` / ``add_points``
        on the same frame: the engine feeds the mask's logits as the previous mask of that
        frame, so the clicks (negative ones included) and the box refine the mask (sam2s
        ``VideoTracker._add_point_prompt``: ``prev_logits`` from ``latest_output``; the flow engine
        corrects the mask with the clicks). The returned logits are those of the last call.

        Returns:
            ``{(objectId, frame): logits}`` for every prompt sent: ``(H, W)`` float32 mask logits
            of that object on that frame (> 0 = inside).

        Raises:
            sam2s.PromptError: a prompt the engine refuses (that prompt is not applied; the rest is).
        """
        tracker = self.tracker
        force = set(force)
        sent: dict[tuple[int, int], np.ndarray] = {}
        for objectId in list(self.applied):
            if objectId not in prompts:
                self._remove(tracker, objectId)
        for objectId, frames in prompts.items():
            applied = self.applied.setdefault(objectId, {})
            if any(frame not in frames for frame in applied):
                self._remove(tracker, objectId)
                applied = self.applied.setdefault(objectId, {})
            for frame, prompt in frames.items():
                if applied.get(frame) == prompt and (objectId, frame) not in force:
                    continue
                logits = None
                if prompt.mask is not None:
                    logits = tracker.add_mask(frame, objectId, prompt.mask)
                points = prompt.pointArray() if prompt.points else None
                labels = prompt.labelArray() if prompt.points else None
                if prompt.box is not None:
                    logits = tracker.add_box(frame, objectId, np.asarray(prompt.box), points, labels)
                elif prompt.points:
                    logits = tracker.add_points(frame, objectId, points, labels)
                if logits is None:
                    continue  # an empty prompt (nothing to send)
                applied[frame] = prompt
                sent[(objectId, frame)] = logits
        return sent

    def noteWrittenMask(self, objectId: int, frame: int, prompt: FramePrompts, mask: np.ndarray) -> bool:
        """Record that the engine's result ``mask`` (``(H, W)`` bool, ``[row, column]``) of a mask-prompt
        frame was written into the segment's voxels, so that the next ``syncPrompts`` sees the frame
        as unchanged (see the class docstring).

        Only done when the engine still holds ``prompt`` (the plan's prompt of that frame) for
        ``(objectId, frame)`` and ``prompt`` has a mask. Returns True when recorded.
        """
        applied = self.applied.get(objectId)
        if prompt.mask is None or applied is None or applied.get(frame) != prompt:
            return False
        written = np.asarray(mask) != 0
        applied[frame] = dataclasses.replace(prompt, mask=written, maskDigest=maskDigest(written))
        return True

    def _remove(self, tracker, objectId: int) -> None:
        if objectId in tracker.objects:
            tracker.remove_object(objectId)
        self.applied.pop(objectId, None)


# ---------------------------------------------------------------------------------------------
# Jobs (no MRML in run)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class JobPlan:
    """Everything a job needs, read from MRML on the main thread.

    Attributes:
        videoNode, segmentationNode: where results go (only touched by ``applyTrackingResults``).
        prompts: ``{objectId: {frame: FramePrompts}}`` of every prompted segment of the segmentation.
        writeObjects: ``{objectId: segmentId}`` of the segments whose frames are replaced.
        passes: ``[(start, end, reverse)]`` engine propagations (inclusive frame ranges).
        totalFrames: frames the passes yield.
        previewFrame: for a preview job, the frame whose prompt result is written (no propagation).
        segmentNames: ``{segmentId: name}`` of the written segments (for messages after a deletion).
    """

    videoNode: Any
    segmentationNode: Any
    prompts: dict[int, dict[int, FramePrompts]]
    writeObjects: dict[int, str]
    passes: list[tuple[int, int, bool]]
    totalFrames: int
    previewFrame: int | None = None
    segmentNames: dict[str, str] = dataclasses.field(default_factory=dict)


class TrackingJob:
    """One preview or propagation; it never touches MRML (``applyTrackingResults`` writes its results).

    Attributes:
        doneFrames, totalFrames: progress (frames yielded by the engine so far / in all).
        status: ``"waiting"``, ``"loading model"``, ``"tracking"``, ``"done"``, ``"cancelled"`` or ``"failed"``.
        error: the exception that stopped ``run``, or None.
        trackedFrames: frame indices whose results were produced, in engine order.
        previewMask: for a preview job, the ``(H, W)`` bool mask of the previewed frame (or None).
        writtenFrames: frames written into at least one existing segment (results of a deleted
            segment or of a removed segmentation are not counted).
        warnings: messages about dropped results, one per deleted segment and one for a removed
            segmentation.
        confidences: ``{objectId: {frame: (predicted_iou, object_score)}}`` of the propagated frames,
            from an engine that gives them (``sam2s.VideoTracker.confidence``, in this process or
            sent by a tracking server with each frame; none from the flow engine). Prompt results
            computed in a server carry none.
    """

    def __init__(
        self, session: TrackingSession, plan: JobPlan, progressCallback: ProgressCallback | None = None
    ) -> None:
        self.session = session
        self.plan = plan
        self.progressCallback = progressCallback
        self.cancelEvent = threading.Event()
        self.results: queue.Queue = queue.Queue()
        self.doneFrames = 0
        self.totalFrames = plan.totalFrames
        self.status = "waiting"
        self.error: BaseException | None = None
        self.trackedFrames: list[int] = []
        self.previewMask: np.ndarray | None = None
        self.started = threading.Event()
        self.finished = threading.Event()
        self.writtenFrames = 0
        self.warnings: list[str] = []
        self.confidences: dict[int, dict[int, tuple[float, float]]] = {}
        self._pending: dict[int, dict[int, np.ndarray]] = {}
        self._wroteAny = False
        self._droppedSegments: set[str] = set()
        self._droppedSegmentation = False
        self._stream = None  # a sam2s.serving.client.RemoteRun while a propagation runs in a server
        self.provenance = None  # what made the results (provenance.Provenance), set when they are written

    @property
    def isPreview(self) -> bool:
        """True for a preview job (one prompted frame, no propagation)."""
        return self.plan.previewFrame is not None

    @property
    def cancelled(self) -> bool:
        """True when a propagation stopped early because cancel was requested."""
        return self.status == "cancelled"

    def hasUnwrittenResults(self) -> bool:
        """True while finished frames wait to be written by ``applyTrackingResults``."""
        return not self.results.empty() or bool(self._pending)

    def discardResults(self) -> None:
        """Drop the frames not written yet (a preview computed without writing it)."""
        while not self.results.empty():
            self.results.get_nowait()
        self._pending.clear()

    def requestCancel(self) -> None:
        """Stop after the frame being computed (thread-safe); finished frames are kept. A job in a
        server is asked to stop too (one HTTP request)."""
        self.cancelEvent.set()
        self._cancelRemote()

    def run(self, onFrame: Callable[[TrackingJob], None] | None = None) -> None:
        """Compute the job to its end; results go to ``self.results`` as ``(frame, {objectId: (H, W)
        bool mask})``.

        ``onFrame(job)`` is called after each frame (the synchronous path writes chunks from it).
        Exceptions are stored in ``self.error`` (not raised) so that finished frames can still be
        written; ``finished`` is set at the end in every case. With a server session this is
        :meth:`start` then :meth:`poll` until the end (the GUI calls those two itself, from a timer).
        """
        if not self.start(onFrame):
            while not self.finished.is_set():
                if not self.poll(onFrame):
                    time.sleep(0.02)

    def start(self, onFrame: Callable[[TrackingJob], None] | None = None) -> bool:
        """Begin the job: send the prompts and, for a preview, compute it; for a propagation in a
        server, start it there and return at once (then call :meth:`poll` until ``finished``).
        In this process a propagation runs to its end here. Returns True when the job finished.

        A server session that expired while idle is made again from the plan's prompts (read from
        MRML) and the job goes on; ``warnings`` gets one line about it.
        """
        self.started.set()
        try:
            with self.session.lock:
                try:
                    if self._begin(onFrame):
                        return False  # running in the server
                except Exception as error:
                    from sam2s.serving.client import SessionNotFound

                    if not isinstance(error, SessionNotFound):
                        raise
                    self.session.renew()  # made again from the scene's prompts, unnoticed but for this line
                    self.warnings.append("The tracking server had closed the idle session; it was made again.")
                    if self._begin(onFrame):
                        return False
            self.status = "cancelled" if self.cancelEvent.is_set() and not self.isPreview else "done"
        except BaseException as error:  # noqa: BLE001 - stored and re-raised by the caller
            self._fail(error)
        self.finished.set()
        return True

    def _begin(self, onFrame) -> bool:
        """Send the prompts, then compute a preview, start a server propagation (returns True) or
        run an in-process propagation to its end (with ``session.lock`` held)."""
        plan = self.plan
        self.status = "tracking" if self.session.isLoaded else "loading model"
        tracker = self.session.tracker
        self.status = "tracking"
        force = {(o, plan.previewFrame) for o in plan.writeObjects} if self.isPreview else ()
        sent = self.session.syncPrompts(plan.prompts, force=force)
        if self.isPreview:
            masks = {o: sent[(o, plan.previewFrame)] > 0 for o in plan.writeObjects if (o, plan.previewFrame) in sent}
            if masks:
                self.previewMask = next(iter(masks.values()))
                self._noteConfidences(tracker, plan.previewFrame, masks)
                self._emit(plan.previewFrame, masks, onFrame)
            return False
        if self.cancelEvent.is_set():  # cancelled before it started
            return False
        # only the written objects: the others are not re-tracked (engine state kept)
        stream = tracker.run(TrackingPlan(tuple(plan.passes), tuple(plan.writeObjects)), cancel=self.cancelEvent)
        if self.session.isRemote:
            self._stream = stream  # polled by poll()
            return True
        # closing(): the engine refuses changes while a stream is open (sam2s.TrackerBusyError),
        # so close it on errors too, not at collection.
        with contextlib.closing(stream):
            for tracked in stream:
                self._consume(tracked, onFrame)
        return False

    def _consume(self, tracked, onFrame) -> None:
        """Queue one ``sam2s.TrackedFrame`` of the stream: the written objects' masks and confidences."""
        writeObjects = self.plan.writeObjects
        for objectId, value in zip(tracked.obj_ids, tracked.confidences):
            if value is not None and objectId in writeObjects:
                self.confidences.setdefault(objectId, {})[tracked.frame_idx] = (float(value[0]), float(value[1]))
        masks = {o: m for o, m in tracked.masks().items() if o in writeObjects}
        self._emit(tracked.frame_idx, masks, onFrame)

    def poll(self, onFrame: Callable[[TrackingJob], None] | None = None) -> int:
        """Fetch the frames a server finished since the last poll (one HTTP request, no waiting) into
        ``results``; update ``status``, ``doneFrames`` and ``finished``. Returns the number of new
        frames (0 for a job that is not running in a server).

        A server that stopped answering (killed, unreachable) ends the job as ``failed`` with a
        message naming the last finished frame; every frame received stays in ``results``.
        """
        stream = self._stream
        if stream is None or self.finished.is_set():
            return 0
        try:
            frames = stream.ready()
        except BaseException as error:  # noqa: BLE001 - the job fails, finished frames are kept
            self._fail(error)
            self.finished.set()
            return 0
        for tracked in frames:
            self._consume(tracked, onFrame)
        if stream.finished:  # an ended job whose every frame was received (a poll brings at most 64)
            self.status = stream.status
            if stream.status == "failed":
                reason = f"tracking failed in the server ({stream.error})"
                self.error = TrackingFailedError(
                    f"Tracking failed in the server: {stream.error}", reason, self.trackedFrames
                )
            self.finished.set()
        return len(frames)

    def _cancelRemote(self) -> None:
        if self._stream is not None:
            self._stream.cancel()  # once; a server that is gone stops anyway

    def _fail(self, error: BaseException) -> None:
        """Record ``error``; a lost server session (server killed or restarted, session expired) is
        explained with the last finished frame, and the session is marked for a fresh start."""
        if self.session.isRemote and _isLostServer(error):
            self.session.broken = True
            last = f"frame {self.trackedFrames[-1]}" if self.trackedFrames else "no frame"
            error = TrackingFailedError(
                f"The tracking server stopped answering ({error}); {len(self.trackedFrames)} finished frames (up to "
                f"{last}) were kept. Track again: a new server session is started and the prompts are sent again.",
                f"the tracking server stopped answering ({error}) after {len(self.trackedFrames)} frames",
                self.trackedFrames,
            )
        self.error = error
        self.status = "failed"

    def _noteConfidences(self, tracker, frame: int, masks: dict[int, np.ndarray]) -> None:
        """Keep the engine's ``confidence(objectId, frame)`` of each object of ``masks`` (before the
        frame is queued, so ``applyTrackingResults`` finds it); engines without them give None."""
        for objectId in masks:
            value = tracker.confidence(objectId, frame)
            if value is not None:
                self.confidences.setdefault(objectId, {})[frame] = (float(value[0]), float(value[1]))

    def _emit(self, frame: int, masks: dict[int, np.ndarray], onFrame) -> None:
        self.results.put((frame, masks))
        self.trackedFrames.append(frame)
        self.doneFrames += 1
        if self.progressCallback is not None:
            self.progressCallback(self.doneFrames, self.totalFrames, frame)
        if onFrame is not None:
            onFrame(self)


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
        # segmentId -> frame -> (predicted IoU, object score) of the written engine results (not saved in the scene)
        self.segmentConfidences: dict[str, dict[int, tuple[float, float]]] = {}
        self.statisticsNodes = None  # stats.StatisticsNodes of the last updateStatistics

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
            self._videoArray(videoNode)  # validates
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
        mask = np.asarray(mask)
        frames, height, width = self._videoArray(video).shape[:3]
        if mask.ndim != 2 or mask.shape != (height, width):
            raise ValueError(
                f"The mask prompt must have the frame's shape (H, W) = ({height}, {width}) (rows, columns); got "
                f"{mask.shape}. Resize or crop the mask to the imported frames."
            )
        if isinstance(frameIndex, bool) or int(frameIndex) != frameIndex or not 0 <= frameIndex < frames:
            raise ValueError(f"Frame {frameIndex} is outside the video (frames 0..{frames - 1}); pick a frame in it.")
        if mask.dtype != bool and (mask.dtype.kind not in "biuf" or not np.isin(mask, (0, 1)).all()):
            raise ValueError(
                f"Mask prompt values must be 0/1 or bool; got {mask.dtype} values "
                f"{np.unique(mask)[:4].tolist() if mask.dtype.kind in 'biuf' else '(not numbers)'}. Threshold a "
                "probability map first (e.g. mask > 0.5)."
            )
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
        """Forget the current video, segmentation and engine session (e.g. when the scene closes);
        a running job is asked to stop (its results are dropped: the segmentation is gone)."""
        self.requestCancel()
        if self._activeJob is not None:
            self._activeJob.discardResults()
        self.videoNode = None
        self.segmentationNode = None
        self._dropSession()

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

    def _dropSession(self) -> None:
        """Close the engine session, if any (a server session is closed there, shared memory freed)."""
        session, self._session = self._session, None
        if session is not None:
            session.close()

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
        frames = self._videoArray(video).shape[0]
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
        self, job: TrackingJob, flush: bool = False, beforeWrite: Callable[[], None] | None = None
    ) -> int:
        """Write the job's finished frames into their segments (main thread).

        Frames are collected until ``chunkSize`` are pending (or ``flush``), then each segment's
        runs of consecutive frames are replaced in one write each (``segments.writeSegmentFrames``);
        other frames and segments are untouched. ``beforeWrite`` is called once per job, before
        its first write (e.g. ``saveStateForUndo``).

        A segment deleted while the job runs gets nothing more; one warning per deleted segment
        (and one if the whole segmentation was removed from the scene) is added to
        ``job.warnings``. A written result of a mask-prompt frame is noted in the engine session
        (``TrackingSession.noteWrittenMask``) so that the next sync does not re-send it.

        Returns:
            The number of frames written now into at least one existing segment (also added to
            ``job.writtenFrames``).
        """
        while True:
            try:
                frame, masks = job.results.get_nowait()
            except queue.Empty:
                break
            for objectId, mask in masks.items():
                job._pending.setdefault(objectId, {})[frame] = mask
        pendingFrames = {f for frames in job._pending.values() for f in frames}
        if not pendingFrames or (not flush and len(pendingFrames) < self.chunkSize):
            return 0
        plan = job.plan
        segmentationNode = plan.segmentationNode
        if segmentationNode.GetScene() is None:
            if not job._droppedSegmentation:
                job._droppedSegmentation = True
                job.warnings.append(
                    f"Segmentation '{segmentationNode.GetName()}' was removed from the scene while tracking; the "
                    f"results from frame {min(pendingFrames)} on were dropped. Create or choose a segmentation and "
                    "track again."
                )
            job._pending.clear()
            return 0
        segmentation = segmentationNode.GetSegmentation()
        live: dict[int, tuple[str, dict[int, np.ndarray]]] = {}
        for objectId, frames in job._pending.items():
            segmentId = plan.writeObjects[objectId]
            if segmentation.GetSegment(segmentId) is not None:
                live[objectId] = (segmentId, frames)
            elif segmentId not in job._droppedSegments:
                job._droppedSegments.add(segmentId)
                name = plan.segmentNames.get(segmentId, segmentId)
                job.warnings.append(
                    f"Segment '{name}' (ID {segmentId}) was deleted while tracking; its results from frame "
                    f"{min(frames)} on were dropped. Add the segment again and track it to fill those frames."
                )
        job._pending.clear()
        if not live:
            return 0
        if beforeWrite is not None and not job._wroteAny:
            beforeWrite()
        job._wroteAny = True
        written: set[int] = set()
        wasModifying = segmentationNode.StartModify()
        try:
            for objectId, (segmentId, frames) in live.items():
                for begin, end in _segments.frameRuns(frames):
                    masks = np.stack([frames[f] for f in range(begin, end + 1)])
                    _segments.writeSegmentFrames(segmentationNode, segmentId, plan.videoNode, begin, masks)
                    written.update(range(begin, end + 1))
                known = job.confidences.get(objectId, {})
                kept = self.segmentConfidences.setdefault(segmentId, {})
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
        finally:
            segmentationNode.EndModify(wasModifying)
        job.writtenFrames += len(written)
        _provenance.setNodeProvenance(segmentationNode, self._jobProvenance(job), [s for s, _ in live.values()])
        return len(written)

    def _jobProvenance(self, job: TrackingJob) -> _provenance.Provenance:
        """What made the job's results (``provenance.makeProvenance``, once per job): the model
        settings (checkpoint resolved when cached), the SHA-256 of the plan's prompts (they live in
        the scene, not in a file), the frame range and the passes."""
        if job.provenance is None:
            spec = self.settings.toSpec()
            with contextlib.suppress(FileNotFoundError):  # a model given with setModel has no file
                spec = spec.settle()
            prompts = {
                str(o): {str(t): [p.points, p.labels, p.box, p.maskDigest] for t, p in sorted(frames.items())}
                for o, frames in sorted(job.plan.prompts.items())
            }
            passes = job.plan.passes
            ends = [t for s, e, _ in passes for t in (s, e)] or [job.plan.previewFrame or 0]
            job.provenance = _provenance.makeProvenance(
                spec,
                promptsPath=f"{job.plan.segmentationNode.GetName()} (prompts in the scene)".replace("/", "_"),
                promptsData=json.dumps(prompts, sort_keys=True).encode("utf-8"),
                firstFrame=min(ends),
                lastFrame=max(ends),
                passes=passes,
            )
        return job.provenance

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

    @staticmethod
    def _videoArray(videoNode) -> np.ndarray:
        """``(T, H, W, 3)`` (or grey ``(T, H, W)``) uint8 view of the video volume (no copy)."""
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
        frames = self._videoArray(videoNode)
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
                lambda: backend.createTracker(frames, videoNode, settings, self.getModel),
                key,
                lambda: backend.generation,
            )
        return self._session
