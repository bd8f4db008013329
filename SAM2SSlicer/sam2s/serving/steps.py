"""Work written once as *steps* and run either way: blocking (:func:`drive`, for scripts, the
command line, tests) or ticked from a GUI timer (:class:`Stepper`, for 3D Slicer, whose Python
threads barely run while Qt idles, and for the web app's event loop).

A steps generator yields what it waits for and receives its result:

* a *call*: an object with ``ready() -> bool`` (advances without blocking; True once finished),
  ``result()`` (the value, or raises the call's error) and ``wait()`` (blocks, then
  ``result()``), e.g. a ``sam2s.serving.client.Call`` (one HTTP request in flight);
* ``None``: nothing to wait for, but give the caller its turn (the next timer tick), e.g. between
  two polls of a tracking job or while a server process starts;
* :data:`MORE`: a slice of work in this process is done (e.g. one block of a file's hash): go on
  at once while the caller's time budget lasts, else at its next turn.

Its ``return`` value is the result of the whole; an exception ends it (and the error is the
result). Example: ``session = yield from client.create_session_steps(frames, model)``.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any, Protocol

__all__ = ["MORE", "PAUSE_S", "Call", "Steps", "Stepper", "drive", "run_now"]

MORE = object()
"""Yielded by steps between slices of their own work (see the module docstring)."""

PAUSE_S = 0.05
"""Seconds :func:`drive` sleeps when the steps yield ``None`` (a GUI timer's tick instead)."""


class Call(Protocol):
    """What steps may wait for (see the module docstring)."""

    def ready(self) -> bool: ...

    def result(self) -> Any: ...

    def wait(self) -> Any: ...


Steps = Generator["Call | None", Any, Any]
"""A steps generator (see the module docstring)."""


def run_now(value: Any) -> Steps:
    """Steps that yield nothing and return ``value`` (for work that never waits, e.g. an engine
    session in this process)."""
    return value
    yield  # pragma: no cover - makes this a generator


def drive(steps: Steps) -> Any:
    """Run ``steps`` to the end, blocking: each call is waited for (``wait()``), each ``None``
    sleeps ``PAUSE_S``. Returns the steps' return value; raises what they raise."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            pending = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        if pending is MORE:
            continue
        if pending is None:
            time.sleep(PAUSE_S)
            continue
        try:
            value = pending.wait()
        except BaseException as failure:  # noqa: BLE001 - thrown into the steps, which may handle it
            error = failure


class Stepper:
    """``steps`` advanced from a timer: :meth:`advance` never waits for a call.

    Attributes:
        done: True once the steps ended. value: their return value. error: the exception that
            ended them, or None.
    """

    def __init__(self, steps: Steps) -> None:
        self._steps = steps
        self._pending: Call | None = None
        self._send: tuple[Any, BaseException | None] = (None, None)
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def advance(self, budget_s: float = 0.01) -> bool:
        """Resume the steps while their calls are ready, for about ``budget_s`` seconds at most
        (a call begun within the budget is not waited for); returns ``done``. Every call's
        ``ready()`` does a few milliseconds of socket work at most, so one ``advance`` stays
        within a GUI's frame budget when the steps themselves do little work between yields."""
        until = time.monotonic() + budget_s
        while not self.done:
            pending = self._pending
            if pending is MORE:
                self._pending = None
            elif pending is not None:
                if not pending.ready():
                    return False
                try:
                    self._send = (pending.result(), None)
                except BaseException as failure:  # noqa: BLE001 - thrown into the steps
                    self._send = (None, failure)
                self._pending = None
            value, error = self._send
            self._send = (None, None)
            try:
                self._pending = self._steps.throw(error) if error is not None else self._steps.send(value)
            except StopIteration as stop:
                self.done, self.value = True, stop.value
                return True
            except BaseException as failure:  # noqa: BLE001 - the result of the steps
                self.done, self.error = True, failure
                return True
            if self._pending is None or time.monotonic() > until:
                return False  # a turn for the caller (None), or the budget is spent
        return True

    def close(self) -> None:
        """Stop the steps where they are (``GeneratorExit`` in the generator: ``finally`` blocks run)."""
        if not self.done:
            self._steps.close()
            self.done = True
