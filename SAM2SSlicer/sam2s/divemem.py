"""SAM2S DiveMem: a diverse long-term memory next to SAM 2's complete short-term memory.

SAM2S (arXiv 2511.16618) keeps, per object, a small long-term bank of diverse, reliable past
views so that long surgical videos (instruments leaving and re-entering, camera motion, tissue
deformation) neither drift nor over-fit to the latest view. Its code is not released; this is
the training-free form that runs on any SAM 2 / 2.1 checkpoint, after the published ancestor
ReSurgSAM2's DLM (defaults 0.95 / 5 / 3 are ReSurgSAM2's values):

* conditioning memory: the prompted frames (``l_0``), as in SAM 2;
* short-term memory: the last ``num_maskmem - 1`` tracked frames, complete, as in SAM 2;
* candidate buffer B: tracked frames whose predicted mask IoU (the best candidate's, i.e. the
  chosen mask's) exceeds ``iou_threshold`` and whose object score is > 0 (object present);
* when B holds ``buffer_size`` frames, the candidate least similar to the long-term bank
  L = {conditioning frames, l_1..l_k} joins L, then B is cleared. Similarity of two memories:
  cosine similarity over the 64 channels of each spatial token (``(64, H*W)`` features, axis 0),
  averaged over the ``H*W`` tokens; similarity of a candidate to L is its maximum over L's
  members; the candidate with the smallest value wins (ties: the earliest);
* L holds at most ``long_term_size`` entries beyond the conditioning frames; a full L evicts
  ``"oldest"`` (FIFO, as ReSurgSAM2) or ``"redundant"`` (the member whose maximum similarity to
  the rest of L is highest);
* long-term memories get the conditioning slot of ``maskmem_tpos_enc`` (ReSurgSAM2's
  training-free rule) or, when the checkpoint has one, the dedicated ``long_term_tpos_enc``.

Only memory features enter L (object pointers stay SAM 2's). Nothing beyond conditioning +
short-term + B + L is kept, and each object has its own B and L.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .memory import LONG_TERM_SLOT, FrameMemory, MemorySelection, ObjectState, SAM2MemoryPolicy


@dataclass
class DiveMemBank:
    """One object's DiveMem state: candidate buffer B and long-term entries l_1..l_k (oldest first)."""

    buffer: list[FrameMemory] = field(default_factory=list)
    long_term: list[FrameMemory] = field(default_factory=list)


def memory_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two memories ``(1, C, H, W)`` (or EdgeTAM's perceiver tokens
    ``(1, N, C)``): over the C channels of each token, then averaged over the tokens. Returns a
    float in [-1, 1]."""
    if a.ndim == 3:  # (1, N, C) tokens: channels last
        return float(F.cosine_similarity(a.float(), b.float(), dim=2).mean())
    return float(F.cosine_similarity(a.float().flatten(2), b.float().flatten(2), dim=1).mean())


class DiveMem(SAM2MemoryPolicy):
    """DiveMem memory policy (see the module docstring); a ``MemoryPolicy``.

    Args:
        iou_threshold: predicted IoU a frame needs to become a candidate, in [0, 1) (0.95).
        buffer_size: candidates collected before one joins the long-term bank, >= 1 (5).
        long_term_size: long-term entries beyond the conditioning frames, >= 1 (3).
        eviction: ``"oldest"`` or ``"redundant"``.

    Raises:
        ValueError: a parameter out of range or of the wrong type (the message names it).
    """

    name = "divemem"

    def __init__(
        self,
        num_maskmem: int = 7,
        max_obj_ptrs: int = 16,
        signed_ptr_pos: bool = True,
        iou_threshold: float = 0.95,
        buffer_size: int = 5,
        long_term_size: int = 3,
        eviction: str = "oldest",
    ) -> None:
        super().__init__(num_maskmem, max_obj_ptrs, signed_ptr_pos)
        if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)) or not 0 <= iou_threshold < 1:
            raise ValueError(f"iou_threshold must be a number in [0, 1), got {iou_threshold!r}.")
        for pname, value in (("buffer_size", buffer_size), ("long_term_size", long_term_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{pname} must be an integer >= 1, got {value!r}.")
        if eviction not in ("oldest", "redundant"):
            raise ValueError(f"eviction must be 'oldest' or 'redundant', got {eviction!r}.")
        self.iou_threshold = float(iou_threshold)
        self.buffer_size = buffer_size
        self.long_term_size = long_term_size
        self.eviction = eviction

    @staticmethod
    def bank(obj: ObjectState) -> DiveMemBank:
        """The object's DiveMem state (created on first use)."""
        if obj.bank is None:
            obj.bank = DiveMemBank()
        return obj.bank

    def is_candidate(self, mem: FrameMemory) -> bool:
        """Reliable view: best predicted IoU above the threshold and the object present."""
        return bool(mem.iou.max() > self.iou_threshold and mem.object_score.max() > 0 and mem.maskmem is not None)

    def select(self, obj: ObjectState, frame_idx: int, reverse: bool, num_frames: int) -> MemorySelection:
        """SAM 2's selection plus the long-term entries that are not already attended to."""
        sel = super().select(obj, frame_idx, reverse, num_frames)
        present = {m.frame_idx for m, _ in sel.spatial}
        sel.spatial += [(m, LONG_TERM_SLOT) for m in self.bank(obj).long_term if m.frame_idx not in present]
        return sel

    def update(self, obj: ObjectState, frame_idx: int, reverse: bool, mem: FrameMemory) -> None:
        """Store a tracked frame (SAM 2 short-term rule), then run the DiveMem buffer / bank rules."""
        super().update(obj, frame_idx, reverse, mem)
        bank = self.bank(obj)
        if not self.is_candidate(mem):
            return
        bank.buffer.append(mem)
        if len(bank.buffer) < self.buffer_size:
            return
        references = list(obj.cond.values()) + bank.long_term
        scores = [max((memory_similarity(c.maskmem, r.maskmem) for r in references), default=0.0) for c in bank.buffer]
        bank.long_term.append(bank.buffer[scores.index(min(scores))])
        bank.buffer.clear()
        if len(bank.long_term) > self.long_term_size:
            bank.long_term.pop(self._victim(obj, bank))

    def _victim(self, obj: ObjectState, bank: DiveMemBank) -> int:
        """Index in ``bank.long_term`` of the entry to evict."""
        if self.eviction == "oldest":
            return 0
        members = list(obj.cond.values()) + bank.long_term
        n_cond = len(obj.cond)

        def redundancy(i: int) -> float:
            me = bank.long_term[i]
            others = [m for j, m in enumerate(members) if j != n_cond + i]
            return max(memory_similarity(me.maskmem, o.maskmem) for o in others)

        return max(range(len(bank.long_term)), key=redundancy)
