"""How much memory the Segment Editor's undo history holds for a video segmentation, and a bound.

Every tracking write of the module (a preview click writes ONE frame's mask into a segment) is
preceded by the Segment Editor's ``saveStateForUndo``. What one undo state copies is decided by
Slicer's ``vtkSegmentationHistory::SaveState``
(``Libs/vtkSegmentationCore/vtkSegmentationHistory.cxx``), which calls
``vtkSegmentation::CopySegment(clone, segment, baseline, cache)``
(``Libs/vtkSegmentationCore/vtkSegmentation.cxx``) for every segment:

* the unit that is copied is a whole representation data object: for the binary-labelmap
  source representation that is the segment's labelmap LAYER (a ``vtkOrientedImageData`` over the
  layer's effective extent, i.e. every frame the layer's segments occupy, frames x rows x
  columns), for derived representations (e.g. the closed surface shown in 3D) the segment's
  ``vtkPolyData``;
* an object is deep-copied unless the previous state (``baseline``) already holds a copy whose
  ``GetMTime()`` is newer than the live object's; then that copy is shared (shallow);
* a layer shared by several segments is copied once per state (the ``cache`` map of
  ``CopySegment``), not once per segment.

So writing one frame of one segment makes the next state deep-copy the segment's whole layer
(all frames): for a 1,000-frame 854x480 video that is up to 1000 x 480 x 854 bytes = 410 MB
(uint8 labels) per click, and Slicer's Segment Editor keeps 10 states
(``Modules/Scripted/SegmentEditor/SegmentEditor.py``: ``setMaximumNumberOfUndoStates(10)``).
Nothing in the real classes lets one state store only the changed frames: the copy unit is the
layer object and ``vtkSegmentationHistory`` keeps no differences. This module therefore BOUNDS
the history: it predicts the bytes a state copies and chooses how many states fit in a budget,
for ``vtkSlicerSegmentEditorLogic::SetMaximumNumberOfUndoStates``
(``Modules/Loadable/Segmentations/Logic/vtkSlicerSegmentEditorLogic.cxx``; the Qt widget's
``qMRMLSegmentEditorWidget::setMaximumNumberOfUndoStates`` forwards to it).

Two more facts of the same sources decide the bound (the first is checked by
``Testing/Python/test_undo.py``; the second was reproduced once with slicer-core, and is not run
in the tests because it kills the process):

* ``vtkSegmentationHistory::RestoreState`` (Undo / Redo) copies the restored objects into the
  live segmentation without a baseline, so every live object is then newer than its saved copy
  and the next ``SaveState`` deep-copies ALL layers. A user alternating "click, Undo, click"
  makes every state a full copy: ``n`` states can hold ``n`` full copies.
* With ``SetMaximumNumberOfUndoStates(1)`` an Undo crashes Slicer: ``RestorePreviousState`` first
  saves the current state (the history pops the only older one) and then restores state index
  ``size - 2 = -1`` (segmentation fault in slicer-core 5.13). ``n`` states give ``n - 1`` undo
  steps, so a useful limit is 0 (no undo) or at least 2.

Qt-free: plain Python on the MRML classes (works in Slicer and on PyPI ``slicer-core``).
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_UNDO_BUDGET",
    "SLICER_DEFAULT_UNDO_STATES",
    "applyUndoLimit",
    "dataObjectBytes",
    "editorOf",
    "fullUndoStateBytes",
    "limitUndoStates",
    "saveUndoState",
    "undoHistoryBytes",
    "undoStateBytes",
    "undoStateLimit",
]

DEFAULT_UNDO_BUDGET: int = 1 << 30
"""Default budget for what the undo history keeps: 1 GiB (bytes).

