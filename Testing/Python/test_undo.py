"""The Segment Editor's undo history on a video segmentation, with Slicer's REAL classes (slicer-core).

``vtkSlicerSegmentEditorLogic`` is configured as Slicer's own ``SegmentEditorLogicTest.py`` does
(scene, application logic, a ``vtkMRMLSegmentEditorNode`` observing the segmentation, source
volume); tracking writes go through ``segments.writeSegmentFrames``. What an undo state holds is
measured as the bytes glibc's allocator has handed out (``mallinfo2``: heap in use + mmapped
blocks) before and after ``SaveStateForUndo``, and what the history keeps as the bytes
``ClearUndoState`` gives back. Tolerance: the prediction of ``SAM2SSlicerLib.undo`` must be within
``1 % + 16 KiB per state`` of the measurement (5 % for closed surfaces, whose size VTK reports in
KiB of array capacity). Measured here: 0.2-0.4 % above the prediction for a changed layer
(2.5-4 KiB of vtkSegment clones and metadata per state), 1.3 % (20 KiB) for the first state.

Video: 40 frames of 240 x 320 (rows x columns), two objects tracked on every frame.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import vtk

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core", allow_module_level=True)

from SAM2SSlicerLib import headless, segments, undo  # noqa: E402
from SAM2SSlicerLib.videoimport import IJK_TO_RAS_DIRECTIONS  # noqa: E402

FRAMES, HEIGHT, WIDTH = 40, 240, 320
SCALE = WIDTH / 160  # the objects below are laid out on a 160 x 120 frame
TOLERANCE_FRACTION, TOLERANCE_BYTES = 0.01, 16 * 1024  # per state
TOLERANCE_FRACTION_POLYDATA = 0.05  # GetActualMemorySize: KiB, capacity of each array


# ---------------------------------------------------------------------------------------------
# measuring what the allocator holds
# ---------------------------------------------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def _mallinfo2():
    try:
        function = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return None
    function.restype = _MallInfo2
    return function


_MALLINFO2 = _mallinfo2()
pytestmark = pytest.mark.skipif(_MALLINFO2 is None, reason="needs glibc >= 2.33 (mallinfo2) to measure allocations")


def allocatedBytes() -> int:
    """Bytes malloc has handed out and not taken back (all arenas + mmapped blocks)."""
    info = _MALLINFO2()
    return int(info.uordblks + info.hblkhd)


def assertClose(
    measured: int, predicted: int, what: str, fraction: float = TOLERANCE_FRACTION, states: int = 1
) -> None:
    tolerance = fraction * predicted + TOLERANCE_BYTES * states
    assert abs(measured - predicted) <= tolerance, f"{what}: measured {measured} B, predicted {predicted} B"


# ---------------------------------------------------------------------------------------------
# a video segmentation with a real Segment Editor logic
# ---------------------------------------------------------------------------------------------


def _disc(cx: float, cy: float, r: float) -> np.ndarray:
    """A disc on a 160 x 120 layout, scaled to the frame."""
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    cx, cy, r = cx * SCALE, cy * SCALE, r * SCALE
    return (xx - cx) ** 2 + (yy - cy) ** 2 < r * r


class Editing:
    """Headless scene, a (T, H, W) video, a segmentation with objects ``a`` (large, moves right) and
    ``b`` (smaller) on every frame, and a Segment Editor logic configured as in Slicer.

    ``shared=False``: ``b`` moves left and crosses ``a``, so writing it moved it out of the shared
    layer (two layers, as after tracking two objects that touch). ``shared=True``: ``b`` stays
    apart from ``a`` and both keep the one layer ``AddEmptySegment`` gave them."""

    def __init__(self, shared: bool = False):
        self.headless = headless.createHeadlessScene()  # keep: its logics must outlive the scene's use
        scene = self.headless.scene
        image = vtk.vtkImageData()
        image.SetDimensions(WIDTH, HEIGHT, FRAMES)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
        self.video = slicer.vtkMRMLVectorVolumeNode()
        self.video.SetAndObserveImageData(image)
        self.video.SetIJKToRASDirections(*[v for row in IJK_TO_RAS_DIRECTIONS for v in row])
        scene.AddNode(self.video)
        self.seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "video segmentation")
        self.seg.SetReferenceImageGeometryParameterFromVolumeNode(self.video)
        segmentation = self.seg.GetSegmentation()
        self.a = segmentation.AddEmptySegment("", "a", [1.0, 0.0, 0.0])
        self.b = segmentation.AddEmptySegment("", "b", [0.0, 1.0, 0.0])
        self.masks = {
            self.a: np.stack([_disc(40 + k, 55, 30) for k in range(FRAMES)]),
            self.b: np.stack([_disc(140, 100, 12) if shared else _disc(140 - 2 * k, 70, 16) for k in range(FRAMES)]),
        }
        for segmentId, masks in self.masks.items():  # as after a propagation
            segments.writeSegmentFrames(self.seg, segmentId, self.video, 0, masks)
        assert segmentation.GetNumberOfLayers() == (1 if shared else 2)
        # Configured as Slicer's Modules/Loadable/Segmentations/Testing/Python/SegmentEditorLogicTest.py does.
        self.logic = slicer.vtkSlicerSegmentEditorLogic()
        self.logic.SetMRMLScene(scene)
        self.logic.SetMRMLApplicationLogic(self.headless.applicationLogic)
        self.editorNode = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        self.logic.SetSegmentEditorNode(self.editorNode)
        self.editorNode.SetAndObserveSegmentationNode(self.seg)
        self.logic.SetSourceVolumeNode(self.video)
        self.logic.SetMaximumNumberOfUndoStates(undo.SLICER_DEFAULT_UNDO_STATES)
        assert self.logic.IsSegmentationNodeValid()

    def layerBytes(self, segmentId: str) -> int:
        segment = self.seg.GetSegmentation().GetSegment(segmentId)
        return undo.dataObjectBytes(segment.GetRepresentation("Binary labelmap"))

    def click(self, segmentId: str, frame: int, mask: np.ndarray | None = None) -> None:
        """A preview-like write: one frame's mask into one segment (default: its mask moved 2 columns)."""
        if mask is None:
            mask = np.roll(self.masks[segmentId][frame], 2 if frame % 2 else -2, axis=1)
        segments.writeSegmentFrames(self.seg, segmentId, self.video, frame, mask[None])

    def save(self) -> int:
        """``SaveStateForUndo``; returns the bytes it allocated (what the new state holds)."""
        before = allocatedBytes()
        self.logic.SaveStateForUndo()
        return allocatedBytes() - before

    def historyBytes(self) -> int:
        """Bytes the history keeps: what ``ClearUndoState`` gives back (the history is emptied)."""
        before = allocatedBytes()
        self.logic.ClearUndoState()
        return before - allocatedBytes()

    def frame(self, segmentId: str, frame: int) -> np.ndarray:
        return segments.readSegmentMask(self.seg, segmentId, self.video)[frame]


