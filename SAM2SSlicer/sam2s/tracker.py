"""Streaming multi-object video tracking session (the counterpart of Meta's ``SAM2VideoPredictor``).

Frames are decoded and encoded lazily (a small LRU cache of encoded frames; while propagating, a
worker thread decodes and preprocesses the next frame while the model runs on the current one),
all objects of a frame go through memory attention, the heads and the memory encoder as one batch, and each
object's memory bank is bounded (``sam2s.memory``). Numerically it follows the reference
``sam2/sam2_video_predictor.py`` (default post-processing of ``build_sam2_video_predictor``),
with one deliberate difference: a prompt on an already tracked frame (a correction) becomes a
conditioning frame, as the reference's ``add_all_frames_to_correct_as_cond=True`` does, so that
propagating again from there uses it instead of overwriting it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import modelcost
from .config import CONFIGS
from .frames import FrameSource, preprocess
from .memory import FrameMemory, MemoryPolicy, ObjectState, SAM2MemoryPolicy, describe
from .modeling.memory_attention import MemoryKVCache, ObjectMemory, memory_tokens
from .modeling.prompt_encoder import LABEL_BOX_BOTTOM_RIGHT, LABEL_BOX_TOP_LEFT
from .modeling.sam2 import FrameFeatures, SAM2Model
from .session import MAX_OBJECT_ID, MIN_OBJECT_ID, ClickPrompt, MaskPrompt, PromptError, Tracker, TrackerBusyError

__all__ = [
    "MAX_OBJECT_ID",
    "MIN_OBJECT_ID",
    "PromptError",
    "TrackerBusyError",
    "VideoTracker",
    "make_memory_policy",
]  # the object-id range and the errors live in ``sam2s.session``; re-exported for compatibility


def make_memory_policy(memory: str | MemoryPolicy, model: SAM2Model, **params: Any) -> MemoryPolicy:
    """Memory policy from a name (``"sam2"`` or ``"divemem"``) or a policy object (returned as is).

    Args:
        memory: ``"sam2"`` (``SAM2MemoryPolicy``, Meta's reference selection), ``"divemem"``
            (``sam2s.divemem.DiveMem``), or a ``MemoryPolicy``.
        model: the model whose config gives ``num_maskmem``, ``max_obj_ptrs_in_encoder`` and
            whether pointer distances are signed (SAM 2.1).
        params: keyword parameters of ``DiveMem`` (none for ``"sam2"``).

    Raises:
        ValueError: unknown name, or parameters given for a policy that takes none.
    """
    cfg = model.config
    if not isinstance(memory, str):
        return memory
    if memory == "sam2":
        if params:
            raise ValueError(f"memory='sam2' takes no parameters (got {sorted(params)}).")
        return SAM2MemoryPolicy(cfg.num_maskmem, cfg.max_obj_ptrs_in_encoder, signed_ptr_pos=cfg.sam21)
    if memory == "divemem":
        from .divemem import DiveMem

        return DiveMem(cfg.num_maskmem, cfg.max_obj_ptrs_in_encoder, signed_ptr_pos=cfg.sam21, **params)
    raise ValueError(f"Unknown memory policy {memory!r}; use 'sam2' or 'divemem'.")


def _usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class VideoTracker(Tracker):
    """Track objects through a video with a SAM 2 / 2.1 model (a ``sam2s.session.Tracker``).

    Args:
        model: from ``sam2s.build_model``.
        frames: ``(T, H, W, 3)`` uint8 RGB array (used without copying), a folder of images, a
            video file (mp4/avi/mov/mkv...), or a ``FrameSource``. Decoded one frame at a time.
        memory: ``"sam2"`` (reference behaviour), ``"divemem"`` (SAM2S diverse memory), or a
            ``sam2s.memory.MemoryPolicy`` object; ``memory_params`` go to the policy.
        feature_cache_size: encoded frames kept (each is ~20 MB at 1024 px, ~5 MB at 512 px).
        precision: None (default) keeps the model's (``model.precision``, chosen by
            ``sam2s.build_model``); ``"auto"``, ``"fp32"`` or ``"bf16"`` switch the model in place
            (``SAM2Model.set_precision``; it is shared with every tracker using it). A bf16
            model cannot go back to ``"fp32"`` (ValueError: build it again).

    Coordinates are pixels of the original frames, x right, y down; frame indices start at 0.
    Outputs are float32 mask logits at the original resolution (> 0 = inside the object),
    whatever the precision (a bf16 model's logits are computed in float32, see ``SAM2Model``).
    ``objects`` maps object ids to their ``sam2s.memory.ObjectState``.

    ``prefetch_frames``: True decodes and preprocesses the next frame in a worker thread while
    ``propagate`` runs the model on the current one; False does not; None (the default) does it
    only when this process may use more CPU cores than PyTorch's intra-op threads
    (``torch.get_num_threads()``), or on a GPU. With every core busy in PyTorch, the worker
    preempts its threads: on a 2-core machine with 2 threads it made 512 px tracking about 10%
    slower (``benchmarks/bench_speed.py``, interleaved), so it is off there.

    Raises:
        FrameSourceError / FileNotFoundError / ValueError: unreadable or invalid frames, or an
            unknown memory policy / bad policy parameters.
    """

    def __init__(
        self,
        model: SAM2Model,
        frames: FrameSource | np.ndarray | str,
        memory: str | MemoryPolicy = "sam2",
        feature_cache_size: int = 2,
        precision: str | None = None,
        **memory_params: Any,
    ) -> None:
        if precision is not None:
            from .build import resolve_precision

            model.set_precision(resolve_precision(precision, model.device))
        self.model = model
        super().__init__(frames)
        self.memory = make_memory_policy(memory, model, **memory_params)
        self.feature_cache_size = max(1, int(feature_cache_size))
        self.objects: dict[int, ObjectState] = {}
        self._features: OrderedDict[int, FrameFeatures] = OrderedDict()
        self._maskmem_pos: torch.Tensor | None = None
        self.prefetch_frames: bool | None = None  # None: when a core is free (see the class docstring)
        self._prefetched: dict[int, Future] = {}  # frame -> preprocessed image, during propagate
        self._frames_lock = threading.Lock()  # frame sources are not thread-safe
        # cross-attention keys / values per stored memory frame (None: recompute every frame), for
        # SAM 2's maps and EdgeTAM's perceiver tokens alike
        self.memory_kv_cache: MemoryKVCache | None = MemoryKVCache()
        # obj_id -> frame -> (predicted IoU, object score logit): two floats per frame and object,
        # kept for every frame even after the memory bank dropped the frame's FrameMemory
        self._confidences: dict[int, dict[int, tuple[float, float]]] = {}

    # ------------------------------------------------------------------ public API
    @torch.inference_mode()
    def add_points(
        self,
        frame_idx: int,
        obj_id: int,
        points: Sequence | np.ndarray,
        labels: Sequence | np.ndarray,
        clear_old_points: bool = True,
    ) -> np.ndarray:
        """Prompt ``obj_id`` on ``frame_idx`` with clicks and return its mask logits there.

        As in Meta's ``add_new_points_or_box``, the object's latest mask logits on this frame (from
        an earlier ``add_mask``, click or box prompt, or from tracking) go to the mask decoder
        together with the clicks: clicks after ``add_mask`` on the same frame refine that mask
        (the result differs from the same clicks on a frame without a mask).

        Args:
            frame_idx: frame index, ``0 <= frame_idx < T``.
            obj_id: object id, an integer in ``MIN_OBJECT_ID..MAX_OBJECT_ID`` (1..254).
            points: ``(N, 2)`` float pixel coordinates (x right, y down) in the original frame.
            labels: ``(N,)`` ints, 1 = positive (inside the object), 0 = negative.
            clear_old_points: replace this frame's earlier clicks (as the reference does);
                False appends to them (after them, and after an earlier box's corners).

        Returns:
            ``(H, W)`` float32 logits of ``obj_id`` on ``frame_idx``.

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
        return self._add_click_prompt(
            frame_idx, obj_id, self._click_prompt(frame_idx, obj_id, coords, labs, clear_old_points)
        )

    @torch.inference_mode()
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

        Like clicks (see ``add_points``), a box on a frame where the object already has a mask
        (``add_mask``, an earlier prompt, or tracking) refines that mask: its logits go to the
        decoder with the box. Returns and raises as ``add_points``.
        """
        self._check_idle("add_box")
        b = self._check_box(box)
        coords, labs = self._check_points(points if points is not None else [], labels if labels is not None else [])
        self._check_frame(frame_idx)
        self._check_obj_id(obj_id)
        return self._add_click_prompt(frame_idx, obj_id, ClickPrompt(coords, labs, b))

    @torch.inference_mode()
    def add_mask(self, frame_idx: int, obj_id: int, mask: np.ndarray) -> np.ndarray:
        """Prompt ``obj_id`` on ``frame_idx`` with a binary mask ``(H, W)`` (bool or 0/1) of the
        frame's size; it replaces this frame's clicks. Returns the ``(H, W)`` logits (+-10 as the
        reference's ``use_mask_input_as_output_without_sam``).

        Clicks or a box given afterwards on the same frame (``add_points`` / ``add_box``) refine
        this mask, as Meta's predictor does: the mask's logits are their previous-mask input.

        Raises:
            PromptError: wrong shape or non-binary values; bad frame index or object id (outside
                1..254). TrackerBusyError: a ``propagate()`` generator is running. Nothing in the
                session changes then.
        """
        self._check_idle("add_mask")
        m = self._check_mask(frame_idx, obj_id, mask)
        model, s = self.model, self.model.config.image_size
        x = torch.from_numpy(m)[None, None].float().to(model.device)
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            x = (x >= 0.5).float()
        with self._autocast():
            ff = self._frame_features(frame_idx)
            out = model.mask_as_output(ff.feat, ff.high_res, x)
        mem = self._frame_memory(out.low_res, out, frame_idx)
        obj = self.objects.setdefault(obj_id, ObjectState())
        obj.pending[frame_idx] = mem
        obj.prompts[frame_idx] = MaskPrompt(m)
        self._note_confidence(obj_id, frame_idx, mem)
        return self._to_video(mem.pred_masks)[0]

    @torch.inference_mode()
    def propagate(
        self,
        start: int | None = None,
        end: int | None = None,
        reverse: bool = False,
        obj_ids: Iterable[int] | None = None,
    ) -> Iterator[tuple[int, list[int], np.ndarray]]:
        """Track objects from ``start`` to ``end`` (inclusive), yielding per frame.

        Args:
            start: first frame (default: the earliest prompted frame of the tracked objects, as
                the reference).
            end: last frame (default: the last frame, or frame 0 when ``reverse``).
            reverse: track backward in time.
            obj_ids: the objects to track, as one batch (default: all). The others are not
                tracked nor yielded, and nothing of theirs changes (their new prompts stay
                pending). SAM 2 tracks each object independently of the others, so an object's
                results do not depend on which others are tracked with it (up to the rounding of
                batches padded to different memory sizes).

        Yields:
            ``(frame_idx, ids, logits)`` with ``ids`` the tracked object ids in session order
            and ``logits`` ``(len(ids), H, W)`` float32 in that order. Prompted frames yield
            their prompt result.

        While the generator runs (from its first ``next`` until it is exhausted, raises or is
        closed), the session refuses changes (``add_points``, ``add_box``, ``add_mask``,
        ``remove_object``, ``reset``) and a second ``propagate()`` with ``TrackerBusyError``, as
        Meta's predictor does. To stop early, ``break`` out of the ``for`` loop (CPython then
        closes the dropped generator) or call ``.close()`` on a generator you kept.

        Raises:
            RuntimeError: no object was prompted. PromptError: bad ``start``/``end``, or an empty
            ``obj_ids``. KeyError: an unknown id in ``obj_ids`` (the message lists the known ids).
            TrackerBusyError: another ``propagate()`` generator of this session is running.
            As ``propagate`` is a generator, these are raised by its first ``next()``.
        """
        self._check_idle("propagate")
        if not self.objects:
            raise RuntimeError("No object has a prompt yet: call add_points, add_box or add_mask first.")
        ids = self.tracked_ids(obj_ids)
        objs = [self.objects[k] for k in ids]
        self._commit_prompts(objs)
        order = self.frame_order(start, end, reverse, ids)
        seconds: list[float] = []  # model time per tracked frame (not the caller's time between frames)
        with self._propagation(), self._prefetching() as prefetch:
            for i, t in enumerate(order):
                if i + 1 < len(order):
                    prefetch(order[i + 1])  # decoded while the model runs on frame t
                started = time.perf_counter()
                logits = self._track_frame(t, reverse, objs)
                if not all(t in obj.cond for obj in objs):
                    seconds.append(time.perf_counter() - started)
                for k, obj in zip(ids, objs):
                    self._note_confidence(k, t, obj.cond[t] if t in obj.cond else obj.non_cond[t])
                yield t, list(ids), logits
        self._note_speed(seconds)

    def _note_speed(self, seconds: list[float]) -> None:
        """Keep this model's median seconds per tracked frame on this computer (``sam2s.modelcost``:
        every front end shows it beside the model's name) after a propagation of 3 frames or more."""
        cfg = self.model.config
        if len(seconds) < 3 or cfg.name not in CONFIGS:
            return
        median = sorted(seconds)[len(seconds) // 2]
        modelcost.record(cfg.name, cfg.image_size, self.model.precision, self.model.device.type, median, len(seconds))

    def confidence(self, obj_id: int, frame_idx: int) -> tuple[float, float] | None:
        """The model's own confidence in ``obj_id``'s latest result on ``frame_idx``.

        Returns:
            ``(predicted_iou, object_score)``: the mask decoder's predicted IoU of the chosen mask
            (float in about 0..1; 1.0 for a mask prompt, which is used as the output as is) and the
            object-score logit (> 0: the model judges the object present; the output is empty
            otherwise; +-10 for a mask prompt). None for an unknown object, or a frame it was
            neither prompted nor tracked on. A new prompt or a new propagation over the frame
            replaces the values; ``remove_object`` / ``reset`` forget them.

        Only these two floats are kept per frame and object (about 100 bytes), for every frame,
        even after the memory bank dropped the frame's features (long videos); reading is a dict
        lookup, no model work.
        """
        return self._confidences.get(obj_id, {}).get(frame_idx)

    def remove_object(self, obj_id: int) -> None:
        """Forget ``obj_id``, its prompts, results and confidences (``Tracker.remove_object``)."""
        super().remove_object(obj_id)
        self._confidences.pop(obj_id, None)

    def reset(self) -> None:
        """Forget all objects, prompts, results and confidences (``Tracker.reset``)."""
        super().reset()
        self._confidences.clear()

    def attended_memory(self, obj_id: int, frame_idx: int | None = None, reverse: bool = False) -> dict:
        """Inspection of what ``obj_id`` attends to.

        With ``frame_idx``: the memories it would attend to on that frame now. Without: those it
        attended to on the last frame it was tracked on (or corrected on).

        Returns:
            ``{"frame": t, "conditioning": [...], "short_term": [...], "long_term": [...],
            "pointers": n}``: sorted frame indices per kind of memory, and the number of object
            pointers. Raises ``KeyError`` for an unknown object or one not tracked yet.
        """
        obj = self.objects[obj_id]
        if frame_idx is None:
            if obj.last_attended is None:
                raise KeyError(f"Object {obj_id} has not been tracked yet; pass a frame_idx.")
            frame_idx, sel = obj.last_attended
        else:
            sel = self.memory.select(obj, frame_idx, reverse, self.num_frames)
        return {"frame": frame_idx, **describe(sel)}

    # ------------------------------------------------------------------ internals
    def _autocast(self):
        """bf16 autocast for a bf16 model on CUDA (as Meta's predictor is run), else a no-op
        (``SAM2Model.autocast``; off CUDA a bf16 model has bf16 weights instead)."""
        return self.model.autocast()

    def _add_click_prompt(self, frame_idx: int, obj_id: int, prompt: ClickPrompt) -> np.ndarray:
        """Run the heads on a (checked) click / box prompt, store it and return the ``(H, W)``
        logits. The decoder gets the box corners first (labels ``LABEL_BOX_TOP_LEFT`` = 2,
        ``LABEL_BOX_BOTTOM_RIGHT`` = 3), then the clicks, in model pixels (reference
        ``add_new_points_or_box``), with the object's latest logits on the frame as mask input."""
        model, cfg = self.model, self.model.config
        device = model.device
        corners, corner_labels = np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
        if prompt.box is not None:
            corners, corner_labels = prompt.box.reshape(2, 2), np.array([LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT])
        coords = np.concatenate([corners, prompt.points])  # new, writable arrays (the prompt's are read-only)
        labels = np.concatenate([corner_labels, prompt.labels])
        xy = (torch.from_numpy(coords).float() / torch.tensor([self.width, self.height])) * cfg.image_size
        lab = torch.from_numpy(labels).to(torch.int32)
        obj = self.objects.get(obj_id, ObjectState())
        is_init = frame_idx not in obj.tracked
        reverse = obj.tracked.get(frame_idx, False)
        prev = obj.latest_output(frame_idx)
        prev_logits = None if prev is None else prev.pred_masks.to(device).clamp(-32.0, 32.0)
        with self._autocast():
            ff = self._frame_features(frame_idx)
            if is_init:
                pix = model.add_no_memory(ff.feat)
            else:
                pix = self._condition([obj], frame_idx, reverse, ff)
            out = model.forward_heads(
                pix, ff.high_res, (xy[None].to(device), lab[None].to(device)), prev_logits, multimask=len(lab) <= 1
            )
        mem = self._frame_memory(out.low_res, out, frame_idx)
        self.objects[obj_id] = obj
        obj.pending[frame_idx] = mem
        obj.prompts[frame_idx] = prompt
        self._note_confidence(obj_id, frame_idx, mem)
        return self._to_video(mem.pred_masks)[0]

    def _frame_memory(self, low_res: torch.Tensor, out, frame_idx: int) -> FrameMemory:
        return FrameMemory(
            low_res.float(), out.obj_ptr.float(), out.object_score.float(), out.iou.float(), frame_idx=frame_idx
        )

    def _note_confidence(self, obj_id: int, frame_idx: int, mem: FrameMemory) -> None:
        """Keep ``(predicted IoU of the chosen mask, object score)`` of ``mem`` (see ``confidence``);
        the chosen mask is the one of highest predicted IoU, so its IoU is the row's maximum."""
        iou = float(mem.iou.max())
        self._confidences.setdefault(obj_id, {})[frame_idx] = (iou, float(mem.object_score.reshape(-1)[0]))

    def _load_image(self, frame_idx: int) -> torch.Tensor:
        """Decoded and preprocessed frame ``(3, S, S)`` float32 (``sam2s.frames.preprocess``)."""
        with self._frames_lock:
            frame = self.frames.get(frame_idx)
        return preprocess(frame, self.model.config.image_size)

    @contextmanager
    def _prefetching(self) -> Iterator[Callable[[int], None]]:
        """Yield ``prefetch(t)``, which starts decoding and preprocessing frame ``t`` in a worker
        thread (PIL decoding / resizing and numpy release the GIL, so this overlaps the model's
        work on the current frame); ``_frame_features`` takes the result, and a read error is
        raised there, when the frame is needed, as without prefetching. The worker lives only
        while propagating: on exit, pending loads are cancelled or awaited, and their results
        dropped (the frame source is idle again, e.g. for ``frames.close()``)."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam2s-prefetch")
        enabled = self.prefetch_frames
        if enabled is None:
            enabled = self.model.device.type != "cpu" or _usable_cores() > torch.get_num_threads()

        def prefetch(t: int) -> None:
            if enabled and t not in self._features and t not in self._prefetched:
                self._prefetched[t] = pool.submit(self._load_image, t)

        try:
            yield prefetch
        finally:
            self._prefetched = {}
            pool.shutdown(wait=True, cancel_futures=True)

    def _frame_features(self, frame_idx: int) -> FrameFeatures:
        ff = self._features.get(frame_idx)
        if ff is None:
            pending = self._prefetched.pop(frame_idx, None)
            image = pending.result() if pending is not None else self._load_image(frame_idx)
            ff = self.model.encode_image(image[None].to(self.model.device))
            self._features[frame_idx] = ff
            while len(self._features) > self.feature_cache_size:
                self._features.popitem(last=False)
        else:
            self._features.move_to_end(frame_idx)
        return ff

    def _encode_memory(self, frame_idx: int, low_res: torch.Tensor, object_score: torch.Tensor, binarize: bool):
        """bf16 memory features ``(B, 64, f, f)`` of masks ``low_res (B, 1, 4f, 4f)`` on a frame
        (EdgeTAM: the spatial perceiver's ``(B, N, 64)`` tokens, see ``SAM2Model.encode_memory``)."""
        s = self.model.config.image_size
        high = F.interpolate(low_res, size=(s, s), mode="bilinear", align_corners=False)
        ff = self._frame_features(frame_idx)
        with self._autocast():
            mem, pos = self.model.encode_memory(ff.feat.expand(len(low_res), -1, -1, -1), high, object_score, binarize)
        if self._maskmem_pos is None:
            self._maskmem_pos = pos[:1].float()
        return mem.to(torch.bfloat16)

    def _commit_prompts(self, objs: list[ObjectState]) -> None:
        """Encode the memory of the prompted frames of ``objs`` and make them conditioning frames
        (reference ``propagate_in_video_preflight``; masks are binarised as from clicks)."""
        by_frame: dict[int, list[tuple[ObjectState, FrameMemory]]] = {}
        for obj in objs:
            for t, mem in obj.pending.items():
                by_frame.setdefault(t, []).append((obj, mem))
        for t, items in by_frame.items():
            todo = [mem for _, mem in items if mem.maskmem is None]
            if todo:
                low = torch.cat([m.pred_masks for m in todo]).to(self.model.device)
                score = torch.cat([m.object_score for m in todo]).to(self.model.device)
                # prompted outputs count as masks from clicks (reference: is_mask_from_pts=True here)
                binarize = self.model.config.binarize_mask_from_pts_for_mem_enc
                feats = self._encode_memory(t, low, score, binarize=binarize)
                for m, f in zip(todo, feats):
                    m.maskmem = f[None]
        for obj in objs:
            obj.cond.update(obj.pending)
            obj.pending.clear()
            for t in obj.cond:
                obj.non_cond.pop(t, None)

    def _condition(self, objs: list[ObjectState], frame_idx: int, reverse: bool, ff: FrameFeatures) -> torch.Tensor:
        """Memory-conditioned features ``(B, 256, f, f)`` of a frame for a batch of objects."""
        model, cfg = self.model, self.model.config
        device = model.device
        mem_pos = memory_tokens(self._maskmem_pos).to(device)  # (1, HW, 64), or EdgeTAM's (1, N, 64) latents
        hw = mem_pos.shape[1]  # memory tokens per frame
        max_rel = min(self.num_frames, cfg.max_obj_ptrs_in_encoder) - 1
        per_obj, banks = [], []
        for obj in objs:
            sel = self.memory.select(obj, frame_idx, reverse, self.num_frames)
            obj.last_attended = (frame_idx, sel)
            feats = [memory_tokens(m.maskmem.to(device)) for m, _ in sel.spatial]
            poss = [mem_pos + model.memory_tpos(slot).reshape(1, 1, -1) for _, slot in sel.spatial]
            if sel.pointers:
                rel = torch.tensor([r for r, _ in sel.pointers], device=device)
                ptrs = torch.cat([p.to(device) for _, p in sel.pointers])  # (P, 256)
                split = cfg.d_model // cfg.mem_dim
                ptr_tokens = ptrs.reshape(-1, split, cfg.mem_dim).flatten(0, 1)[None]
                ptr_pos = model.pointer_pos_enc(rel, max_rel).repeat_interleave(split, dim=0)[None]
            else:
                ptr_tokens = ptr_pos = ff.feat.new_zeros(1, 0, cfg.mem_dim)
            per_obj.append((feats, poss, ptr_tokens, ptr_pos))
            banks.append(ObjectMemory([(m.maskmem, slot) for m, slot in sel.spatial], ptr_tokens[0], ptr_pos[0]))
        if self.memory_kv_cache is not None:  # per-frame cached keys / values, no padding or mask
            slots = {slot for bank in banks for _, slot in bank.spatial}
            positions = {s: (mem_pos + model.memory_tpos(s).reshape(1, 1, -1))[0] for s in slots}
            _, c, h, w = ff.feat.shape
            dt = model.dtype
            tokens, tokens_pos = (
                x.to(dt).flatten(2).transpose(1, 2).expand(len(objs), -1, -1) for x in (ff.feat, ff.pos)
            )
            out = model.memory_attention.forward_bank(tokens, tokens_pos, banks, positions, self.memory_kv_cache)
            return out.transpose(1, 2).reshape(len(objs), c, h, w)
        n_frames = max(len(f) for f, *_ in per_obj)
        n_ptr = max(p.shape[1] for _, _, p, _ in per_obj)
        memory, memory_pos, masks = [], [], []
        for feats, poss, ptr_tokens, ptr_pos in per_obj:
            pad_f, pad_p = (n_frames - len(feats)) * hw, n_ptr - ptr_tokens.shape[1]
            z = ptr_tokens.new_zeros
            memory.append(
                torch.cat(
                    [f.float() for f in feats] + [z(1, pad_f, cfg.mem_dim), ptr_tokens, z(1, pad_p, cfg.mem_dim)], 1
                )
            )
            memory_pos.append(torch.cat(poss + [z(1, pad_f, cfg.mem_dim), ptr_pos, z(1, pad_p, cfg.mem_dim)], 1))
            keep = torch.ones(memory[-1].shape[1], dtype=torch.bool, device=device)
            keep[len(feats) * hw : n_frames * hw] = False
            keep[n_frames * hw + ptr_tokens.shape[1] :] = False
            masks.append(keep)
        attn_mask = None
        if not all(m.all() for m in masks):
            attn_mask = torch.stack(masks)[:, None, None, :]
        b = len(objs)
        return model.condition_on_memory(
            ff.feat.expand(b, -1, -1, -1),
            ff.pos.expand(b, -1, -1, -1),
            torch.cat(memory),
            torch.cat(memory_pos),
            n_ptr,
            attn_mask,
        )

    def _track_frame(self, t: int, reverse: bool, objs: list[ObjectState]) -> np.ndarray:
        """Outputs ``(len(objs), H, W)`` on frame ``t``: objects prompted there give their stored
        result, the others are tracked as one batch."""
        todo = [obj for obj in objs if t not in obj.cond]
        if todo:
            ff = self._frame_features(t)
            with self._autocast():
                pix = self._condition(todo, t, reverse, ff)
                feat, high_res = ff.expand(len(todo))
                out = self.model.forward_heads(pix, high_res, multimask=True)
            low_res = out.low_res.float()
            maskmem = self._encode_memory(t, low_res, out.object_score, binarize=False)
            for i, obj in enumerate(todo):
                mem = FrameMemory(
                    low_res[i : i + 1],
                    out.obj_ptr[i : i + 1].float(),
                    out.object_score[i : i + 1].float(),
                    out.iou[i : i + 1].float(),
                    maskmem[i : i + 1],
                    frame_idx=t,
                )
                self.memory.update(obj, t, reverse, mem)
        logits = []
        for obj in objs:
            obj.tracked[t] = reverse
            logits.append(obj.cond[t].pred_masks if t in obj.cond else obj.non_cond[t].pred_masks)
        return self._to_video(torch.cat(logits))

    def _to_video(self, low_res: torch.Tensor) -> np.ndarray:
        """``(B, 1, 4f, 4f)`` logits -> ``(B, H, W)`` float32 numpy at the original resolution."""
        up = F.interpolate(low_res.float(), size=(self.height, self.width), mode="bilinear", align_corners=False)
        return up[:, 0].cpu().numpy()