A fixed size rather than a fraction of physical memory: it is the same on every machine (the
number of undo steps a user gets for a video does not depend on which computer opened it, and
tests are reproducible), and it is what Slicer's own default already costs users for a typical
CT: 10 states of a 512 x 512 x 300 uint8 labelmap are 786 MB. Beyond that, on a video the undo
history would outgrow the video and the model. Callers with a memory-aware policy pass their own
``budgetBytes`` (e.g. a share of ``videoimport.availableMemoryBytes()``)."""

SLICER_DEFAULT_UNDO_STATES: int = 10
"""Undo states the Segment Editor module keeps (``Modules/Scripted/SegmentEditor/SegmentEditor.py``
calls ``editor.setMaximumNumberOfUndoStates(10)``; ``vtkSegmentationHistory`` itself defaults to 5)."""

_MINIMUM_USEFUL_STATES = 2  # 1 state crashes Undo (see the module docstring); 2 states = 1 undo step


def dataObjectBytes(dataObject) -> int:
    """Bytes a deep copy of a segment representation object allocates.

    For a ``vtkImageData`` / ``vtkOrientedImageData`` (a labelmap layer): the values of its point
    and cell data arrays (``GetNumberOfValues() * GetDataTypeSize()``, e.g. frames x rows x columns
    x 1 byte for a uint8 layer); the copy allocates exactly these values. For other data objects
    (``vtkPolyData`` closed surfaces, ...): ``GetActualMemorySize()`` (KiB, VTK's rounding) x 1024.
    0 for None.
    """
    if dataObject is None:
        return 0
    if dataObject.IsA("vtkImageData"):
        total = 0
        for data in (dataObject.GetPointData(), dataObject.GetCellData()):
            for index in range(data.GetNumberOfArrays()):
                array = data.GetAbstractArray(index)
                if array is not None:
                    total += int(array.GetNumberOfValues()) * int(array.GetDataTypeSize())
        return total
    return int(dataObject.GetActualMemorySize()) * 1024


def _representationObjects(segmentationNode) -> tuple[dict[str, object], dict[str, list[str]], str]:
    """``(objects, segmentObjects, sourceName)``: the distinct representation data objects of the
    segmentation by address, each segment's object addresses (source representation first), and the
    source representation's name. Shared layers appear once in ``objects``."""
    segmentation = segmentationNode.GetSegmentation()
    sourceName = segmentation.GetSourceRepresentationName()
    objects: dict[str, object] = {}
    segmentObjects: dict[str, list[str]] = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segmentId = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segmentId)
        names: list[str] = []
        segment.GetContainedRepresentationNames(names)
        names.sort(key=lambda name: name != sourceName)  # source representation (the layer) first
        addresses = []
        for name in names:
            dataObject = segment.GetRepresentation(name)
            if dataObject is None:
                continue
            address = dataObject.__this__  # identity of the C++ object (a shared layer has one)
            objects.setdefault(address, dataObject)
            addresses.append(address)
        segmentObjects[segmentId] = addresses
    return objects, segmentObjects, sourceName


def fullUndoStateBytes(segmentationNode) -> int:
    """Bytes one undo state deep-copies when nothing can be shared with the previous state.

    That is the sum of ``dataObjectBytes`` over the DISTINCT representation objects of all segments
    (every labelmap layer once, however many segments share it, plus derived representations such
    as closed surfaces). It happens for the first state of a history, for the first state after the
    segmentation node was changed, and for the first state after an Undo or Redo
    (``vtkSegmentationHistory::RestoreState`` leaves every live object newer than its saved copy).
    0 for a segmentation without segments.
    """
    objects, _, _ = _representationObjects(segmentationNode)
    return sum(dataObjectBytes(dataObject) for dataObject in objects.values())


def undoStateBytes(segmentationNode) -> int:
    """Bytes one Segment Editor undo state deep-copies when ONE segment was changed since the last state.

    Per ``vtkSegmentation::CopySegment`` (``Libs/vtkSegmentationCore/vtkSegmentation.cxx``, called by
    ``vtkSegmentationHistory::SaveState``) a state deep-copies every representation object modified
    since the previous state and shares the others. Changing one segment's voxels (one frame or
    many) modifies the segment's whole labelmap layer (a ``vtkOrientedImageData`` over all frames
    the layer covers, copied once even if other segments share it) and makes Slicer regenerate
    the derived representations (e.g. closed surface) of the segments in that layer. This
    returns the largest such amount over the layers: ``dataObjectBytes(layer)`` plus the derived
    representations of its segments, in bytes (e.g. frames x rows x columns of the layer's
    extent for a uint8 labelmap: 1000 x 480 x 854 = 409,920,000 for a segment present on every
    frame of a 1,000-frame 854x480 video).

    It does not depend on how many frames were changed: there is no per-frame copy. 0 for a
    segmentation without segments. Two cases copy more (both at most ``fullUndoStateBytes``): the
    first state after an Undo / Redo (every object), and a write that moved the segment out of a
    shared layer because its mask covered another segment of that layer
    (``vtkSegmentationModifier``, see ``segments``): then the old and the new layer are both new
    to the next state.
    """
    objects, segmentObjects, sourceName = _representationObjects(segmentationNode)
    segmentation = segmentationNode.GetSegmentation()
    groups: dict[str, set[str]] = {}  # source object (layer) -> objects that change with it
    for segmentId, addresses in segmentObjects.items():
        if not addresses:
            continue
        source = segmentation.GetSegment(segmentId).GetRepresentation(sourceName)
        key = source.__this__ if source is not None else addresses[0]
        groups.setdefault(key, set()).update(addresses)
    return max(
        (sum(dataObjectBytes(objects[address]) for address in group) for group in groups.values()),
        default=0,
    )


