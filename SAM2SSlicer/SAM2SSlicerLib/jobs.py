"""Tracking jobs and the engine session they share, with no MRML access (``logic`` reads the plan
from MRML and writes the results).

* :class:`TrackingSession` -- one engine session (``sam2s.Tracker``) over a video volume's frames,
  reused across clicks and propagations; it sends only the prompts that changed.
* :class:`JobPlan` -- everything a job needs, read from MRML on the main thread.
* :class:`TrackingJob` -- one preview or propagation: it runs (in this process) or polls (in a
  tracking server) the engine's stream and queues each frame's masks for
  ``SAM2STrackingLogic.applyTrackingResults``.
* :class:`TrackingBusyError`, :class:`TrackingFailedError` -- what a job raises.

``logic`` re-exports every name here (``from SAM2SSlicerLib.logic import TrackingJob`` keeps working).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from sam2s.serving.steps import Stepper, Steps, drive
from sam2s.session import TrackerBusyError, TrackingPlan

from . import provenance as _provenance
from .prompts import FramePrompts

ProgressCallback = Callable[[int, int, int], None]
"""``(doneFrames, totalFrames, frameIndex)``, called in the thread that runs or polls the job."""


__all__ = [
    "JobPlan",
    "ProgressCallback",
    "TrackingBusyError",
    "TrackingFailedError",
    "TrackingJob",
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
        createTrackerSteps: ``createTrackerSteps(cancel)`` makes the engine session on first use, as
            steps (``sam2s.serving.steps``; ``backends``: a ``sam2s.VideoTracker`` / ``FlowTracker``
            in this process, or a ``sam2s.serving.client.RemoteSession`` in a tracking server,
            whose upload stops when ``cancel()`` is True): a ``sam2s.Tracker``.
        key: identifies what the session was built for (video data, segmentation, model, memory,
            backend).
    """

    def __init__(
        self, createTrackerSteps: Callable[..., Steps], key, generation: Callable[[], int] = lambda: 0
    ) -> None:
        self.createTrackerSteps = createTrackerSteps
        self.key = key
        self.applied: dict[int, dict[int, FramePrompts]] = {}
        self.broken = False  # the server lost it (killed, expired): the logic makes a new session
        self._generation = generation  # the backend's server generation (a local server restarted)
        self._createdIn: int | None = None
        self._tracker = None

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
        return self.isRemoteTracker(self._tracker)

    @property
    def tracker(self):
        """The engine session (created on first use; loads the model; blocking)."""
        return drive(self.trackerSteps())

    def trackerSteps(self, cancel: Callable[[], bool] | None = None) -> Steps:
        """:attr:`tracker` as steps (``sam2s.serving.steps``): a server session is made without the
        caller waiting (server start, frames, model load)."""
        if self._tracker is None:
            tracker = yield from self.createTrackerSteps(cancel)
            self._tracker, self._createdIn = tracker, self._generation()
        return self._tracker

    def close(self, wait: bool = True) -> None:
        """Release the engine session (a server session is closed; errors are ignored). With
        ``wait`` False, or for a session the server lost (``broken``: it may have stopped
        answering), the server's answer is not waited for (a GUI goes on at once)."""
        tracker, self._tracker = self._tracker, None
        if tracker is None:
            return
        if self.isRemoteTracker(tracker) and (self.broken or not wait):
            tracker.close(wait=False)
        else:
            tracker.close()

    @staticmethod
    def isRemoteTracker(tracker) -> bool:
        """True for an engine session in a tracking server (``sam2s.serving.client.RemoteSession``)."""
        from sam2s.serving.client import RemoteSession

        return isinstance(tracker, RemoteSession)

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
        return drive(self.syncPromptsSteps(prompts, force))

    def syncPromptsSteps(
        self, prompts: dict[int, dict[int, FramePrompts]], force: Iterable[tuple[int, int]] = ()
    ) -> Steps:
        """:meth:`syncPrompts` as steps (``sam2s.serving.steps``): each prompt sent to a server is a
        request the caller does not wait for (``sam2s.Tracker.steps``)."""
        tracker = yield from self.trackerSteps()
        force = set(force)
        sent: dict[tuple[int, int], np.ndarray] = {}
        for objectId in list(self.applied):
            if objectId not in prompts:
                yield from self._removeSteps(tracker, objectId)
        for objectId, frames in prompts.items():
            applied = self.applied.setdefault(objectId, {})
            if any(frame not in frames for frame in applied):
                yield from self._removeSteps(tracker, objectId)
                applied = self.applied.setdefault(objectId, {})
            for frame, prompt in frames.items():
                if applied.get(frame) == prompt and (objectId, frame) not in force:
                    continue
                logits = None
                if prompt.mask is not None:
                    logits = yield from tracker.steps("add_mask", frame, objectId, prompt.mask)
                points = prompt.pointArray() if prompt.points else None
                labels = prompt.labelArray() if prompt.points else None
                if prompt.box is not None:
                    logits = yield from tracker.steps(
                        "add_box", frame, objectId, np.asarray(prompt.box), points, labels
                    )
                elif prompt.points:
                    logits = yield from tracker.steps("add_points", frame, objectId, points, labels)
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

    def _removeSteps(self, tracker, objectId: int) -> Steps:
        if objectId in tracker.objects:
            yield from tracker.steps("remove_object", objectId)
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
        self.wroteAny = False  # applyTrackingResults wrote a chunk (beforeWrite was called)
        self._droppedSegments: set[str] = set()
        self._droppedSegmentation = False
        self._stepper: Stepper | None = None  # begin() / advance()
        self.prepareSteps: Callable[[], Steps] | None = None  # steps before the job's own (provenanceSteps)
        self.closedWithScene = False  # stopped because the scene closed: no error for the user
        self.provenance = None  # what made the results (provenance.Provenance), set when they are written

    @property
    def isPreview(self) -> bool:
        """True for a preview job (one prompted frame, no propagation)."""
        return self.plan.previewFrame is not None

    @property
    def cancelled(self) -> bool:
        """True when a propagation stopped early because cancel was requested (or any job whose
        frames upload to a server was cancelled)."""
        return self.status == "cancelled"

    def hasUnwrittenResults(self) -> bool:
        """True while finished frames wait to be written by ``applyTrackingResults``."""
        return not self.results.empty() or bool(self._pending)

    def discardResults(self) -> None:
        """Drop the frames not written yet (a preview computed without writing it; the backlog of a
        cancelled job). They leave ``trackedFrames`` too, which then lists the frames kept."""
        dropped = {f for frames in self._pending.values() for f in frames}
        while not self.results.empty():
            dropped.add(self.results.get_nowait()[0])
        self._pending.clear()
        if dropped:
            self.trackedFrames = [f for f in self.trackedFrames if f not in dropped]

    def takeChunk(
        self, chunkSize: int, flush: bool = False, maxFrames: int | None = None
    ) -> dict[int, dict[int, np.ndarray]]:
        """Move the queued frames into the pending chunk and hand the chunk over once ``chunkSize``
        frames are pending (or any with ``flush``). With ``maxFrames`` (a GUI timer's time-bounded
        write), at most that many frames (the earliest) are handed over at each call, whenever any
        are pending; the others stay pending.

        Returns:
            ``{objectId: {frame: (H, W) bool mask}}`` (those frames leave the pending chunk), or
            ``{}`` while fewer frames are pending.
        """
        while True:
            try:
                frame, masks = self.results.get_nowait()
            except queue.Empty:
                break
            for objectId, mask in masks.items():
                self._pending.setdefault(objectId, {})[frame] = mask
        pendingFrames = sorted({f for frames in self._pending.values() for f in frames})
        if maxFrames is None and (not pendingFrames or (not flush and len(pendingFrames) < chunkSize)):
            return {}
        if maxFrames is None or len(pendingFrames) <= maxFrames:
            chunk, self._pending = self._pending, {}
            return chunk
        taken = set(pendingFrames[: max(1, int(maxFrames))])
        chunk = {}
        for objectId, frames in self._pending.items():
            mine = {f: frames.pop(f) for f in sorted(taken & frames.keys())}
            if mine:
                chunk[objectId] = mine
        self._pending = {o: frames for o, frames in self._pending.items() if frames}
        return chunk

    def dropSegmentation(self, fromFrame: int) -> None:
        """Note that the plan's segmentation left the scene: its results from ``fromFrame`` on are
        dropped (one warning per job)."""
        if not self._droppedSegmentation:
            self._droppedSegmentation = True
            self.warnings.append(
                f"Segmentation '{self.plan.segmentationNode.GetName()}' was removed from the scene while tracking; the "
                f"results from frame {fromFrame} on were dropped. Create or choose a segmentation and "
                "track again."
            )

    def dropSegment(self, segmentId: str, fromFrame: int) -> None:
        """Note that segment ``segmentId`` was deleted: its results from ``fromFrame`` on are dropped
        (one warning per segment)."""
        if segmentId not in self._droppedSegments:
            self._droppedSegments.add(segmentId)
            name = self.plan.segmentNames.get(segmentId, segmentId)
            self.warnings.append(
                f"Segment '{name}' (ID {segmentId}) was deleted while tracking; its results from frame "
                f"{fromFrame} on were dropped. Add the segment again and track it to fill those frames."
            )

    @staticmethod
    def _settledSpec(settings):
        spec = settings.toSpec()
        with contextlib.suppress(FileNotFoundError):  # a model given with setModel has no file
            spec = spec.settle()
        return spec

    def provenanceSteps(self, settings) -> Steps:
        """Hash the checkpoint of ``settings`` (``provenance.fileSha256Steps``, cached per file) as
        steps, so that :meth:`makeProvenance` at the first write finds it without reading the file
        on the GUI thread at once; a file that cannot be read is left to ``makeProvenance``."""
        spec = self._settledSpec(settings)
        if spec.engine == "sam2" and spec.checkpoint and os.path.isfile(spec.checkpoint):
            with contextlib.suppress(OSError):
                yield from _provenance.fileSha256Steps(spec.checkpoint, cache=True)

    def makeProvenance(self, settings) -> _provenance.Provenance:
        """What made the job's results (``provenance.makeProvenance``, once per job, kept in
        ``provenance``): the model ``settings`` (``settings.ModelSettings``; checkpoint resolved when
        cached), the SHA-256 of the plan's prompts (they live in the scene, not in a file), the
        frame range and the passes."""
        if self.provenance is None:
            spec = self._settledSpec(settings)
            prompts = {
                str(o): {str(t): [p.points, p.labels, p.box, p.maskDigest] for t, p in sorted(frames.items())}
                for o, frames in sorted(self.plan.prompts.items())
            }
            passes = self.plan.passes
            ends = [t for s, e, _ in passes for t in (s, e)] or [self.plan.previewFrame or 0]
            self.provenance = _provenance.makeProvenance(
                spec,
                promptsPath=f"{self.plan.segmentationNode.GetName()} (prompts in the scene)".replace("/", "_"),
                promptsData=json.dumps(prompts, sort_keys=True).encode("utf-8"),
                firstFrame=min(ends),
                lastFrame=max(ends),
                passes=passes,
            )
        return self.provenance

    def requestCancel(self) -> None:
        """Stop after the frame being computed (thread-safe, never waits); finished frames are kept.
        A job in a server is cancelled there by its next step (one request)."""
        self.cancelEvent.set()

    def run(self, onFrame: Callable[[TrackingJob], None] | None = None) -> None:
        """Compute the job to its end, blocking (``drive`` of :meth:`steps`); results go to
        ``self.results`` as ``(frame, {objectId: (H, W) bool mask})``.

        ``onFrame(job)`` is called after each frame (the synchronous path writes chunks from it).
        Exceptions are stored in ``self.error`` (not raised) so that finished frames can still be
        written; ``finished`` is set at the end in every case.
        """
        drive(self.steps(onFrame))

    def begin(self, onFrame: Callable[[TrackingJob], None] | None = None) -> None:
        """Prepare the job for :meth:`advance` (a GUI timer: ``runner.JobRunner``)."""
        self._stepper = Stepper(self.steps(onFrame))

    def advance(self) -> bool:
        """Advance the job begun with :meth:`begin` without waiting for a server: a few
        milliseconds of work at most when it runs in a server (each request is sent or read
        when the socket allows). In this process the whole job runs here. Returns True once
        ``finished``."""
        if self._stepper is None:
            raise RuntimeError("call begin() before advance()")
        self._stepper.advance()
        return self.finished.is_set()

    def steps(self, onFrame: Callable[[TrackingJob], None] | None = None) -> Steps:
        """The whole job as steps (``sam2s.serving.steps``): the engine session (made on first use:
        server start, frames, model load), the prompts, then the preview, or the propagation (in a
        server: started there, then one poll per step until it ends; in this process: run to its
        end). ``status`` says where it is; ``finished`` is set at the end in every case.

        A server session that expired while idle is made again from the plan's prompts (read from
        MRML) and the job goes on; ``warnings`` gets one line about it.
        """
        from sam2s.serving.client import SessionNotFound, UploadCancelled

        self.started.set()
        try:
            if self.prepareSteps is not None:
                yield from self.prepareSteps()
            try:
                yield from self._computeSteps(onFrame)
            except SessionNotFound:
                self.session.renew()  # made again from the scene's prompts, unnoticed but for this line
                self.warnings.append("The tracking server had closed the idle session; it was made again.")
                yield from self._computeSteps(onFrame)
            if self.status == "tracking":  # a server's job has its own final status
                self.status = "cancelled" if self.cancelEvent.is_set() and not self.isPreview else "done"
        except GeneratorExit:
            self.finished.set()
            raise
        except UploadCancelled:
            self.status = "cancelled"  # cancelled while the frames went to the server: nothing to write
        except BaseException as error:  # noqa: BLE001 - stored and re-raised by the caller
            self._fail(error)
        self.finished.set()

    def _computeSteps(self, onFrame) -> Steps:
        """Send the prompts, then compute a preview, or run the propagation to its end."""
        plan = self.plan
        self.status = "tracking" if self.session.isLoaded else "loading model"
        tracker = yield from self.session.trackerSteps(cancel=self.cancelEvent.is_set)
        self.status = "tracking"
        force = {(o, plan.previewFrame) for o in plan.writeObjects} if self.isPreview else ()
        sent = yield from self.session.syncPromptsSteps(plan.prompts, force=force)
        if self.isPreview:
            masks = {o: sent[(o, plan.previewFrame)] > 0 for o in plan.writeObjects if (o, plan.previewFrame) in sent}
            if masks:
                self.previewMask = next(iter(masks.values()))
                self._noteConfidences(tracker, plan.previewFrame, masks)
                self._emit(plan.previewFrame, masks, onFrame)
            return
        if self.cancelEvent.is_set():  # cancelled before it started
            return
        # only the written objects: the others are not re-tracked (engine state kept)
        trackingPlan = TrackingPlan(tuple(plan.passes), tuple(plan.writeObjects))
        stream = yield from tracker.steps("run", trackingPlan, cancel=self.cancelEvent)
        if self.session.isRemote:
            yield from self._pollSteps(stream, onFrame)
            return
        # closing(): the engine refuses changes while a stream is open (sam2s.TrackerBusyError),
        # so close it on errors too, not at collection.
        with contextlib.closing(stream):
            for tracked in stream:
                self._consume(tracked, onFrame)

    def _pollSteps(self, stream, onFrame) -> Steps:
        """Fetch the frames the server finishes (``RemoteRun.ready_steps``: one request, which also
        sends a requested cancel), one poll per step, until the job ended and every frame came. A
        server that stopped answering (killed, unreachable, stalled past the client's quick
        timeout) ends the job as ``failed`` with a message naming the last finished frame; every
        frame received stays in ``results``.

        After a cancel (``requestCancel``) the polls go on until the server's job ended (so that the
        session is free for the next job), but the frames they bring are dropped: Cancel keeps what
        was fetched before it, not the backlog the server had finished meanwhile, and the job ends
        ``cancelled`` even when the server had already finished it."""
        while True:
            for tracked in (yield from stream.ready_steps()):
                if not (self.cancelEvent.is_set() and not self.isPreview):
                    self._consume(tracked, onFrame)
            if stream.finished:  # an ended job whose every frame was received (a poll brings at most 64)
                if stream.status == "failed":
                    reason = f"tracking failed in the server ({stream.error})"
                    self.error = TrackingFailedError(
                        f"Tracking failed in the server: {stream.error}", reason, self.trackedFrames
                    )
                cancelled = self.cancelEvent.is_set() and not self.isPreview and stream.status == "done"
                self.status = "cancelled" if cancelled else stream.status
                return
            yield None  # the next poll at the next step (a GUI timer tick)

    def _consume(self, tracked, onFrame) -> None:
        """Queue one ``sam2s.TrackedFrame`` of the stream: the written objects' masks and confidences."""
        writeObjects = self.plan.writeObjects
        for objectId, value in zip(tracked.obj_ids, tracked.confidences):
            if value is not None and objectId in writeObjects:
                self.confidences.setdefault(objectId, {})[tracked.frame_idx] = (float(value[0]), float(value[1]))
        masks = {o: m for o, m in tracked.masks().items() if o in writeObjects}
        self._emit(tracked.frame_idx, masks, onFrame)

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