@pytest.fixture
def editing():
    return Editing()


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


def test_layers_span_the_frames_and_byte_counts_follow_them(editing):
    segmentation = editing.seg.GetSegmentation()
    bytesA, bytesB = editing.layerBytes(editing.a), editing.layerBytes(editing.b)
    extentA = segmentation.GetSegment(editing.a).GetRepresentation("Binary labelmap").GetExtent()
    assert extentA[4:] == (0, FRAMES - 1)  # the layer spans every frame the object is on
    assert bytesA == (extentA[1] - extentA[0] + 1) * (extentA[3] - extentA[2] + 1) * FRAMES  # uint8 labels
    assert bytesA > bytesB > 0
    assert undo.undoStateBytes(editing.seg) == bytesA
    assert undo.fullUndoStateBytes(editing.seg) == bytesA + bytesB
    assert undo.undoHistoryBytes(editing.seg, 3) == 3 * (bytesA + bytesB)
    assert undo.undoHistoryBytes(editing.seg, 0) == 0


def test_undo_state_bytes_predict_what_slicer_copies(editing):
    assertClose(editing.save(), undo.fullUndoStateBytes(editing.seg), "first state (every layer)")
    editing.click(editing.a, 5)  # one frame of the larger object: its whole layer is copied
    assertClose(editing.save(), undo.undoStateBytes(editing.seg), "state after a one-frame write of 'a'")
    assert editing.save() < TOLERANCE_BYTES  # nothing changed: Slicer saves no new state
    editing.click(editing.b, 6)  # the other layer only
    assertClose(editing.save(), editing.layerBytes(editing.b), "state after a one-frame write of 'b'")
    # Many frames cost the same as one: the copy unit is the layer, never the frames.
    segments.writeSegmentFrames(editing.seg, editing.a, editing.video, 0, editing.masks[editing.a][:, ::-1, :])
    assertClose(editing.save(), undo.undoStateBytes(editing.seg), "state after a 40-frame write of 'a'")
    # After an Undo the live objects are fresh copies: the next state copies every layer again.
    editing.click(editing.a, 7)
    editing.logic.Undo()
    editing.click(editing.a, 8)
    assertClose(editing.save(), undo.fullUndoStateBytes(editing.seg), "first state after an Undo")