def undoHistoryBytes(segmentationNode, numberOfStates: int) -> int:
    """Most bytes an undo history of ``numberOfStates`` states keeps for this segmentation.

    ``numberOfStates x fullUndoStateBytes``: a state holds at most one copy of every object, and
    when the user alternates a click and an Undo every state is a full copy (see the module
    docstring). Without any Undo in between, states after the first only add
    ``undoStateBytes``; the history then keeps ``fullUndoStateBytes + (n - 1) x undoStateBytes``,
    which is the same amount when all segments share one layer.

    While ``SaveState`` runs, the new copy exists before the oldest state is dropped: the peak is
    one state more than this.
    """
    if numberOfStates <= 0:
        return 0
    return int(numberOfStates) * fullUndoStateBytes(segmentationNode)


def undoStateLimit(
    segmentationNode,
    budgetBytes: int = DEFAULT_UNDO_BUDGET,
    maximum: int = SLICER_DEFAULT_UNDO_STATES,
) -> int:
    """How many Segment Editor undo states fit in ``budgetBytes`` for this segmentation.

    The largest ``n <= maximum`` with ``undoHistoryBytes(segmentationNode, n) <= budgetBytes``
    (``n x fullUndoStateBytes``: a bound that holds even when Undo and new clicks alternate).

    Args:
        segmentationNode: the ``vtkMRMLSegmentationNode`` the editor works on, in its current state
            (layers grow as tracking fills frames: call this again before each tracking write).
        budgetBytes: bytes the undo history may keep (default ``DEFAULT_UNDO_BUDGET`` = 1 GiB).
        maximum: the most states wanted (default 10, the Segment Editor's).

    Returns:
        0 when not even 2 states fit: do not save undo states for tracking writes (and set the
        editor's maximum to 0). Never 1: one state gives no undo step, and Undo with it crashes
        Slicer (``vtkSegmentationHistory::RestorePreviousState``). Otherwise ``n`` in
        ``2..maximum`` (``n`` states give ``n - 1`` undo steps); ``maximum`` for an empty
        segmentation.

    Raises:
        ValueError: negative ``budgetBytes`` or ``maximum``.
    """
    if budgetBytes < 0 or maximum < 0:
        raise ValueError(f"budgetBytes and maximum must be >= 0; got {budgetBytes} and {maximum}.")
    full = fullUndoStateBytes(segmentationNode)
    count = int(maximum) if full == 0 else min(int(maximum), int(budgetBytes) // full)
    return count if count >= _MINIMUM_USEFUL_STATES else 0


def limitUndoStates(
    editor,
    segmentationNode,
    budgetBytes: int = DEFAULT_UNDO_BUDGET,
    maximum: int = SLICER_DEFAULT_UNDO_STATES,
) -> int:
    """``applyUndoLimit(editor, undoStateLimit(segmentationNode, budgetBytes, maximum))``; returns the limit.

    Call it before each tracking write and skip ``saveUndoState`` when it returns 0. Lowering the
    maximum drops the oldest states at once (``vtkSegmentationHistory::SetMaximumNumberOfStates``),
    so what the history keeps is back within the budget before the next state is saved; the
    newer states stay (a change of the limit keeps the history: N8).

    Args:
        editor: a ``vtkSlicerSegmentEditorLogic`` or a ``qMRMLSegmentEditorWidget`` working on
            ``segmentationNode`` (see :func:`applyUndoLimit`).
    """
    limit = undoStateLimit(segmentationNode, budgetBytes, maximum)
    applyUndoLimit(editor, limit)
    return limit


def _isEditorLogic(editor) -> bool:
    return hasattr(editor, "SetMaximumNumberOfUndoStates")  # vtkSlicerSegmentEditorLogic (else the Qt widget)


def _property(editor, name: str):
    value = getattr(editor, name)  # PythonQt gives a Q_PROPERTY's value; a plain method otherwise
    return value() if callable(value) else value


def applyUndoLimit(editor, limit: int) -> None:
    """Make ``editor`` keep at most ``limit`` undo states, keeping what its history holds.

    * ``limit == 0``: the maximum becomes 0 and the history is emptied, so Undo has nothing to
      restore, from the buttons or from the Z / Ctrl+Z shortcuts alike (they call
      ``vtkSlicerSegmentEditorLogic::Undo`` through ``qMRMLSegmentEditorWidget::undo``), and
      ``SaveStateForUndo`` saves nothing at maximum 0 (``vtkSlicerSegmentEditorLogic.cxx``). For the
      Qt widget, which has no ``ClearUndoState``, the history is emptied through
      ``setUndoEnabled(True)`` (which calls ``Logic->ClearUndoState()``,
      ``qMRMLSegmentEditorWidget.cxx`` ``setUndoEnabled``) and the buttons are then hidden with
      ``setUndoEnabled(False)``. Emptying matters: lowering the maximum to 0 right after a save
      leaves ``CanUndo()`` true with nothing to restore.
    * ``limit >= 2``: only the maximum changes (``SetMaximumNumberOfUndoStates``, which drops the
      oldest states beyond it and keeps the rest), so a change of the limit never clears the
      history (N8). A widget whose undo was off (limit 0 before: its history is empty) gets its
      buttons back with ``setUndoEnabled(True)``; one whose undo is on is never sent
      ``setUndoEnabled(True)`` again, since that call clears the history.

    Args:
        editor: a ``vtkSlicerSegmentEditorLogic`` (``SetMaximumNumberOfUndoStates``,
            ``ClearUndoState``) or a ``qMRMLSegmentEditorWidget`` (``maximumNumberOfUndoStates``,
            ``undoEnabled`` properties).
        limit: 0 or at least 2 (``undoStateLimit``'s values).

    Raises:
        ValueError: ``limit`` is negative or 1 (one state gives no undo step, and Undo with it
            crashes Slicer: see the module docstring).
    """
    limit = int(limit)
    if limit < 0 or limit == 1:
        raise ValueError(f"An undo limit is 0 (no undo) or at least 2 states; got {limit}.")
    if _isEditorLogic(editor):
        if editor.GetMaximumNumberOfUndoStates() != limit:
            editor.SetMaximumNumberOfUndoStates(limit)
        if limit == 0:
            editor.ClearUndoState()
        return
    if _property(editor, "maximumNumberOfUndoStates") != limit:
        editor.setMaximumNumberOfUndoStates(limit)
    enabled = bool(_property(editor, "undoEnabled"))
    if limit == 0:
        if enabled:
            editor.setUndoEnabled(True)  # ClearUndoState: nothing stays to restore
            editor.setUndoEnabled(False)
    elif not enabled:
        editor.setUndoEnabled(True)  # its history is empty (it was off): clearing it loses nothing


def saveUndoState(editor) -> None:
    """Save one undo state of ``editor``'s segmentation (``SaveStateForUndo`` of a
    ``vtkSlicerSegmentEditorLogic``, ``saveStateForUndo`` of a ``qMRMLSegmentEditorWidget``; the
    scripted effects' ``saveStateForUndo`` reaches the same widget slot)."""
    if _isEditorLogic(editor):
        editor.SaveStateForUndo()
    else:
        editor.saveStateForUndo()


def editorOf(segmentEditorNode, editors):
    """The editor among ``editors`` that works with ``segmentEditorNode`` (the parameter node an
    effect gets from ``scriptedEffect.parameterSetNode()``), or None.

    Each ``qMRMLSegmentEditorWidget`` (the module panel's, the Segment Editor module's) has its
    own ``vtkMRMLSegmentEditorNode`` and its own undo history, so the budget must go to the
    editor whose effect is active (N9). Compares node IDs (``mrmlSegmentEditorNode()`` of a widget,
    ``GetSegmentEditorNode()`` of a ``vtkSlicerSegmentEditorLogic``)."""
    if segmentEditorNode is None:
        return None
    wanted = segmentEditorNode.GetID()
    for editor in editors:
        node = editor.GetSegmentEditorNode() if _isEditorLogic(editor) else editor.mrmlSegmentEditorNode()
        if node is not None and node.GetID() == wanted:
            return editor
    return None
