"""The ``flow`` engine: a weight-free tracker (dense optical flow + GrabCut) with the session API
of ``sam2s.tracker.VideoTracker`` (both are ``sam2s.session.Tracker`` subclasses).

It needs no checkpoint and no GPU, so the command line, the demo and the tests can track without
downloading SAM 2 weights. It is a baseline for videos at normal frame rates (motion of a few
pixels per frame); it cannot re-find an object that left the view.

- Initial masks: a mask prompt is used as given; a box or clicks become a mask with GrabCut
  (Rother, Kolmogorov and Blake, "GrabCut: interactive foreground extraction using iterated
  graph cuts", SIGGRAPH 2004; ``cv2.grabCut``): a box initialises the rectangle
  (``GC_INIT_WITH_RECT``); clicks give a rectangle around the positive clicks plus sure
  foreground / background marks (``GC_INIT_WITH_MASK``), and only the connected parts holding a
  positive click are kept. Clicks or a box on a frame where the object already has a mask (a
  mask prompt, an earlier prompt, or a tracked mask) correct that mask, as in SAM 2: GrabCut
  starts from it (its part inside the box as probable foreground, the rest of the box as
  probable background, outside the box sure background; clicks as sure marks).
- Propagation: dense optical flow between consecutive frames with DIS (Kroeger, Timofte, Dai and
  Van Gool, "Fast optical flow using dense inverse search", ECCV 2016; ``cv2.DISOpticalFlow``),
  computed backward (from the new frame to the previous one) on grey frames resized to the flow
  size (downscaled to ``flow_size``; frames with a side under ``MIN_FLOW_SIDE`` pixels are
  upscaled, since DIS needs images of at least 12 x 12 pixels, and the flow is scaled back); the
  previous mask is warped with ``cv2.remap``, thresholded at 0.5 and cleaned with a small
  morphological opening / closing. Then (every ``refine_every`` frames) GrabCut re-fits the
  boundary inside a thin band around the warped mask (its core is sure foreground, beyond the
  band sure background), with the object's colour model (GMM) from its prompt frame kept fixed
  (``GC_EVAL_FREEZE_MODEL``) and the background model learnt locally, so that background leaking
  into the mask does not contaminate the object's model; a re-fit that moves the mask too much
  (IoU with the warped mask < ``min_agreement``) is rejected. The refinement is used only for
  objects that colour separates from their surroundings: on the prompt frame, GrabCut re-fitting
  the prompt mask must reproduce it (IoU >= ``colour_check``); otherwise (thin structures, tissue
  next to similar tissue) the object is tracked by the flow alone, which is the better choice
  there (measured on real endoscopic texture).
- Logits: ``+-(0.5 .. 10)``, > 0 exactly on the tracked mask, growing with the warped mask's
  certainty; prompted frames give +-10.

A prompt on a frame makes it a conditioning frame: propagating again over it restarts from its
mask (a correction replaces the tracked mask; earlier frames are unchanged). As ``VideoTracker``,
a session refuses changes while one of its ``propagate()`` generators runs (``TrackerBusyError``)
and object ids must lie in ``MIN_OBJECT_ID..MAX_OBJECT_ID`` (1..254). This module does not import
torch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from .frames import FrameSource
from .session import ClickPrompt, MaskPrompt, PromptError, Tracker, TrackerBusyError

__all__ = ["MIN_FLOW_SIDE", "FlowObjectState", "FlowTracker", "PromptError", "TrackerBusyError"]

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
MAX_LOGIT = 10.0
PROMPT_ITERS = 5  # GrabCut iterations for box / click prompts
MIN_FLOW_SIDE = 32
"""Smallest side in pixels of the grey frames the flow is computed on: smaller frames are upscaled
(per axis), since ``cv2.DISOpticalFlow`` rejects images under 12 x 12 pixels (measured with OpenCV
4: every size with both sides >= 12 works, for all three presets); 32 leaves its coarsest pyramid
level a few patches wide."""


@dataclass
class FlowObjectState:
    """One object of a ``FlowTracker`` session.

    prompts: frame -> the ``ClickPrompt`` / ``MaskPrompt`` given there (pixels of the original
    frame). cond: prompted frame -> its mask; tracked: frame -> the mask of the last propagation
    over it (both packed with ``np.packbits`` over the ``(H, W)`` bool mask, row-major: H * W / 8
    bytes a frame). colour: conditioning frame -> its colour model for refinements (a ``(1, 65)``
    float64 foreground GMM of ``cv2.grabCut``, None to re-learn it, False for no refinement).
    """

    prompts: dict[int, ClickPrompt | MaskPrompt] = field(default_factory=dict)
    cond: dict[int, np.ndarray] = field(default_factory=dict)
    tracked: dict[int, np.ndarray] = field(default_factory=dict)
    colour: dict[int, np.ndarray | None | bool] = field(default_factory=dict)


class FlowTracker(Tracker):
    """Track objects with dense optical flow (DIS) and GrabCut; a ``sam2s.session.Tracker`` with the
    session API of ``VideoTracker``.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB array, a folder of images, a video file or a
            ``FrameSource`` (decoded one frame at a time).
        flow_size: longer side in pixels of the grey frames the optical flow is computed on
            (larger frames are downscaled; a side under ``MIN_FLOW_SIDE`` pixels is upscaled, so
            frames down to 1 x 1 pixel work; masks stay at full resolution).
        preset: DIS preset: ``"ultrafast"``, ``"fast"`` or ``"medium"``.
        refine_every: GrabCut refinement every this many propagated frames (0 = never: flow only).
        grabcut_iters: GrabCut iterations of a refinement (prompts use 5).
        grabcut_pixels: GrabCut works on a crop around the object downscaled to at most this many
            pixels (its cost grows with it).
        band: half-width of the uncertain band of a refinement, as a fraction of the square root
            of the object's area (at least 3 pixels of the GrabCut crop).
        min_agreement: a refinement is kept only if its IoU with the warped mask is at least this.
        colour_check: refine an object only if GrabCut re-fitting its prompt mask on the prompt
            frame reproduces it with at least this IoU (1.0 or more: never refine).
        freeze_colour: keep the object's colour model from its prompt frame (True) or re-learn it
            from the warped mask on every refinement (False).
        point_margin: half-size of the first rectangle around clicks, as a fraction of
            ``min(H, W)`` (grown by 1.6 up to 3 times while the object reaches its border).
        clean_radius: radius in pixels (of the flow frames, see ``flow_size``) of the opening /
            closing applied to warped masks (0 = none).

    Coordinates are pixels of the original frames, x right, y down; frame indices start at 0.
    Outputs are ``(H, W)`` float32 logits, > 0 inside the object. Results are deterministic
    (GrabCut's random initialisation is seeded with ``cv2.setRNGSeed(0)`` before each call).
    ``objects`` maps object ids to their ``FlowObjectState``.

    Raises:
        FrameSourceError / FileNotFoundError / ValueError: unreadable frames or bad parameters
            (outside the bounds the message lists). TypeError: a parameter that is not a number.
    """

    def __init__(
        self,
        frames: FrameSource | np.ndarray | str,
        flow_size: int = 640,
        preset: str = "medium",
        refine_every: int = 1,
        grabcut_iters: int = 1,
        grabcut_pixels: int = 60_000,
        band: float = 0.02,
        min_agreement: float = 0.7,
        colour_check: float = 0.99,
        freeze_colour: bool = True,
        point_margin: float = 0.15,
        clean_radius: int = 1,
    ) -> None:
        if preset not in PRESETS:
            raise ValueError(f"Unknown DIS preset {preset!r}; use one of {sorted(PRESETS)}.")
        ok = 16 <= flow_size <= 8192 and refine_every >= 0 and 1 <= grabcut_iters <= 20
        ok = ok and 1024 <= grabcut_pixels <= 16_000_000 and 0 < band <= 1 and 0 <= min_agreement <= 1
        if not (ok and colour_check >= 0 and 0 < point_margin <= 1 and 0 <= clean_radius <= 64):
            raise ValueError(
                "FlowTracker needs 16 <= flow_size <= 8192, refine_every >= 0, 1 <= grabcut_iters <= 20, "
                "1024 <= grabcut_pixels <= 16,000,000, 0 < band <= 1, 0 <= min_agreement <= 1, colour_check >= 0, "
                "0 < point_margin <= 1 and 0 <= clean_radius <= 64 (the upper bounds keep a parameter from "
                "costing unbounded memory or time)."
            )
        super().__init__(frames)
        self.preset = preset
        self.refine_every = int(refine_every)
        self.grabcut_iters = int(grabcut_iters)
        self.grabcut_pixels = int(grabcut_pixels)
        self.band = float(band)
        self.min_agreement = float(min_agreement)
        self.colour_check = float(colour_check)
        self.freeze_colour = bool(freeze_colour)
        self.point_margin = float(point_margin)
        self.clean_radius = int(clean_radius)
        self.flow_scale = min(1.0, flow_size / max(self.height, self.width))
        self.flow_wh = (
            max(MIN_FLOW_SIDE, round(self.width * self.flow_scale)),
            max(MIN_FLOW_SIDE, round(self.height * self.flow_scale)),
        )
        self.objects: dict[int, FlowObjectState] = {}
        self._dis = cv2.DISOpticalFlow_create(PRESETS[preset])
        self._grey: OrderedDict[int, np.ndarray] = OrderedDict()
        self._bgr: OrderedDict[int, np.ndarray] = OrderedDict()
        self._grid: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ public API
    def add_points(
        self,
        frame_idx: int,
        obj_id: int,
        points: Sequence | np.ndarray,
        labels: Sequence | np.ndarray,
        clear_old_points: bool = True,
    ) -> np.ndarray:
        """Prompt ``obj_id`` on ``frame_idx`` with clicks and return its mask logits there.

        Without a mask of the object on that frame, GrabCut segments a rectangle around the
        positive clicks (half-size ``point_margin * min(H, W)``, grown while the object reaches
        its border) with the clicks as sure foreground (1) / background (0) marks, keeping the
        connected parts that hold a positive click; with a mask there already (tracked, or from
        an earlier mask, click or box prompt), GrabCut corrects that mask with the clicks as marks.

        Args:
            frame_idx: frame index, ``0 <= frame_idx < T``.
            obj_id: object id, an integer in ``MIN_OBJECT_ID..MAX_OBJECT_ID`` (1..254).
            points: ``(N, 2)`` float pixel coordinates (x right, y down) in the original frame.
            labels: ``(N,)`` ints, 1 = positive (inside the object), 0 = negative.
            clear_old_points: replace this frame's earlier clicks; False appends to them (and
                keeps an earlier box).

        Returns:
            ``(H, W)`` float32 logits of ``obj_id`` on ``frame_idx`` (+-10, > 0 = object).

        Raises:
            PromptError: bad frame index, object id (outside 1..254), shapes, labels, or points
                outside the frame. TrackerBusyError: a ``propagate()`` generator is running.
                Nothing in the session changes then.
        """
        self._check_idle("add_points")
        coords, labs = self._check_points(points, labels)
        if len(coords) == 0:
            raise PromptError("Empty prompt: give at least one point (x, y) with a label 1 or 0.")
        self._check_frame(frame_idx)
        self._check_obj_id(obj_id)
        prompt = self._click_prompt(frame_idx, obj_id, coords, labs, clear_old_points)
        obj = self.objects.get(obj_id)
        prior = None if obj is None else self._mask_on(obj, frame_idx)
        if prompt.box is not None:
            mask = self._segment_box(frame_idx, prompt.box, prompt.points, prompt.labels, prior)
        else:
            mask = self._segment_points(frame_idx, prompt.points, prompt.labels, prior)
        return self._set_prompt(frame_idx, obj_id, mask, prompt)

    def add_box(
        self,
        frame_idx: int,
        obj_id: int,
        box: Sequence | np.ndarray,
        points: Sequence | np.ndarray | None = None,
        labels: Sequence | np.ndarray | None = None,
    ) -> np.ndarray:
        """Prompt ``obj_id`` on ``frame_idx`` with a box ``[x0, y0, x1, y1]`` (pixels, x0 < x1,
        y0 < y1, inside the frame) and optional extra clicks; GrabCut segments the box
        (``GC_INIT_WITH_RECT``, or ``GC_INIT_WITH_MASK`` with the clicks as marks; an ellipse
        inscribed in the box if GrabCut finds nothing). Replaces this frame's earlier clicks.

        On a frame where the object already has a mask (a mask prompt, an earlier prompt, or a
        tracked mask) the box corrects that mask instead of starting afresh: GrabCut is
        initialised with the mask's part inside the box as probable foreground, the rest of the
        box as probable background and everything outside the box as sure background (clicks
        as sure marks); if GrabCut cannot run, the mask clipped to the box is kept.

        Returns and raises as ``add_points``.
        """
        self._check_idle("add_box")
        b = self._check_box(box)
        coords, labs = self._check_points(points if points is not None else [], labels if labels is not None else [])
        self._check_frame(frame_idx)
        self._check_obj_id(obj_id)
        prompt = ClickPrompt(coords, labs, b)
        obj = self.objects.get(obj_id)
        prior = None if obj is None else self._mask_on(obj, frame_idx)
        mask = self._segment_box(frame_idx, prompt.box, prompt.points, prompt.labels, prior)
        return self._set_prompt(frame_idx, obj_id, mask, prompt)

    def add_mask(self, frame_idx: int, obj_id: int, mask: np.ndarray) -> np.ndarray:
        """Prompt ``obj_id`` on ``frame_idx`` with a binary mask ``(H, W)`` (bool or 0/1) of the
        frame's size, used as given; it replaces this frame's clicks. Returns the ``(H, W)``
        float32 logits (+-10).

        Raises:
            PromptError: wrong shape or non-binary values; bad frame index or object id (outside
                1..254). TrackerBusyError: a ``propagate()`` generator is running. Nothing in the
                session changes then.
        """
        self._check_idle("add_mask")
        m = self._check_mask(frame_idx, obj_id, mask)
        return self._set_prompt(frame_idx, obj_id, m, MaskPrompt(m))

    def propagate(
        self,
        start: int | None = None,
        end: int | None = None,
        reverse: bool = False,
        obj_ids: Iterable[int] | None = None,
    ) -> Iterator[tuple[int, list[int], np.ndarray]]:
        """Track objects from ``start`` to ``end`` (inclusive), yielding per frame.

        An object's mask on frame ``t`` is its prompt mask if ``t`` was prompted, else its mask
        on the previous frame (``t - 1``, or ``t + 1`` when ``reverse``; from this run or an
        earlier one) warped by the optical flow and refined; an object without a mask there
        (prompted later, or lost) is empty.

        Args:
            start: first frame (default: the earliest prompted frame of the tracked objects).
            end: last frame (default: the last frame, or frame 0 when ``reverse``).
            reverse: track backward in time.
            obj_ids: the objects to track (default: all); the others are not tracked nor
                yielded, and nothing of theirs changes. Each object is tracked on its own, so its
                results do not depend on which others are tracked with it.

        Tracking needs somewhere to start: at least one tracked object must have a prompt on ``start`` or
        a tracked mask on the frame before ``start`` in the tracking direction (``start - 1``, or
        ``start + 1`` when ``reverse``, from an earlier run). Objects prompted later than
        ``start`` (in the tracking direction) stay empty until their prompted frame.

        While the generator runs, changes and a second propagation raise ``TrackerBusyError``
        (see ``VideoTracker.propagate``); ``break`` out of the loop or call ``.close()`` on the
        generator to stop early.

        Yields:
            ``(frame_idx, ids, logits)`` with ``ids`` the tracked object ids in session order and
            ``logits`` ``(len(ids), H, W)`` float32 in that order (> 0 = object).

        Raises:
            RuntimeError: no object was prompted. PromptError: bad ``start``/``end``, an empty
            ``obj_ids``, or no tracked object has a prompt on ``start`` nor a tracked mask on the
            frame before it (the message names the prompted frames). KeyError: an unknown id in
            ``obj_ids`` (the message lists the known ids). TrackerBusyError: another
            ``propagate()`` generator of this session is running.
        """
        self._check_idle("propagate")
        if not self.objects:
            raise RuntimeError("No object has a prompt yet: call add_points, add_box or add_mask first.")
        ids = self.tracked_ids(obj_ids)
        order = self.frame_order(start, end, reverse, ids)
        self._check_start(order[0], reverse, ids)
        with self._propagation():
            yield from self._propagate(order, reverse, ids)

    def forget_tracked(self, frames: Iterable[int]) -> None:
        """Drop the tracked masks (not the prompts) of every object on ``frames``, to bound memory
        while streaming a long video (each kept mask costs ``H * W / 8`` bytes a frame).

        A later propagation that starts right after a forgotten frame has nothing to start from
        there (``PromptError``), and one that passes over it recomputes it. Prompted frames keep
        their prompt masks. Allowed while a ``propagate()`` generator runs: the masks of frames it
        already yielded (other than the last one, which the next frame starts from) may be dropped.
        """
        drop = [int(t) for t in frames]
        for obj in self.objects.values():
            for t in drop:
                if t not in obj.cond:
                    obj.tracked.pop(t, None)

    def _check_start(self, start: int, reverse: bool, ids: list[int]) -> None:
        """Raise ``PromptError`` when none of the objects ``ids`` has a prompt on ``start`` or a
        tracked mask on the frame before it (in the tracking direction): nothing to track."""
        prev = start + (1 if reverse else -1)
        objs = [self.objects[k] for k in ids]
        for obj in objs:
            if start in obj.cond or prev in obj.tracked:
                return
        prompted = sorted({t for obj in objs for t in obj.cond})
        direction, side = ("backward", "after") if reverse else ("forward", "before")
        usable = [t for t in prompted if (t >= start if reverse else t <= start)]
        if usable:
            hint = f"Start at a prompted frame {side} frame {start} (e.g. start={usable[0] if reverse else usable[-1]})"
        else:
            hint = f"Start at a prompted frame (e.g. start={prompted[-1] if reverse else prompted[0]})"
        if 0 <= prev < self.num_frames:
            before, hint = (
                f"or a tracked mask on frame {prev}, the frame before it",
                f"{hint}, or track up to frame {start} first",
            )
        else:
            before = f"(it is the {'last' if reverse else 'first'} frame: no frame comes before it)"
        raise PromptError(
            f"Nothing to track {direction} from start={start}: no object has a prompt on frame {start} {before}; "
            f"the objects are prompted on frames {prompted}. {hint}."
        )

    def _propagate(self, order: range, reverse: bool, ids: list[int]) -> Iterator[tuple[int, list[int], np.ndarray]]:
        """The body of ``propagate`` (after its checks), for the objects ``ids``."""
        step = -1 if reverse else 1
        since_refine: dict[int, int] = {}
        for t in order:
            prev = t - step
            objs = [(k, self.objects[k]) for k in ids]
            out = np.empty((len(objs), self.height, self.width), np.float32)
            maps = None
            for i, (k, obj) in enumerate(objs):
                if t in obj.cond:
                    obj.tracked[t] = obj.cond[t]
                    out[i] = np.where(self._unpack(obj.cond[t]), MAX_LOGIT, -MAX_LOGIT)
                    since_refine[k] = 0
                    continue
                src = obj.tracked.get(prev) if 0 <= prev < self.num_frames else None
                if src is None or not src.any():
                    obj.tracked.pop(t, None)
                    out[i] = -MAX_LOGIT
                    continue
                if maps is None:
                    maps = self._flow_maps(t, prev)
                p = cv2.remap(
                    self._unpack(src).astype(np.float32),
                    maps[0],
                    maps[1],
                    cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT,
                )
                m = self._clean(p > 0.5)
                since_refine[k] = since_refine.get(k, 0) + 1
                if self.refine_every and since_refine[k] >= self.refine_every and m.any():
                    model = self._colour_for(obj, t, reverse)
                    if model is not False:
                        m = self._refine(t, m, model)
                    since_refine[k] = 0
                obj.tracked[t] = self._pack(m)
                out[i] = np.where(m, 1.0, -1.0) * (0.5 + (MAX_LOGIT - 0.5) * np.abs(2.0 * p - 1.0))
            yield t, [k for k, _ in objs], out

    # ------------------------------------------------------------------ masks and frames
    def _pack(self, m: np.ndarray) -> np.ndarray:
        return np.packbits(m, axis=None)

    def _unpack(self, packed: np.ndarray) -> np.ndarray:
        return np.unpackbits(packed, count=self.height * self.width).reshape(self.height, self.width).view(bool)

    def _mask_on(self, obj: FlowObjectState, t: int) -> np.ndarray | None:
        packed = obj.cond.get(t, obj.tracked.get(t))
        return None if packed is None else self._unpack(packed)

    def _set_prompt(self, t: int, obj_id: int, mask: np.ndarray, prompt: ClickPrompt | MaskPrompt) -> np.ndarray:
        obj = self.objects.setdefault(obj_id, FlowObjectState())
        obj.prompts[t] = prompt
        obj.cond[t] = obj.tracked[t] = self._pack(mask)
        obj.colour.pop(t, None)
        return np.where(mask, MAX_LOGIT, -MAX_LOGIT).astype(np.float32)

    @staticmethod
    def _cached(cache: OrderedDict, t: int, make, size: int = 2):
        hit = cache.get(t)
        if hit is None:
            hit = cache[t] = make()
            while len(cache) > size:
                cache.popitem(last=False)
        else:
            cache.move_to_end(t)
        return hit

    def _frame_bgr(self, t: int) -> np.ndarray:
        """Frame ``t``, ``(H, W, 3)`` uint8 BGR (OpenCV's channel order)."""
        return self._cached(self._bgr, t, lambda: cv2.cvtColor(self.frames.get(t), cv2.COLOR_RGB2BGR))

    def _frame_grey(self, t: int) -> np.ndarray:
        """Frame ``t`` as grey uint8 at the flow size."""

        def make():
            grey = cv2.cvtColor(self._frame_bgr(t), cv2.COLOR_BGR2GRAY)
            if self.flow_wh != (self.width, self.height):
                shrink = self.flow_wh[0] <= self.width and self.flow_wh[1] <= self.height
                grey = cv2.resize(grey, self.flow_wh, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            return grey

        return self._cached(self._grey, t, make, 3)

    def _flow_maps(self, t: int, prev: int) -> tuple[np.ndarray, np.ndarray]:
        """``(map_x, map_y)``: ``(H, W)`` float32 full-resolution coordinates in frame ``prev`` of
        each pixel of frame ``t`` (DIS flow from ``t`` to ``prev``), for ``cv2.remap``."""
        flow = self._dis.calc(self._frame_grey(t), self._frame_grey(prev), None)
        if self.flow_wh != (self.width, self.height):
            flow = cv2.resize(flow, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
            flow[..., 0] *= self.width / self.flow_wh[0]
            flow[..., 1] *= self.height / self.flow_wh[1]
        if self._grid is None:
            yy, xx = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
            self._grid = (xx, yy)
        return self._grid[0] + flow[..., 0], self._grid[1] + flow[..., 1]

    def _clean(self, m: np.ndarray) -> np.ndarray:
        """Opening then closing of a warped ``(H, W)`` bool mask with a disk of ``clean_radius``
        flow-frame pixels (at full resolution: divided by the flow scale, the largest per-axis
        scale when tiny frames were upscaled, so a 2-pixel-wide frame is not wiped out)."""
        scale = max(self.flow_scale, self.flow_wh[0] / self.width, self.flow_wh[1] / self.height)
        r = round(self.clean_radius / scale)
        if r <= 0 or not m.any():
            return m
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        u = cv2.morphologyEx(m.view(np.uint8), cv2.MORPH_OPEN, k)
        return cv2.morphologyEx(u, cv2.MORPH_CLOSE, k).view(bool)

    # ------------------------------------------------------------------ GrabCut
    def _crop(self, x0: float, y0: float, x1: float, y1: float, margin: float = 1 / 3) -> tuple[int, int, int, int]:
        """Integer crop (x0, y0, x1, y1) around a box, with ``margin`` of its size (>= 8 px) around."""
        mx, my = max(8.0, (x1 - x0) * margin), max(8.0, (y1 - y0) * margin)
        return (
            int(max(0, np.floor(x0 - mx))),
            int(max(0, np.floor(y0 - my))),
            int(min(self.width, np.ceil(x1 + mx))),
            int(min(self.height, np.ceil(y1 + my))),
        )

    def _grabcut(
        self,
        t: int,
        labels: np.ndarray,
        crop: tuple[int, int, int, int],
        iters: int,
        rect: tuple[int, int, int, int] | None = None,
        fg_model: np.ndarray | None = None,
        learn_only: bool = False,
    ):
        """GrabCut on ``crop`` of frame ``t``, downscaled to at most ``grabcut_pixels``.

        Args:
            labels: ``(H, W)`` uint8 full-resolution ``cv2.GC_*`` labels (ignored with ``rect``).
            crop: (x0, y0, x1, y1) full-resolution pixels.
            rect: a full-resolution box (x0, y0, x1, y1) for ``GC_INIT_WITH_RECT``.
            fg_model: a ``(1, 65)`` foreground GMM to keep fixed (``GC_EVAL_FREEZE_MODEL``).
            learn_only: return the foreground GMM learnt from ``labels`` instead of segmenting.

        Returns:
            ``(H, W)`` bool mask (or the GMM); None when GrabCut cannot run (e.g. one class only).
        """
        cx0, cy0, cx1, cy1 = crop
        cw, ch = cx1 - cx0, cy1 - cy0
        s = min(1.0, float(np.sqrt(self.grabcut_pixels / max(1, cw * ch))))
        sw, sh = max(2, round(cw * s)), max(2, round(ch * s))
        img = self._frame_bgr(t)[cy0:cy1, cx0:cx1]
        if (sw, sh) != (cw, ch):
            img = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
        img = np.ascontiguousarray(img)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)  # GrabCut's k-means initialisation is random: make the results repeatable
        try:
            if rect is not None:
                lab = np.zeros((sh, sw), np.uint8)
                r = [round((rect[0] - cx0) * s), round((rect[1] - cy0) * s)]
                r += [max(1, round((rect[2] - cx0) * s) - r[0]), max(1, round((rect[3] - cy0) * s) - r[1])]
                if r[0] <= 0 and r[1] <= 0 and r[0] + r[2] >= sw and r[1] + r[3] >= sh:
                    return None  # the box covers the whole frame: no background to learn from
                cv2.grabCut(img, lab, tuple(r), bgd, fgd, iters, cv2.GC_INIT_WITH_RECT)
            else:
                lab = labels[cy0:cy1, cx0:cx1]
                if (sw, sh) != (cw, ch):
                    small = cv2.resize(lab, (sw, sh), interpolation=cv2.INTER_NEAREST)
                    for v in (cv2.GC_FGD, cv2.GC_BGD):  # keep thin sure marks that subsampling dropped
                        ys, xs = np.nonzero(lab == v)
                        small[np.minimum((ys * s).astype(int), sh - 1), np.minimum((xs * s).astype(int), sw - 1)] = v
                    lab = small
                else:
                    lab = lab.copy()
                fg = (lab == cv2.GC_FGD) | (lab == cv2.GC_PR_FGD)
                if fg.all() or not fg.any():
                    return None
                if learn_only:
                    cv2.grabCut(img, lab, None, bgd, fgd, 0, cv2.GC_INIT_WITH_MASK)
                    return fgd
                if fg_model is None:
                    cv2.grabCut(img, lab, None, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
                else:  # learn the local background model, then segment with the fixed object model
                    cv2.grabCut(img, lab, None, bgd, fgd, 0, cv2.GC_INIT_WITH_MASK)
                    cv2.grabCut(img, lab, None, bgd, fg_model.copy(), iters, cv2.GC_EVAL_FREEZE_MODEL)
        except cv2.error:
            return None  # e.g. too few pixels of a class for the GMMs
        fg = ((lab == cv2.GC_FGD) | (lab == cv2.GC_PR_FGD)).astype(np.float32)
        if (sw, sh) != (cw, ch):
            fg = cv2.resize(fg, (cw, ch), interpolation=cv2.INTER_LINEAR)
        out = np.zeros((self.height, self.width), bool)
        out[cy0:cy1, cx0:cx1] = fg > 0.5
        return out

    def _marks(self, lab: np.ndarray, coords: np.ndarray, labels: np.ndarray) -> None:
        """Stamp clicks as sure foreground / background disks (radius 2 px) into ``lab``."""
        for (x, y), v in zip(coords, labels):
            c = (int(min(x, self.width - 1)), int(min(y, self.height - 1)))
            cv2.circle(lab, c, 2, int(cv2.GC_FGD if v == 1 else cv2.GC_BGD), -1)

    def _keep_clicked(self, m: np.ndarray, coords: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The connected parts of ``m`` holding a positive click (all of ``m`` when none does)."""
        pos = coords[labels == 1]
        if not m.any() or len(pos) == 0:
            return m
        _, cc = cv2.connectedComponents(m.view(np.uint8), connectivity=8)
        keep = {int(cc[int(min(y, self.height - 1)), int(min(x, self.width - 1))]) for x, y in pos} - {0}
        return np.isin(cc, sorted(keep)) if keep else m

    def _box_fallback(self, box) -> np.ndarray:
        """An ellipse inscribed in the box (when GrabCut finds nothing)."""
        m = np.zeros((self.height, self.width), np.uint8)
        x0, y0, x1, y1 = (float(v) for v in box)
        centre, axes = (
            (round((x0 + x1) / 2), round((y0 + y1) / 2)),
            (max(1, round((x1 - x0) / 2)), max(1, round((y1 - y0) / 2))),
        )
        cv2.ellipse(m, centre, axes, 0, 0, 360, 1, -1)
        return m.view(bool)

    def _segment_box(
        self, t: int, box: np.ndarray, coords: np.ndarray, labels: np.ndarray, prior: np.ndarray | None = None
    ) -> np.ndarray:
        """Initial or corrected mask ``(H, W)`` bool of a box prompt (with optional clicks).

        ``prior``: the object's ``(H, W)`` bool mask on frame ``t`` (see ``add_box``), or None.
        """
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        inside = np.zeros((self.height, self.width), bool)
        inside[y0:y1, x0:x1] = True
        if prior is not None and (prior & inside).any():
            lab = np.full((self.height, self.width), cv2.GC_BGD, np.uint8)
            lab[inside] = cv2.GC_PR_BGD
            lab[prior & inside] = cv2.GC_PR_FGD
            self._marks(lab, coords, labels)
            lab[~inside] = cv2.GC_BGD  # the box bounds the object, clicks included
            allx, ally = np.append(coords[:, 0], box[0::2]), np.append(coords[:, 1], box[1::2])
            m = self._grabcut(t, lab, self._crop(allx.min(), ally.min(), allx.max(), ally.max()), PROMPT_ITERS)
            if m is None or not m.any():
                m = prior & inside
                self._marks(m.view(np.uint8), coords, labels)  # at least honour the clicks
                m &= inside
            m = self._keep_clicked(m, coords, labels) if (labels == 1).any() else m
            return m if m.any() else self._box_fallback(box)
        crop = self._crop(*box)
        if len(coords) == 0:
            m = self._grabcut(t, None, crop, PROMPT_ITERS, rect=tuple(box))
        else:
            lab = np.full((self.height, self.width), cv2.GC_BGD, np.uint8)
            lab[y0:y1, x0:x1] = cv2.GC_PR_FGD
            self._marks(lab, coords, labels)
            allx, ally = np.append(coords[:, 0], box[0::2]), np.append(coords[:, 1], box[1::2])
            crop = self._crop(allx.min(), ally.min(), allx.max(), ally.max())
            m = self._grabcut(t, lab, crop, PROMPT_ITERS)
            m = None if m is None else self._keep_clicked(m, coords, labels)
        return m if m is not None and m.any() else self._box_fallback(box)

    def _segment_points(self, t: int, coords: np.ndarray, labels: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
        """Initial or corrected mask ``(H, W)`` bool of a click prompt (see ``add_points``)."""
        H, W = self.height, self.width
        if prior is not None and prior.any():
            ys, xs = np.nonzero(prior)
            allx, ally = np.append(xs, coords[:, 0]), np.append(ys, coords[:, 1])
            x0, y0, x1, y1 = allx.min(), ally.min(), allx.max() + 1, ally.max() + 1
            lab = np.full((H, W), cv2.GC_BGD, np.uint8)
            bx0, by0, bx1, by1 = self._crop(x0, y0, x1, y1, margin=0.25)
            lab[by0:by1, bx0:bx1] = cv2.GC_PR_BGD
            lab[prior] = cv2.GC_PR_FGD
            self._marks(lab, coords, labels)
            m = self._grabcut(t, lab, self._crop(x0, y0, x1, y1, margin=0.5), PROMPT_ITERS)
            if m is None:
                m = prior.copy()
                self._marks(m.view(np.uint8), coords, labels)  # at least honour the clicks
            return self._keep_clicked(m, coords, labels) if (labels == 1).any() else m
        pos = coords[labels == 1]
        if len(pos) == 0:
            return np.zeros((H, W), bool)  # only negative clicks and nothing to correct
        half = self.point_margin * min(H, W)
        m = np.zeros((H, W), bool)
        for _ in range(4):
            x0, y0 = np.maximum(pos.min(0) - half, 0)
            x1, y1 = np.minimum(pos.max(0) + half + 1, (W, H))
            x0, y0, x1, y1 = int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))
            lab = np.full((H, W), cv2.GC_BGD, np.uint8)
            lab[y0:y1, x0:x1] = cv2.GC_PR_FGD
            self._marks(lab, coords, labels)
            got = self._grabcut(t, lab, self._crop(x0, y0, x1, y1), PROMPT_ITERS)
            if got is None:
                break
            m = self._keep_clicked(got, coords, labels)
            # grow the rectangle while the object reaches its inner border, or GrabCut found almost
            # nothing in it (the object fills it, so "outside" looked like the object too)
            ys, xs = np.nonzero(m)
            touches = len(xs) > 0 and (
                (x0 > 0 and xs.min() <= x0 + 1)
                or (y0 > 0 and ys.min() <= y0 + 1)
                or (x1 < W and xs.max() >= x1 - 2)
                or (y1 < H and ys.max() >= y1 - 2)
            )
            tiny = len(xs) < 0.05 * (x1 - x0) * (y1 - y0)
            if not touches and not tiny:
                break
            half *= 1.6
        if not m.any():  # GrabCut found nothing: small disks at the positive clicks
            self._marks(m.view(np.uint8), pos, np.ones(len(pos), np.int64))
        return m

    def _colour_for(self, obj: FlowObjectState, t: int, reverse: bool) -> np.ndarray | None | bool:
        """The colour model for refining ``obj`` on frame ``t``: the foreground GMM ``(1, 65)``
        float64 of its last conditioning frame before ``t`` in the tracking direction (learnt once
        per conditioning frame), None to re-learn it each time (``freeze_colour=False``), or
        False when refinement is off for it: colour does not separate the object from its
        surroundings on that frame (GrabCut re-fitting the prompt mask there gives an IoU below
        ``colour_check``), or there is no conditioning frame before ``t``."""
        before = [c for c in obj.cond if (c > t if reverse else c < t)]
        if not before:
            return False
        c = min(before) if reverse else max(before)
        if c not in obj.colour:
            m = self._unpack(obj.cond[c])
            model = False
            if m.any():
                ys, xs = np.nonzero(m)
                lab = np.where(m, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
                gmm = self._grabcut(
                    c, lab, self._crop(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), 0, learn_only=True
                )
                if gmm is not None:
                    lab, crop = self._band_labels(m)
                    out = self._grabcut(c, lab, crop, self.grabcut_iters, fg_model=gmm)
                    inter = 0 if out is None else np.count_nonzero(out & m)
                    union = len(xs) if out is None else np.count_nonzero(out | m)
                    if inter >= self.colour_check * union:
                        model = gmm if self.freeze_colour else None
            obj.colour[c] = model
        return obj.colour[c]

    def _band_labels(self, m: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """GrabCut labels for re-fitting mask ``m``: its core (eroded by the band) sure foreground,
        the rest of it probable foreground, a band around it probable background, the rest sure
        background; and the crop to work on."""
        ys, xs = np.nonzero(m)
        crop = self._crop(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        s = min(1.0, float(np.sqrt(self.grabcut_pixels / max(1, (crop[2] - crop[0]) * (crop[3] - crop[1])))))
        r = max(1, round(max(3.0 / s, self.band * np.sqrt(len(xs)))))
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        u = m.view(np.uint8)
        lab = np.full(m.shape, cv2.GC_BGD, np.uint8)
        lab[cv2.dilate(u, k).view(bool)] = cv2.GC_PR_BGD
        lab[m] = cv2.GC_PR_FGD
        lab[cv2.erode(u, k).view(bool)] = cv2.GC_FGD
        return lab, self._crop(xs.min() - r, ys.min() - r, xs.max() + 1 + r, ys.max() + 1 + r)

    def _refine(self, t: int, m: np.ndarray, fg_model: np.ndarray | None) -> np.ndarray:
        """GrabCut re-fit of the warped mask ``m`` on frame ``t`` (see ``_band_labels``); kept
        only when it agrees with ``m`` (IoU >= ``min_agreement``)."""
        lab, crop = self._band_labels(m)
        out = self._grabcut(t, lab, crop, self.grabcut_iters, fg_model=fg_model)
        if out is None or not out.any():
            return m
        inter, union = np.count_nonzero(out & m), np.count_nonzero(out | m)
        return out if inter >= self.min_agreement * union else m  # reject implausible jumps