def test_shared_layer_is_copied_once_and_a_separating_write_copies_both_layers():
    editing = Editing(shared=True)
    segmentation = editing.seg.GetSegmentation()
    layer = undo.dataObjectBytes(segmentation.GetLayerDataObject(0))
    assert undo.undoStateBytes(editing.seg) == undo.fullUndoStateBytes(editing.seg) == layer
    assertClose(editing.save(), layer, "first state, shared layer")
    editing.click(editing.b, 3)
    assert segmentation.GetNumberOfLayers() == 1
    assertClose(editing.save(), layer, "state after a write of one segment of the shared layer")
    # A mask of 'b' over 'a' moves 'b' to a layer of its own (vtkSegmentationModifier): both the old
    # and the new layer are new objects for the next state, i.e. every layer there is.
    editing.click(editing.b, 4, _disc(40, 55, 12) | editing.masks[editing.b][4])
    assert segmentation.GetNumberOfLayers() == 2
    assertClose(editing.save(), undo.fullUndoStateBytes(editing.seg), "state after 'b' left the shared layer")


def test_derived_representations_are_counted(editing):
    editing.seg.CreateClosedSurfaceRepresentation()  # as when the segmentation is shown in 3D
    full = undo.fullUndoStateBytes(editing.seg)
    assert full > editing.layerBytes(editing.a) + editing.layerBytes(editing.b) + TOLERANCE_BYTES
    assertClose(editing.save(), full, "first state with closed surfaces", TOLERANCE_FRACTION_POLYDATA)
    editing.click(editing.a, 4)  # its surface is regenerated and copied with its layer
    measured = editing.save()
    assert measured > editing.layerBytes(editing.a) + TOLERANCE_BYTES
    assertClose(
        measured,
        undo.undoStateBytes(editing.seg),
        "state after a write, with closed surfaces",
        TOLERANCE_FRACTION_POLYDATA,
    )


@pytest.mark.parametrize("interleaveUndo", [False, True])
def test_limit_keeps_the_history_within_the_budget(editing, interleaveUndo):
    full = undo.fullUndoStateBytes(editing.seg)
    budget = int(3.5 * full)
    assert undo.undoStateLimit(editing.seg, budget) == 3
    baseline, liveBaseline = allocatedBytes(), undo.fullUndoStateBytes(editing.seg)

    def checkKept(when: str) -> None:
        # Allocated since the start, less the growth of the live segmentation itself.
        kept = allocatedBytes() - baseline - (undo.fullUndoStateBytes(editing.seg) - liveBaseline)
        assert kept <= budget + 3 * TOLERANCE_BYTES, f"{when}: {kept} B kept, budget {budget} B"

    def click(segmentId: str, frame: int) -> int:
        """What the Qt module does for a tracking write; returns the bytes the saved state took."""
        taken = editing.save() if undo.limitUndoStates(editing.logic, editing.seg, budget) else 0
        assert editing.logic.GetMaximumNumberOfUndoStates() == 3
        editing.click(segmentId, frame)
        checkKept(f"click on frame {frame}")
        return taken

    for frame in range(10):
        taken = click(editing.a if frame % 3 else editing.b, frame)
        if interleaveUndo:
            # "click, Undo, click": after an Undo every saved state is a full copy, so the bound
            # must count full states (fullUndoStateBytes), not one changed layer per state.
            assertClose(taken, undo.fullUndoStateBytes(editing.seg), f"state before click {frame}")
            editing.logic.Undo()
            checkKept(f"Undo after frame {frame}")
            click(editing.a, frame + 20)
    kept = editing.historyBytes()
    assert kept <= budget
    assert kept <= undo.undoHistoryBytes(editing.seg, 3) + 3 * TOLERANCE_BYTES
    if not interleaveUndo:
        predicted = undo.fullUndoStateBytes(editing.seg) + 2 * undo.undoStateBytes(editing.seg)
        assertClose(kept, predicted, "3 states without Undo: 'a' changed last", states=3)


