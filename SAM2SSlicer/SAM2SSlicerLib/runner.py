"""Run tracking jobs from a GUI without threads: start a job, then ``tick()`` from a timer.

Inside 3D Slicer a Python worker thread barely runs: PythonQt holds the GIL while Qt's event loop
is idle (CTK's ``ctkAbstractPythonManager`` and PythonQt are built without thread support), so
the module runs the engine in a tracking server (``backends.ServerBackend``) and drives it from
the main thread with a QTimer that calls :meth:`JobRunner.tick`: one non-blocking poll of the
server (``TrackingJob.poll``) and a bulk write of the finished frames into MRML
(``SAM2STrackingLogic.applyTrackingResults``, every ``chunkSize`` frames and at the end).

This class has no Qt: the module ticks it from a QTimer (``SAM2SSlicer.getSharedController``),
and the tests drive it with a plain loop (also under a simulated GIL-holding main thread).

Where Python threads do run (``sam2s web``: trame's asyncio event loop), ``startInBackground``
runs each job's ``start`` (sending the prompts, computing a preview, uploading frames for a new
server session: requests that take seconds) in a worker thread, so that the loop keeps answering;
``tick`` then polls and writes once that thread is done. MRML is still written only by ``tick``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .jobs import TrackingBusyError, TrackingJob

__all__ = ["JobRunner"]

Listener = Callable[[TrackingJob, bool], None]
"""``listener(job, finished)``: called after every tick of a running job (progress, status)."""


class JobRunner:
    """One job at a time for a ``SAM2STrackingLogic``; see the module docstring.

    Args:
        logic: the ``SAM2STrackingLogic`` whose ``applyTrackingResults`` writes the results.
        startInBackground: run ``job.start()`` in a worker thread (see the module docstring); not
            in Slicer, where such a thread would barely run.

    Attributes:
        job: the running job, or None. listeners: ``listener(job, finished)`` callables.
        startListeners: ``listener(job)`` callables, called when a job starts.
    """

    def __init__(self, logic: Any, startInBackground: bool = False) -> None:
        self.logic = logic
        self.startInBackground = bool(startInBackground)
        self._starting: threading.Thread | None = None
        self.job: TrackingJob | None = None
        self.listeners: list[Listener] = []
        self.startListeners: list[Callable[[TrackingJob], None]] = []  # e.g. the GUI starts its timer
        self._beforeWrite: Callable[[], None] | None = None
        self._onFinished: Callable[[TrackingJob], None] | None = None
        self._pending: tuple | None = None

    def isRunning(self) -> bool:
        """True while a job is started and not yet finished and written."""
        return self.job is not None

    def start(
        self,
        job: TrackingJob,
        beforeWrite: Callable[[], None] | None = None,
        onFinished: Callable[[TrackingJob], None] | None = None,
    ) -> None:
        """Begin ``job`` (``TrackingJob.start``: prompts are sent; a server propagation is started
        and returns at once; a preview is computed). Then call :meth:`tick` until it returns True.

        ``beforeWrite`` (e.g. the Segment Editor's ``saveStateForUndo``) is called once before the
        job's first write, so that one Undo reverts the whole job; ``onFinished(job)`` at the end.

        Raises:
            TrackingBusyError: another job runs.
        """
        if self.isRunning():
            raise TrackingBusyError("Tracking is running; press Cancel or wait for it to finish first.")
        self.job, self._beforeWrite, self._onFinished = job, beforeWrite, onFinished
        if self.startInBackground:
            # job.start() stores its errors in the job (never raises): the thread needs no handler
            self._starting = threading.Thread(target=job.start, name="sam2s-job-start", daemon=True)
            self._starting.start()
        else:
            job.start()
        for listener in list(self.startListeners):
            _call(listener, job)

    def startWhenIdle(
        self,
        makeJob: Callable[[], TrackingJob],
        beforeWrite: Callable[[], None] | None = None,
        onFinished: Callable[[TrackingJob], None] | None = None,
    ) -> None:
        """Start ``makeJob()`` now, or after the running job (only the latest request is kept): for
        instant previews while the user keeps clicking."""
        if self.isRunning():
            self._pending = (makeJob, beforeWrite, onFinished)
            return
        self.start(makeJob(), beforeWrite, onFinished)

    def cancel(self) -> None:
        """Stop the running job after its current frame (finished frames are written); drop a
        pending preview."""
        self._pending = None
        if self.job is not None:
            self.job.requestCancel()

    def dropPending(self) -> None:
        """Forget the preview waiting for the running job (the running job goes on)."""
        self._pending = None

    def tick(self) -> bool:
        """Poll the running job once (no waiting) and write what finished; returns True when the
        job ended with this tick (then the next pending job, if any, is started).

        A listener or ``onFinished`` that raises is logged and skipped: the runner is never left
        holding a finished job (which would refuse every later job as busy).
        """
        job = self.job
        if job is None:
            return False
        if self._starting is not None:
            if self._starting.is_alive():
                return False  # still sending prompts or computing the preview in its thread
            self._starting = None
        job.poll()
        finished = job.finished.is_set()
        try:
            self.logic.applyTrackingResults(job, flush=finished, beforeWrite=self._beforeWrite)
        except Exception as error:  # noqa: BLE001 - reported through the job to the listeners
            logging.exception("SAM2S: writing tracking results failed")
            job.requestCancel()
            if job.error is None:
                job.error = error
        if finished:
            self.job = None  # before the callbacks: they see the runner idle
        for listener in list(self.listeners):
            _call(listener, job, finished)
        if not finished:
            return False
        if self._onFinished is not None:
            _call(self._onFinished, job)
        if self._pending is not None and self.job is None:
            makeJob, beforeWrite, onFinished = self._pending
            self._pending = None
            try:
                self.start(makeJob(), beforeWrite, onFinished)
            except Exception as error:  # noqa: BLE001 - the next tick's listeners see no job; log it
                logging.warning(f"SAM2S: the next preview could not start: {error}")
        return True


def _call(callback: Callable, *args: Any) -> None:
    """Call a GUI callback; an exception is logged, never propagated into the runner."""
    try:
        callback(*args)
    except Exception:  # noqa: BLE001 - one broken listener must not stop the others or the runner
        logging.exception(f"SAM2S: a tracking listener failed ({getattr(callback, '__qualname__', callback)})")
