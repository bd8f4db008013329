"""The tracking-session contract shared by every sam2s tracker, without torch (numpy only).

A *session* (``sam2s.VideoTracker``: SAM 2 / 2.1; ``sam2s.flow.FlowTracker``: optical flow and
GrabCut) holds the frames of one video, the objects prompted in it and what it has tracked so
far. Its common contract, stated once here and followed by both:

* Frames: a ``sam2s.FrameSource`` (or what ``sam2s.open_frames`` accepts: a ``(T, H, W, 3)``
  uint8 RGB array, an image folder, a video file), decoded lazily; frame indices are integers
  ``0 <= frame_idx < T``.
* Coordinates: pixels of the original frames, x to the right and y down, origin at the top-left
  corner of the top-left pixel; a point may lie anywhere in ``[0, W] x [0, H]`` (borders
  included). Boxes are ``[x0, y0, x1, y1]`` with ``x0 < x1`` and ``y0 < y1``.
* Object ids: integers ``MIN_OBJECT_ID..MAX_OBJECT_ID`` (1..254). Outputs list objects in the
  order they were first prompted (``obj_ids``).
* Outputs: float32 mask logits at the original resolution, ``(H, W)`` per object, ``> 0``
  inside the object.
* Errors: ``PromptError`` (a ``ValueError``) for an invalid prompt, frame index or object id;
  ``TrackerBusyError`` (a ``RuntimeError``) for a change while a ``propagate()`` generator runs;
  ``KeyError`` for an unknown object id. A refused call changes nothing in the session.

Prompts are stored per object and frame as ``ClickPrompt`` (clicks and an optional box) or
``MaskPrompt`` records.

The one stream: every front end (the Slicer logic's job, the tracking server's job, ``sam2s
track`` and its sinks) tracks through ``Tracker.run(plan)``, which yields one ``TrackedFrame`` per
frame for the passes of a ``TrackingPlan``; ``plan_passes`` decides the passes for all of them.
``Tracker.run`` is the only loop around ``propagate``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .frames import FrameSource

__all__ = [
    "MAX_OBJECT_ID",
    "MIN_OBJECT_ID",
    "ClickPrompt",
    "MaskPrompt",
    "DIRECTIONS",
    "PromptError",
    "TrackedFrame",
    "Tracker",
    "TrackerBusyError",
    "TrackingPlan",
    "plan_passes",
]

MIN_OBJECT_ID, MAX_OBJECT_ID = 1, 254
"""Object ids are integers 1..254 everywhere (engine, prompts files, Slicer segments, label PNGs,
overlays, ``eval``): 0 is the background and 255 the void label of DAVIS label images
(Pont-Tuset et al. 2017, ``davis2017-evaluation``), so every id fits an 8-bit label PNG."""


DIRECTIONS = ("forward", "backward", "both")
"""Directions of ``plan_passes``: from the start frame to the range's end, to its start, or both
(forward first, then backward from the frame before the start)."""


class PromptError(ValueError):
    """A prompt (points, labels, box, mask, frame index or object id) is invalid."""


class TrackerBusyError(RuntimeError):
    """A session was asked to change (prompt, remove, reset) or to start a second propagation while
    one of its ``propagate()`` generators is running (started, and neither exhausted nor closed).

    Meta's ``SAM2VideoPredictor`` refuses the same (prompts added during tracking would be ignored
    for the frames of the running pass, and an object added mid-pass would be tracked without
    memory). Finish the ``for`` loop, or stop it (``break`` out of it, or call ``.close()`` on
    the generator), then make the change.
    """


def _frozen_array(value: Any, dtype: type, shape: tuple[int | None, ...], what: str) -> np.ndarray:
    """A read-only copy of ``value`` as ``dtype``; raises ``PromptError`` unless its shape matches
    ``shape`` (None: any length)."""
    a = np.array(value, dtype=dtype)
    if a.size == 0 and len(shape) == 2 and shape[1] is not None:
        a = a.reshape(0, shape[1])  # e.g. no clicks given as []
    if a.ndim != len(shape) or any(n is not None and n != m for n, m in zip(shape, a.shape)):
        want = "(" + ", ".join("N" if n is None else str(n) for n in shape) + ")"
        raise PromptError(f"{what} must have shape {want}; got {a.shape}.")
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class ClickPrompt:
    """Clicks, and optionally a box, given for one object on one frame.

    Attributes:
        points: ``(N, 2)`` float64 click positions ``(x, y)`` in pixels of the original frame
            (x right, y down), in the order given (earlier clicks first); N may be 0 with a box.
        labels: ``(N,)`` int64, 1 = positive (inside the object), 0 = negative.
        box: ``(4,)`` float64 ``[x0, y0, x1, y1]`` pixels, or None.

    The arrays are read-only copies. Records compare equal when their arrays are equal.
    SAM 2 receives the box first, as its two corners with labels 2 (top left) and 3 (bottom
    right), then the clicks (Meta's ``add_new_points_or_box``).

    Raises:
        PromptError: wrong shapes, or neither a click nor a box. Values (ranges, labels) are
            checked by the session before it builds a record.
    """

    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None = None

    def __post_init__(self) -> None:
        points = _frozen_array(self.points, np.float64, (None, 2), "points")
        labels = _frozen_array(self.labels, np.int64, (len(points),), "labels")
        box = None if self.box is None else _frozen_array(self.box, np.float64, (4,), "box")
        if len(points) == 0 and box is None:
            raise PromptError("A click prompt needs at least one point (x, y) with a label 1 or 0, or a box.")
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "box", box)

    def extended(self, points: np.ndarray, labels: np.ndarray) -> ClickPrompt:
        """This prompt with more clicks appended (after the existing ones); the box is kept.

        Args:
            points: ``(M, 2)`` float pixels (x right, y down). labels: ``(M,)`` ints 1 / 0.

        Returns:
            A new ``ClickPrompt`` with ``N + M`` clicks (this record is unchanged).

        Raises:
            PromptError: ``labels`` does not have one entry per point.
        """
        return ClickPrompt(
            np.concatenate([self.points, np.asarray(points, np.float64).reshape(-1, 2)]),
            np.concatenate([self.labels, np.asarray(labels, np.int64).reshape(-1)]),
            self.box,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClickPrompt):
            return NotImplemented
        if (self.box is None) != (other.box is None):
            return False
        same_box = self.box is None or np.array_equal(self.box, other.box)
        return same_box and np.array_equal(self.points, other.points) and np.array_equal(self.labels, other.labels)

    __hash__ = None  # type: ignore[assignment]  (array fields: equal records need not hash alike)


@dataclass(frozen=True, eq=False)
class MaskPrompt:
    """A binary mask given for one object on one frame.

    Attributes:
        mask: ``(H, W)`` bool, True inside the object, at the original frame size (row y, column
            x). A read-only copy. Records compare equal when their masks are equal.

    Raises:
        PromptError: not two-dimensional.
    """

    mask: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", _frozen_array(self.mask, bool, (None, None), "mask"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MaskPrompt):
            return NotImplemented
        return np.array_equal(self.mask, other.mask)

    __hash__ = None  # type: ignore[assignment]


Pass = tuple[int, int, bool]
"""One ``propagate`` call: ``(start, end, reverse)``, frame indices, both included."""


def plan_passes(
    prompted_frames: Iterable[int], first: int, last: int, direction: str = "both", start: int | None = None
) -> list[Pass]:
    """The passes that track frames ``first .. last`` (inclusive frame indices) in ``direction``.

    ``start`` (default: the earliest prompted frame in the range, or the latest one for
    ``backward``; the range's end when none lies in it) is where tracking starts:
    ``forward`` is ``[(start, last, False)]``, ``backward`` ``[(start, first, True)]`` and
    ``both`` ``[(start, last, False), (start - 1, first, True)]`` (the second only when
    ``start > first``), as Meta's ``SAM2VideoPredictor.propagate_in_video`` is run forward then
    in reverse from the first conditioning frame.

    Args:
        prompted_frames: frame indices with a prompt of a tracked object (any order; frames
            outside the range are ignored).

    Raises:
        ValueError: ``direction`` not in ``DIRECTIONS``; ``first > last``; ``start`` outside the range.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}.")
    if first > last:
        raise ValueError(f"The frame range {first}..{last} is empty: the first frame lies after the last.")
    inside = sorted({int(t) for t in prompted_frames if first <= t <= last})
    if start is None:
        start = (inside[-1] if inside else last) if direction == "backward" else (inside[0] if inside else first)
    if not first <= start <= last:
        raise ValueError(f"Start frame {start} is outside the frame range {first}..{last}.")
    if direction == "forward":
        return [(start, last, False)]
    if direction == "backward":
        return [(start, first, True)]
    return [(start, last, False)] + ([(start - 1, first, True)] if start > first else [])


@dataclass(frozen=True)
class TrackingPlan:
    """What ``Tracker.run`` tracks.

    Attributes:
        passes: ``(start, end, reverse)`` propagations in order (``plan_passes``), inclusive frame
            indices; ``None`` as start or end takes ``propagate``'s default.
        obj_ids: the objects to track (None: all); the others keep their state.
        keep_tracked: False lets a tracker drop results it no longer needs as it goes (the flow
            engine's tracked masks: bounded memory while streaming a long video); later
            propagations that start from a dropped frame then have nothing to start from.
    """

    passes: tuple[Pass, ...]
    obj_ids: tuple[int, ...] | None = None
    keep_tracked: bool = True

    def __post_init__(self) -> None:
        passes = tuple((s if s is None else int(s), e if e is None else int(e), bool(r)) for s, e, r in self.passes)
        object.__setattr__(self, "passes", passes)
        if self.obj_ids is not None:
            object.__setattr__(self, "obj_ids", tuple(int(k) for k in self.obj_ids))

    @property
    def total(self) -> int:
        """Frames the passes yield when every start and end is given (else 0 is not knowable: -1)."""
        if any(s is None or e is None for s, e, _ in self.passes):
            return -1
        return sum(abs(e - s) + 1 for s, e, _ in self.passes)


@dataclass(frozen=True)
class TrackedFrame:
    """One frame of ``Tracker.run``'s stream.

    Attributes:
        frame_idx: the frame index. obj_ids: the tracked object ids, in session order.
        logits: ``(len(obj_ids), H, W)`` float32 mask logits (> 0 inside the object), or bool
            masks from a tracker that sends only masks (a tracking server's session); ``> 0``
            works on both.
        confidences: per object, ``(predicted_iou, object_score)`` (``Tracker.confidence``) or None.
        done, total: frames yielded so far (this one included) and in all (-1: unknown).
    """

    frame_idx: int
    obj_ids: list[int]
    logits: np.ndarray
    confidences: list[tuple[float, float] | None]
    done: int
    total: int

    def masks(self) -> dict[int, np.ndarray]:
        """``{obj_id: (H, W) bool mask}`` of this frame."""
        return {k: self.logits[i] > 0 for i, k in enumerate(self.obj_ids)}


class Tracker(ABC):
    """Base class of tracking sessions (see the module docstring for the common contract).

    It opens the frames and holds what every session shares: ``frames``, ``num_frames`` (T),
    ``height`` (H) and ``width`` (W) in pixels, ``objects`` (object id -> the subclass's
    per-object state, in the order objects were first prompted; each state has ``prompts``,
    frame -> ``ClickPrompt`` / ``MaskPrompt``, and ``cond``, frame -> the conditioning result of
    a prompted frame), the validation of prompts, frame ranges and object ids, the busy flag of
    running ``propagate()`` generators, ``remove_object`` and ``reset``.

    Subclasses implement ``add_points``, ``add_box``, ``add_mask`` and ``propagate``.

    Args:
        frames: a ``FrameSource``, a ``(T, H, W, 3)`` uint8 RGB array (used without copying), an
            image folder or a video file (``sam2s.open_frames``).

    Raises:
        FrameSourceError / FileNotFoundError / TypeError / ValueError: unreadable or invalid
            frames (see ``sam2s.open_frames``).
    """

    def __init__(self, frames: FrameSource | np.ndarray | str) -> None:
        from .frames import open_frames  # lazily: importing this module must not import torch / av

        self.frames = open_frames(frames)
        self.num_frames = len(self.frames)
        self.height, self.width = self.frames.height, self.frames.width
        self.objects: dict[int, Any] = {}
        self._propagating = False  # a propagate() generator is running (see TrackerBusyError)

    # ------------------------------------------------------------------ public API
    @property
    def obj_ids(self) -> list[int]:
        """Object ids in the order they were first prompted (the order of output rows)."""
        return list(self.objects)

    @abstractmethod
    def add_points(
        self,
        frame_idx: int,
        obj_id: int,
        points: Sequence | np.ndarray,
        labels: Sequence | np.ndarray,
        clear_old_points: bool = True,
    ) -> np.ndarray:
        """Prompt ``obj_id`` on ``frame_idx`` with clicks and return its mask logits there.

        Args:
            frame_idx: frame index, ``0 <= frame_idx < T``.
            obj_id: object id, an integer in ``MIN_OBJECT_ID..MAX_OBJECT_ID`` (1..254).
            points: ``(N, 2)`` float pixel coordinates (x right, y down), ``N >= 1``.
            labels: ``(N,)`` ints, 1 = positive (inside the object), 0 = negative.
            clear_old_points: replace this frame's earlier clicks; False appends to them (an
                earlier box on the frame is kept).

        Returns:
            ``(H, W)`` float32 logits of ``obj_id`` on ``frame_idx`` (> 0 inside).

        Raises:
            PromptError: bad frame index, object id, shapes, labels, or points outside the frame.
            TrackerBusyError: a ``propagate()`` generator is running. Nothing changes then.
        """

    @abstractmethod
    def add_box(
        self,
        frame_idx: int,
        obj_id: int,
        box: Sequence | np.ndarray,
        points: Sequence | np.ndarray | None = None,
        labels: Sequence | np.ndarray | None = None,
    ) -> np.ndarray:
        """Prompt ``obj_id`` on ``frame_idx`` with a box ``[x0, y0, x1, y1]`` (pixels, x0 < x1,
        y0 < y1, inside the frame) and optional extra clicks; replaces this frame's earlier clicks.
        Returns and raises as ``add_points``."""

    @abstractmethod
    def add_mask(self, frame_idx: int, obj_id: int, mask: np.ndarray) -> np.ndarray:
        """Prompt ``obj_id`` on ``frame_idx`` with a binary ``(H, W)`` mask (bool or 0/1) of the
        frame's size; it replaces this frame's clicks. Returns the ``(H, W)`` float32 logits.

        Raises:
            PromptError: wrong shape or non-binary values; bad frame index or object id.
            TrackerBusyError: a ``propagate()`` generator is running. Nothing changes then.
        """

    @abstractmethod
    def propagate(
        self,
        start: int | None = None,
        end: int | None = None,
        reverse: bool = False,
        obj_ids: Iterable[int] | None = None,
    ) -> Iterator[tuple[int, list[int], np.ndarray]]:
        """Track objects from ``start`` to ``end`` (both included), yielding per frame.

        Args:
            start: first frame (default: the earliest prompted frame of the tracked objects).
            end: last frame (default: the last frame, or frame 0 when ``reverse``).
            reverse: track backward in time.
            obj_ids: the objects to track (default: all); the others are neither tracked nor
                yielded, and their state is untouched.

        Yields:
            ``(frame_idx, ids, logits)``: ``ids`` the tracked object ids in session order
            (``obj_ids`` order), ``logits`` ``(len(ids), H, W)`` float32 in that order.

        While the generator runs (from its first ``next`` until it is exhausted, raises or is
        closed), changes and a second ``propagate()`` raise ``TrackerBusyError``.

        Raises:
            RuntimeError: no object was prompted. PromptError: bad ``start`` / ``end``, or an
            empty ``obj_ids``. KeyError: an unknown id in ``obj_ids`` (the message lists the known
            ids). TrackerBusyError: another ``propagate()`` generator of this session is running.
            As ``propagate`` is a generator, these are raised by its first ``next()``.
        """

    def remove_object(self, obj_id: int) -> None:
        """Forget ``obj_id`` and everything about it.

        Raises:
            KeyError: unknown id (the message lists the known ids).
            TrackerBusyError: a ``propagate()`` generator is running.
        """
        self._check_idle("remove_object")
        if obj_id not in self.objects:
            raise KeyError(f"No object with id {obj_id!r}; known ids: {self.obj_ids}.")
        del self.objects[obj_id]

    def reset(self) -> None:
        """Forget all objects, prompts and results (decoded or encoded frames stay cached).

        Raises:
            TrackerBusyError: a ``propagate()`` generator is running.
        """
        self._check_idle("reset")
        self.objects.clear()

    def confidence(self, obj_id: int, frame_idx: int) -> tuple[float, float] | None:
        """The model's ``(predicted_iou, object_score)`` for ``obj_id`` on ``frame_idx``, or None
        (this base: always None; ``VideoTracker.confidence`` gives them)."""
        return None

    def forget_tracked(self, frames: Iterable[int]) -> None:
        """Drop kept results of ``frames`` that ``run`` no longer needs (``TrackingPlan.keep_tracked``
        False); this base keeps nothing per frame, so it does nothing (``FlowTracker`` drops masks)."""
        return None

    def close(self) -> None:
        """Release what the session holds outside this process (a server's session); this base
        holds nothing there. Safe to call twice."""
        return None

    def steps(self, method: str, *args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        """``getattr(self, method)(*args, **kwargs)`` in the form of ``sam2s.serving.steps``, for a
        caller that must never wait (a GUI timer): a tracker in a server yields each request it
        waits for (``sam2s.serving.remote.RemoteSession.steps``); in this process the call runs at
        once and nothing is yielded. ``method``: ``"add_points"``, ``"add_box"``, ``"add_mask"``,
        ``"remove_object"`` or ``"run"``; raises what that method raises."""
        return getattr(self, method)(*args, **kwargs)
        yield  # pragma: no cover - makes this a generator

    def run(self, plan: TrackingPlan, cancel: threading.Event | None = None) -> Iterator[TrackedFrame]:
        """Track ``plan``'s passes in order and yield one ``TrackedFrame`` per frame: the one stream
        every front end consumes (the only loop around ``propagate``).

        Each pass is one ``propagate(start, end, reverse, plan.obj_ids)``, closed when the pass
        ends, when ``cancel`` is set (checked after each frame: the frame computed is still
        yielded) and on errors, so the session accepts changes again at once. With
        ``plan.keep_tracked`` False, results of frames no later pass starts from are dropped as
        the stream goes (``forget_tracked``).

        Raises:
            What ``propagate`` raises (by the first ``next()``), e.g. ``PromptError`` for a pass
            with nothing to start from, ``TrackerBusyError`` while another loop runs.
        """
        total, done = plan.total, 0
        starts = {s for s, _, _ in plan.passes} | {s + (1 if r else -1) for s, _, r in plan.passes if s is not None}
        for start, end, reverse in plan.passes:
            if cancel is not None and cancel.is_set():
                return
            previous = None
            with closing(self.propagate(start, end, reverse, obj_ids=plan.obj_ids)) as frames:
                for frame_idx, ids, logits in frames:
                    done += 1
                    scores = [self.confidence(k, frame_idx) for k in ids]
                    yield TrackedFrame(int(frame_idx), list(ids), logits, scores, done, total)
                    if not plan.keep_tracked and previous is not None and previous not in starts:
                        self.forget_tracked([previous])
                    previous = frame_idx
                    if cancel is not None and cancel.is_set():
                        return

    # ------------------------------------------------------------------ busy flag
    def _check_idle(self, action: str) -> None:
        """Raise ``TrackerBusyError`` while a ``propagate()`` generator of this session runs."""
        if getattr(self, "_propagating", False):
            raise TrackerBusyError(
                f"Cannot {action}() while a propagate() loop of this tracker is running: the change would be "
                "ignored by the frames of the running pass (Meta's predictor refuses it too). Finish the loop, "
                "or stop it first (break out of the for loop, or call .close() on the propagate() generator), "
                f"then call {action}() again."
            )

    @contextmanager
    def _propagation(self) -> Iterator[None]:
        """Mark the session busy for the body of a ``propagate()`` generator: set on entry, cleared
        when the generator is exhausted, raises or is closed (``GeneratorExit`` at its ``yield``)."""
        self._propagating = True
        try:
            yield
        finally:
            self._propagating = False

    # ------------------------------------------------------------------ validation
    def _check_frame(self, frame_idx: Any, what: str = "frame_idx") -> None:
        """Raise ``PromptError`` unless ``frame_idx`` is an integer in ``0..T-1``."""
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
            raise PromptError(f"{what} must be an integer frame index, got {frame_idx!r}.")
        if not 0 <= frame_idx < self.num_frames:
            raise PromptError(
                f"{what}={frame_idx} is out of range: this video has {self.num_frames} frames (0..{self.num_frames - 1})."
            )

    @staticmethod
    def _check_obj_id(obj_id: Any) -> None:
        """Raise ``PromptError`` unless ``obj_id`` is an integer in ``MIN_OBJECT_ID..MAX_OBJECT_ID``."""
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)):
            raise PromptError(
                f"obj_id must be an integer in {MIN_OBJECT_ID}..{MAX_OBJECT_ID}, got {obj_id!r}; pass an integer id."
            )
        if not MIN_OBJECT_ID <= obj_id <= MAX_OBJECT_ID:
            raise PromptError(
                f"obj_id={obj_id} is out of range: object ids must be integers in {MIN_OBJECT_ID}..{MAX_OBJECT_ID} "
                "(MIN_OBJECT_ID..MAX_OBJECT_ID), because they are the label values of 8-bit label images, where 0 "
                "is the background and 255 marks void pixels; choose an id in that range."
            )

    def _check_inside(self, coords: np.ndarray, what: str) -> None:
        """Raise ``PromptError`` when a row ``(x, y)`` of ``coords (N, 2)`` lies outside
        ``[0, W] x [0, H]`` pixels."""
        bad = (coords[:, 0] < 0) | (coords[:, 0] > self.width) | (coords[:, 1] < 0) | (coords[:, 1] > self.height)
        if bad.any():
            raise PromptError(
                f"{what} {coords[bad][0].tolist()} lies outside the frame (x in 0..{self.width}, "
                f"y in 0..{self.height} pixels, x right, y down)."
            )

    def _check_points(self, points: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
        """Clicks as ``(N, 2)`` float64 pixels and ``(N,)`` int64 labels (N may be 0); raises
        ``PromptError`` for wrong shapes, non-finite points, labels other than 0 / 1, or points
        outside the frame."""
        raw = np.asarray(points, dtype=np.float64)
        if raw.size and (raw.ndim != 2 or raw.shape[1] != 2):
            raise PromptError(f"points must have shape (N, 2) as (x, y) pixels; got {raw.shape}.")
        p = raw.reshape(-1, 2)
        lab = np.asarray(labels).reshape(-1) if np.size(labels) else np.zeros(0, dtype=int)
        if len(p) != len(lab):
            raise PromptError(f"{len(p)} points but {len(lab)} labels: give one label (1 or 0) per point.")
        if not np.all(np.isfinite(p)):
            raise PromptError("points contain NaN or infinite coordinates.")
        if not np.isin(lab, (0, 1)).all():
            raise PromptError(f"labels must be 1 (positive) or 0 (negative); got {sorted(set(lab.tolist()))}.")
        self._check_inside(p, "Point")
        return p, lab.astype(np.int64)

    def _check_box(self, box: Any) -> np.ndarray:
        """A box ``[x0, y0, x1, y1]`` as ``(4,)`` float64 pixels; raises ``PromptError`` unless it
        is 4 finite numbers with ``x0 < x1``, ``y0 < y1`` and both corners inside the frame."""
        b = np.asarray(box, dtype=np.float64)
        if b.shape != (4,) or not np.all(np.isfinite(b)):
            raise PromptError(f"A box must be 4 finite numbers [x0, y0, x1, y1] in pixels; got {box!r}.")
        if not (b[0] < b[2] and b[1] < b[3]):
            raise PromptError(f"Box {b.tolist()} is empty or reversed: it needs x0 < x1 and y0 < y1.")
        self._check_inside(b.reshape(2, 2), "box corner")
        return b

    def _check_mask(self, frame_idx: Any, obj_id: Any, mask: Any) -> np.ndarray:
        """A mask prompt as an ``(H, W)`` bool array, after checking the frame index and object id."""
        self._check_frame(frame_idx)
        self._check_obj_id(obj_id)
        m = np.asarray(mask)
        if m.shape != (self.height, self.width):
            raise PromptError(
                f"Mask shape {m.shape} does not match the frame size (H, W) = {(self.height, self.width)}."
            )
        if m.dtype != bool:
            if not np.isin(m, (0, 1)).all():
                raise PromptError("Mask values must be 0/1 or bool; threshold a probability map first.")
            m = m.astype(bool)
        return np.ascontiguousarray(m)  # views such as np.fliplr(mask) have negative strides torch refuses

    def _click_prompt(
        self, frame_idx: int, obj_id: int, points: np.ndarray, labels: np.ndarray, clear_old_points: bool
    ) -> ClickPrompt:
        """The ``ClickPrompt`` of checked clicks on ``frame_idx``: the clicks alone, or, with
        ``clear_old_points=False``, appended to the object's click prompt on that frame (keeping
        its box), as Meta's ``add_new_points_or_box``."""
        obj = self.objects.get(obj_id)
        old = None if obj is None or clear_old_points else obj.prompts.get(frame_idx)
        if isinstance(old, ClickPrompt):
            return old.extended(points, labels)
        return ClickPrompt(points, labels)

    def tracked_ids(self, obj_ids: Iterable[int] | None) -> list[int]:
        """The ids ``propagate(obj_ids=...)`` tracks, in session order (all when None); public so
        that a server can check a job before it starts.

        Raises:
            TypeError: ``obj_ids`` is not an iterable of ids (e.g. a bare integer).
            PromptError: ``obj_ids`` is empty. KeyError: an id is not in the session (the
            message lists the known ids).
        """
        if obj_ids is None:
            return self.obj_ids
        if isinstance(obj_ids, (int, np.integer, str, bytes)):
            raise TypeError(f"obj_ids must be a list of object ids, got {obj_ids!r}; e.g. obj_ids=[{obj_ids!r}].")
        wanted = list(obj_ids)
        if not wanted:
            raise PromptError("obj_ids is empty: pass the ids of the objects to track, or None to track all.")
        unknown = [k for k in wanted if k not in self.objects]
        if unknown:
            raise KeyError(f"No object with id {unknown[0]!r} in obj_ids; known ids: {self.obj_ids}.")
        chosen = set(wanted)
        return [k for k in self.objects if k in chosen]

    def frame_order(self, start: int | None, end: int | None, reverse: bool, obj_ids: list[int] | None = None) -> range:
        """Frames ``propagate(start, end, reverse, obj_ids)`` tracks, in order: ``start`` (default:
        the earliest conditioning frame of the objects ``obj_ids``, all by default) to ``end``
        (default: the last frame, or 0 when ``reverse``), both included (frame indices).

        Raises:
            PromptError: ``start`` / ``end`` outside the video, or in the wrong order for the direction.
        """
        if start is None:
            ids = self.obj_ids if obj_ids is None else obj_ids
            start = min(t for k in ids for t in self.objects[k].cond)
        if end is None:
            end = 0 if reverse else self.num_frames - 1
        self._check_frame(start, "start")
        self._check_frame(end, "end")
        if (end > start) if reverse else (end < start):
            raise PromptError(
                f"end={end} lies {'after' if reverse else 'before'} start={start} for "
                f"{'backward' if reverse else 'forward'} tracking; swap them or change `reverse`."
            )
        step = -1 if reverse else 1
        return range(start, end + step, step)