def test_slicer_default_exceeds_the_same_budget(editing):
    """The defect: with Slicer's 10 states, 10 one-frame clicks keep 10 copies of the layer."""
    budget = int(3.5 * undo.fullUndoStateBytes(editing.seg))
    for click in range(10):
        editing.save()
        editing.click(editing.a, click)
    kept = editing.historyBytes()
    predicted = undo.fullUndoStateBytes(editing.seg) + 9 * undo.undoStateBytes(editing.seg)
    assertClose(kept, predicted, "10 default states without Undo", states=10)
    assert kept > 1.5 * budget


def test_undo_restores_the_previous_frame_with_the_limit(editing):
    budget = 2 * undo.fullUndoStateBytes(editing.seg)
    assert undo.limitUndoStates(editing.logic, editing.seg, budget) == 2  # 2 states = 1 undo step
    before = editing.frame(editing.a, 10)
    np.testing.assert_array_equal(before, editing.masks[editing.a][10])
    editing.save()
    editing.click(editing.a, 10, _disc(100, 60, 15))
    assert not np.array_equal(editing.frame(editing.a, 10), before)
    assert editing.logic.CanUndo()
    editing.logic.Undo()
    np.testing.assert_array_equal(editing.frame(editing.a, 10), before)
    np.testing.assert_array_equal(editing.frame(editing.b, 10), editing.masks[editing.b][10])
    assert not editing.logic.CanUndo()  # 2 states: one undo step
    # A click after the Undo is undone as well (the redo state was dropped, not the undo).
    editing.save()
    editing.click(editing.a, 11, np.zeros((HEIGHT, WIDTH), dtype=bool))
    editing.logic.Undo()
    np.testing.assert_array_equal(editing.frame(editing.a, 11), editing.masks[editing.a][11])


def test_zero_means_no_states_and_one_is_never_returned(editing):
    full = undo.fullUndoStateBytes(editing.seg)
    assert undo.undoStateLimit(editing.seg, full - 1) == 0
    assert undo.undoStateLimit(editing.seg, int(1.9 * full)) == 0  # 1 state: no undo step (and Undo crashes)
    assert undo.undoStateLimit(editing.seg, 2 * full) == 2
    assert undo.undoStateLimit(editing.seg, 100 * full) == undo.SLICER_DEFAULT_UNDO_STATES
    assert undo.undoStateLimit(editing.seg, 100 * full, maximum=4) == 4
    editing.save()  # a state exists; lowering to 0 must not leave a phantom undo step
    assert undo.limitUndoStates(editing.logic, editing.seg, full - 1) == 0
    assert editing.logic.GetMaximumNumberOfUndoStates() == 0
    assert not editing.logic.CanUndo()
    before = allocatedBytes()
    assert not editing.logic.SaveStateForUndo()  # Slicer saves nothing at maximum 0
    assert allocatedBytes() - before < TOLERANCE_BYTES
    with pytest.raises(ValueError):
        undo.undoStateLimit(editing.seg, -1)


def test_empty_segmentation_allows_the_maximum():
    scene = headless.createHeadlessScene()
    seg = scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert undo.fullUndoStateBytes(seg) == undo.undoStateBytes(seg) == 0
    assert undo.undoStateLimit(seg, 0) == undo.SLICER_DEFAULT_UNDO_STATES
    assert undo.dataObjectBytes(None) == 0


# ---------------------------------------------------------------------------------------------
# issue 23, N7-N9: undo that keeps its promises (vtkSlicerSegmentEditorLogic of slicer-core 5.11)
# ---------------------------------------------------------------------------------------------


def _propagate(editing: Editing, segmentId: str) -> np.ndarray:
    """A propagation-like write: every frame of one segment (its masks shifted 3 columns)."""
    masks = np.roll(editing.masks[segmentId], 3, axis=2)
    segments.writeSegmentFrames(editing.seg, segmentId, editing.video, 0, masks)
    return masks


def _readAll(editing: Editing, segmentId: str) -> np.ndarray:
    return segments.readSegmentMask(editing.seg, segmentId, editing.video)


