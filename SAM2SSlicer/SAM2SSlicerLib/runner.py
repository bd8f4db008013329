"""Run tracking jobs from a GUI without threads and without waiting: start a job, then ``tick()``
from a timer.

Inside 3D Slicer a Python worker thread barely runs: PythonQt holds the GIL while Qt's event loop
is idle (CTK's ``ctkAbstractPythonManager`` and PythonQt are built without thread support), so
the module runs the engine in a tracking server (``backends.ServerBackend``) and drives it from
the main thread with a QTimer that calls :meth:`JobRunner.tick`: one bounded step of the job
(``TrackingJob.advance``: the server's start, the frames' upload chunk by chunk, the model load,
each prompt and each poll are requests in flight that a step only advances, never waits for;
``sam2s.serving.steps``) and a bulk write of the finished frames into MRML
(``SAM2STrackingLogic.applyTrackingResults``, every ``chunkSize`` frames and at the end).

This class has no Qt: the module ticks it from a QTimer (``SAM2SSlicer.getSharedController``),
``sam2s web`` from its event loop, and the tests with a plain loop (also under a simulated
GIL-holding main thread).

One job runs at a time. A job asked for while one runs is queued (:meth:`startWhenIdle`: only the
latest request is kept, e.g. a propagation pressed while a click's preview is computed; N5 of
issue 23), never nested.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .jobs import TrackingBusyError, TrackingJob

__all__ = ["JobRunner"]

WRITE_BUDGET_S = 0.012
"""Seconds of MRML writes per tick: a tick writes as many finished frames as fit, measured (a
frame of a full-HD video takes milliseconds in ``vtkSlicerSegmentationsModuleLogic``), so that a
GUI frame is never held long; the frames left are written at the next ticks."""

MAX_WRITE_FRAMES = 256
"""The most frames one tick writes."""

Listener = Callable[[TrackingJob, bool], None]
"""``listener(job, finished)``: called after every tick of a running job (progress, status)."""


class JobRunner:
    """One job at a time for a ``SAM2STrackingLogic``; see the module docstring.

    Args:
        logic: the ``SAM2STrackingLogic`` whose ``applyTrackingResults`` writes the results.

    Attributes:
        job: the running job, or None. listeners: ``listener(job, finished)`` callables.
        startListeners: ``listener(job)`` callables, called when a job starts.
        pendingLabel: what the queued request is (the ``label`` given to :meth:`startWhenIdle`),
            or None when nothing is queued.
        failedListeners: ``listener(label, error)`` callables, called when a queued request could
            not start (e.g. its prompts changed meanwhile).
        writeFrames: the finished frames one tick writes at most (learnt: ``WRITE_BUDGET_S``).
    """

    def __init__(self, logic: Any) -> None:
        self.logic = logic
        self.pendingLabel: str | None = None
        self.job: TrackingJob | None = None
        self.listeners: list[Listener] = []
        self.startListeners: list[Callable[[TrackingJob], None]] = []  # e.g. the GUI starts its timer
        self.failedListeners: list[Callable[[str, Exception], None]] = []  # a queued request could not start
        self._beforeWrite: Callable[[], None] | None = None
        self._onFinished: Callable[[TrackingJob], None] | None = None
        self._pending: tuple | None = None
        self._ticking = False
        self.writeFrames = 2  # frames written per tick, learnt from the measured write time
        self._secondsPerFrame: float | None = None

    def _learnWriteCost(self, frames: int, seconds: float) -> None:
        """Set :attr:`writeFrames` from the measured seconds per written frame (a moving average)."""
        if frames <= 0:
            return
        perFrame = seconds / frames
        self._secondsPerFrame = (
            perFrame if self._secondsPerFrame is None else 0.7 * self._secondsPerFrame + 0.3 * perFrame
        )
        self.writeFrames = min(MAX_WRITE_FRAMES, max(1, int(WRITE_BUDGET_S / max(self._secondsPerFrame, 1e-6))))

    def isRunning(self) -> bool:
        """True while a job is started and not yet finished and written."""
        return self.job is not None

    def start(
        self,
        job: TrackingJob,
        beforeWrite: Callable[[], None] | None = None,
        onFinished: Callable[[TrackingJob], None] | None = None,
    ) -> None:
        """Begin ``job`` (``TrackingJob.begin`` and a first bounded ``advance``: in a server nothing
        is waited for; in this process the whole job runs here). Then call :meth:`tick` until it
        returns True.

        ``beforeWrite`` (e.g. the Segment Editor's ``saveStateForUndo``) is called once before the
        job's first write, so that one Undo reverts the whole job; ``onFinished(job)`` at the end.

        Raises:
            TrackingBusyError: another job runs.
        """
        if self.isRunning():
            raise TrackingBusyError("Tracking is running; press Cancel or wait for it to finish first.")
        self.job, self._beforeWrite, self._onFinished = job, beforeWrite, onFinished
        job.begin()
        job.advance()  # stores its errors in the job (never raises)
        for listener in list(self.startListeners):
            _call(listener, job)

    def startWhenIdle(
        self,
        makeJob: Callable[[], TrackingJob],
        beforeWrite: Callable[[], None] | None = None,
        onFinished: Callable[[TrackingJob], None] | None = None,
        label: str = "preview",
    ) -> bool:
        """Start ``makeJob()`` now, or queue it after the running job (only the latest request is
        kept: instant previews while the user keeps clicking; a propagation asked for during a
        preview). ``label`` names the queued request (:attr:`pendingLabel`). Returns True when
        started now, False when queued."""
        if self.isRunning():
            self._pending, self.pendingLabel = (makeJob, beforeWrite, onFinished), label
            return False
        self.start(makeJob(), beforeWrite, onFinished)
        return True

    def cancel(self) -> None:
        """Stop the running job now: its computation stops after the current frame, and the frames
        computed but not written yet (a backlog, since each tick writes ``writeFrames`` at most) are
        dropped, so the segmentation keeps exactly what the user saw when pressing Cancel. A job
        that had computed every frame but not written them all ends ``cancelled`` too. A queued
        request is dropped."""
        self._pending = self.pendingLabel = None
        job = self.job
        if job is None:
            return
        job.requestCancel()
        job.discardResults()
        if job.finished.is_set() and job.status == "done":
            job.status = "cancelled"

    def dropPending(self) -> None:
        """Forget the request queued after the running job (the running job goes on)."""
        self._pending = self.pendingLabel = None

    def tick(self) -> bool:
        """Advance the running job once (``TrackingJob.advance``: no waiting) and write what
        finished; returns True when the job ended with this tick (then the queued request, if
        any, is started).

        A listener or ``onFinished`` that raises is logged and skipped: the runner is never left
        holding a finished job (which would refuse every later job as busy).
        """
        job = self.job
        if job is None or self._ticking:  # a tick from inside a tick (a listener processed events): skip
            return False
        self._ticking = True
        try:
            return self._tick(job)
        finally:
            self._ticking = False

    def _tick(self, job: TrackingJob) -> bool:
        job.advance()
        try:
            start = time.perf_counter()
            written = self.logic.applyTrackingResults(
                job, flush=job.finished.is_set(), beforeWrite=self._beforeWrite, maxFrames=self.writeFrames
            )
            self._learnWriteCost(written, time.perf_counter() - start)
        except Exception as error:  # noqa: BLE001 - reported through the job to the listeners
            logging.exception("SAM2S: writing tracking results failed")
            job.requestCancel()
            job.discardResults()
            if job.error is None:
                job.error = error
        finished = job.finished.is_set() and not job.hasUnwrittenResults()  # the last frames may take ticks
        if finished:
            self.job = None  # before the callbacks: they see the runner idle
        for listener in list(self.listeners):
            _call(listener, job, finished)
        if not finished:
            return False
        if self._onFinished is not None:
            _call(self._onFinished, job)
        if self._pending is not None and self.job is None:
            (makeJob, beforeWrite, onFinished), label = self._pending, self.pendingLabel
            self._pending = self.pendingLabel = None
            try:
                self.start(makeJob(), beforeWrite, onFinished)
            except Exception as error:  # noqa: BLE001 - the next tick's listeners see no job; tell them
                logging.warning(f"SAM2S: the queued {label} could not start: {error}")
                for listener in list(self.failedListeners):
                    _call(listener, label, error)
        return True


def _call(callback: Callable, *args: Any) -> None:
    """Call a GUI callback; an exception is logged, never propagated into the runner."""
    try:
        callback(*args)
    except Exception:  # noqa: BLE001 - one broken listener must not stop the others or the runner
        logging.exception(f"SAM2S: a tracking listener failed ({getattr(callback, '__qualname__', callback)})")
