"""Memory bank of one tracked object, and the policies that choose what a frame attends to.

A memory policy (``MemoryPolicy``) selects, per object and frame, the memories the frame attends
to and decides what the bank keeps of each newly tracked frame. ``SAM2MemoryPolicy`` reproduces the reference selection (``sam2_base.py::
_prepare_memory_conditioned_features`` with ``max_cond_frames_in_attn=-1`` and temporal stride 1):
every conditioning frame, the ``num_maskmem - 1`` frames before the current one (in the
tracking direction), and the object pointers of conditioning frames in the past plus the
frames up to ``max_obj_ptrs_in_encoder - 1`` back. Unlike the reference, which keeps every
frame's memory for the whole session, the bank forgets what no later frame can attend to, so
its size does not grow with the video's length.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import torch

from .session import ClickPrompt, MaskPrompt

LONG_TERM_SLOT = -1  # slot of long-term memories (DiveMem); see ``SAM2Model.long_term_tpos``


@dataclass
class FrameMemory:
    """What the session keeps of one object on one frame.

    pred_masks: ``(1, 1, 4f, 4f)`` float32 low-resolution mask logits (f = image_size / 16).
    obj_ptr: ``(1, 256)`` object pointer. object_score: ``(1, 1)`` presence logit.
    iou: ``(1, M)`` predicted IoU of the candidate masks. maskmem: ``(1, 64, f, f)`` bfloat16
    memory features, None until encoded (prompted frames are encoded when propagation starts)
    or after the bank dropped them.
    """

    pred_masks: torch.Tensor
    obj_ptr: torch.Tensor
    object_score: torch.Tensor
    iou: torch.Tensor
    maskmem: torch.Tensor | None = None
    frame_idx: int = -1


@dataclass
class ObjectState:
    """Per-object session state.

    cond: conditioning (prompted) frames, committed. non_cond: recent tracked frames, bounded.
    pending: prompted frames whose memory is not encoded yet (committed to ``cond`` at the next
    propagation). prompts: frame -> the ``ClickPrompt`` or ``MaskPrompt`` given there (pixels of
    the original frame). tracked: frame -> tracked in reverse. bank: state of the memory policy
    (DiveMem's buffer and long-term bank). last_attended: ``(frame, MemorySelection)`` the object
    last attended to.
    """

    cond: dict[int, FrameMemory] = field(default_factory=dict)
    non_cond: dict[int, FrameMemory] = field(default_factory=dict)
    pending: dict[int, FrameMemory] = field(default_factory=dict)
    prompts: dict[int, ClickPrompt | MaskPrompt] = field(default_factory=dict)
    tracked: dict[int, bool] = field(default_factory=dict)
    bank: Any = None  # state of the memory policy (DiveMem's buffer and long-term bank)
    last_attended: tuple[int, MemorySelection] | None = None  # (frame, selection) last attended to

    def latest_output(self, frame_idx: int) -> FrameMemory | None:
        """Most recent output on ``frame_idx`` (pending, then conditioning, then tracked), or None."""
        for store in (self.pending, self.cond, self.non_cond):
            if frame_idx in store:
                return store[frame_idx]
        return None


@dataclass
class MemorySelection:
    """Memories one object attends to on one frame.

    spatial: ``(FrameMemory, slot)`` pairs; slot 0 = conditioning frame, slot k >= 1 = the frame
    ``num_maskmem - k`` steps back; it picks ``maskmem_tpos_enc[num_maskmem - 1 - slot]``;
    ``LONG_TERM_SLOT`` marks a long-term memory (DiveMem).
    pointers: ``(relative frame distance, (1, 256) pointer)`` pairs.
    """

    spatial: list[tuple[FrameMemory, int]]
    pointers: list[tuple[int, torch.Tensor]]


@runtime_checkable
class MemoryPolicy(Protocol):
    """What ``VideoTracker`` needs of a memory policy (``VideoTracker(model, frames, memory=policy)``).

    A policy keeps its per-object state in ``ObjectState.bank`` (and may prune
    ``ObjectState.non_cond``); it must not touch the conditioning frames (``ObjectState.cond``),
    which the session owns. Implementations: ``SAM2MemoryPolicy`` (``"sam2"``) and
    ``sam2s.divemem.DiveMem`` (``"divemem"``).

    Attributes:
        name: short name of the policy (``"sam2"``, ``"divemem"``).
    """

    name: str

    def select(self, obj: ObjectState, frame_idx: int, reverse: bool, num_frames: int) -> MemorySelection:
        """The memories ``obj`` attends to on frame ``frame_idx`` (0-based) of a ``num_frames``-frame
        video when tracking forward in time, or backward when ``reverse``."""
        ...

    def update(self, obj: ObjectState, frame_idx: int, reverse: bool, mem: FrameMemory) -> None:
        """Store ``mem``, the output of ``obj`` tracked (not prompted) on ``frame_idx``, and forget
        what no later frame will attend to."""
        ...


class SAM2MemoryPolicy:
    """SAM 2's memory policy (reference behaviour), with bounded retention; a ``MemoryPolicy``.

    Args:
        num_maskmem: memory slots (7: the conditioning slot + 6 recent frames).
        max_obj_ptrs: object pointers attended to at most (16).
        signed_ptr_pos: SAM 2.1 signs pointer distances by the tracking direction.
    """

    name = "sam2"

    def __init__(self, num_maskmem: int = 7, max_obj_ptrs: int = 16, signed_ptr_pos: bool = True) -> None:
        self.num_maskmem = num_maskmem
        self.max_obj_ptrs = max_obj_ptrs
        self.signed_ptr_pos = signed_ptr_pos

    def select(self, obj: ObjectState, frame_idx: int, reverse: bool, num_frames: int) -> MemorySelection:
        """Memories for ``obj`` on ``frame_idx`` when tracking forward (or backward if ``reverse``)."""
        step = 1 if reverse else -1  # direction of the past
        spatial = [(mem, 0) for mem in obj.cond.values()]
        for slot in range(1, self.num_maskmem):
            mem = obj.non_cond.get(frame_idx + step * (self.num_maskmem - slot))
            if mem is not None and mem.maskmem is not None:
                spatial.append((mem, slot))
        sign = -1 if reverse else 1
        pointers = [
            ((frame_idx - t) * sign if self.signed_ptr_pos else abs(frame_idx - t), mem.obj_ptr)
            for t, mem in obj.cond.items()
            if (t >= frame_idx if reverse else t <= frame_idx)
        ]
        for dist in range(1, min(num_frames, self.max_obj_ptrs)):
            t = frame_idx + step * dist
            if t < 0 or t >= num_frames:
                break
            mem = obj.non_cond.get(t)
            if mem is not None:
                pointers.append((dist, mem.obj_ptr))
        return MemorySelection(spatial, pointers)

    def update(self, obj: ObjectState, frame_idx: int, reverse: bool, mem: FrameMemory) -> None:
        """Store a newly tracked (non-conditioning) frame and forget what no later frame needs:
        memory features further than ``num_maskmem - 1`` frames and pointers further than
        ``max_obj_ptrs - 1`` frames from ``frame_idx`` (either direction, so a session can also
        turn around)."""
        obj.non_cond[frame_idx] = mem
        for t, old in list(obj.non_cond.items()):
            dist = abs(t - frame_idx)
            if dist >= self.max_obj_ptrs:
                del obj.non_cond[t]
            elif dist >= self.num_maskmem and old.maskmem is not None:
                obj.non_cond[t] = replace(old, maskmem=None)  # a new record: others may share `old`


def describe(sel: MemorySelection) -> dict:
    """Inspection of a ``MemorySelection``: the frames whose memories it holds, by kind.

    Returns:
        ``{"conditioning": [...], "short_term": [...], "long_term": [...], "pointers": n}``:
        sorted frame indices per kind of memory (slot 0, slots >= 1, ``LONG_TERM_SLOT``) and the
        number ``n`` of object pointers.
    """
    return {
        "conditioning": sorted(m.frame_idx for m, slot in sel.spatial if slot == 0),
        "short_term": sorted(m.frame_idx for m, slot in sel.spatial if slot > 0),
        "long_term": sorted(m.frame_idx for m, slot in sel.spatial if slot == LONG_TERM_SLOT),
        "pointers": len(sel.pointers),
    }