def test_no_undo_means_maximum_zero_so_undo_and_its_shortcuts_keep_the_propagation(editing):
    """N7: with no undo state in the budget the editor's maximum is 0 and its history empty, so
    Undo (what the Z / Ctrl+Z shortcuts call: qMRMLSegmentEditorWidget::undo -> Logic->Undo) changes
    nothing, and a later limit > 0 does not bring back a state that reverts the propagation."""
    full = undo.fullUndoStateBytes(editing.seg)
    assert undo.limitUndoStates(editing.logic, editing.seg, 3 * full) == 3
    editing.save()  # a state from before undo went off
    editing.click(editing.a, 2)
    assert editing.logic.CanUndo()
    assert undo.limitUndoStates(editing.logic, editing.seg, full - 1) == 0
    assert editing.logic.GetMaximumNumberOfUndoStates() == 0 and not editing.logic.CanUndo()
    propagated = _propagate(editing, editing.a)  # the write that follows: no state saved
    undo.saveUndoState(editing.logic)
    editing.logic.Undo()  # Z
    np.testing.assert_array_equal(_readAll(editing, editing.a), propagated)
    # The budget grows again (e.g. a shorter segmentation): undo comes back, the propagation stays.
    assert undo.limitUndoStates(editing.logic, editing.seg, 3 * full) == 3
    undo.saveUndoState(editing.logic)
    editing.click(editing.a, 7, np.zeros((HEIGHT, WIDTH), dtype=bool))
    editing.logic.Undo()
    np.testing.assert_array_equal(_readAll(editing, editing.a), propagated)
    assert not editing.logic.CanUndo()


def test_a_limit_change_keeps_the_undo_history(editing):
    """N8: a change of the limit only changes the maximum: the states kept stay undoable (raising
    keeps all, lowering drops only the oldest)."""
    full = undo.fullUndoStateBytes(editing.seg)
    assert undo.limitUndoStates(editing.logic, editing.seg, 10 * full) == 10
    before = {frame: editing.frame(editing.a, frame) for frame in (3, 4, 5)}
    for frame in (3, 4, 5):
        undo.saveUndoState(editing.logic)
        editing.click(editing.a, frame, np.zeros((HEIGHT, WIDTH), dtype=bool))
    assert undo.limitUndoStates(editing.logic, editing.seg, 4 * full) == 4  # lower, still >= 3 states
    assert editing.logic.CanUndo()
    editing.logic.Undo()
    np.testing.assert_array_equal(editing.frame(editing.a, 5), before[5])
    # Lower to 3 of the 4 states (the Undo saved the current one): only the oldest is dropped.
    assert undo.limitUndoStates(editing.logic, editing.seg, 3 * full) == 3
    assert editing.logic.CanUndo()
    editing.logic.Undo()
    np.testing.assert_array_equal(editing.frame(editing.a, 4), before[4])
    assert not editing.frame(editing.a, 3).any()  # its state was the oldest: dropped, as documented


def test_the_budget_goes_to_the_editor_that_owns_the_effect(editing):
    """N9: the Segment Editor module's editor (its own node, its own history, 10 states) gets the
    limit when the SAM2S effect is active there; the panel's editor is left alone."""
    scene = editing.headless.scene
    moduleNode = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    moduleEditor = slicer.vtkSlicerSegmentEditorLogic()
    moduleEditor.SetMRMLScene(scene)
    moduleEditor.SetMRMLApplicationLogic(editing.headless.applicationLogic)
    moduleEditor.SetSegmentEditorNode(moduleNode)
    moduleNode.SetAndObserveSegmentationNode(editing.seg)
    moduleEditor.SetSourceVolumeNode(editing.video)
    moduleEditor.SetMaximumNumberOfUndoStates(undo.SLICER_DEFAULT_UNDO_STATES)
    editors = [editing.logic, moduleEditor]
    assert undo.editorOf(moduleNode, editors) is moduleEditor
    assert undo.editorOf(editing.editorNode, editors) is editing.logic
    assert undo.editorOf(scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode"), editors) is None
    budget = 3 * undo.fullUndoStateBytes(editing.seg)
    assert undo.limitUndoStates(undo.editorOf(moduleNode, editors), editing.seg, budget) == 3
    assert moduleEditor.GetMaximumNumberOfUndoStates() == 3
    assert editing.logic.GetMaximumNumberOfUndoStates() == undo.SLICER_DEFAULT_UNDO_STATES
    with pytest.raises(ValueError, match="at least 2"):
        undo.applyUndoLimit(moduleEditor, 1)
