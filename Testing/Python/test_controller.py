"""The SAM2S panel and effect behaviour (``SAM2SSlicerLib.controller``), headless on real slicer-core
MRML with the real engine in this process (random weights): what clicks and keys do, what is
enabled, busy / cancel, the install guard, saved settings, the first-use choice, cleanup when the
effect is deselected or the module left, what is selected after New, and the README's shortcut
table against the effect's key handling. No fake Slicer, no fake Qt: the Qt shell only forwards
its events to the calls made here.
"""

from __future__ import annotations

import json
import re
import threading

import numpy as np
import pytest
import vtk

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core", allow_module_level=True)

from conftest import ROOT, random_model  # noqa: E402
from SAM2SSlicerLib import ModelSettings, headless  # noqa: E402
from SAM2SSlicerLib.backends import InProcessBackend  # noqa: E402
from SAM2SSlicerLib.controller import (  # noqa: E402
    SHORTCUTS,
    TOOL_BOX,
    TOOL_POINT,
    DependencyGate,
    JsonSettingsStore,
    SAM2SController,
    frameOfSlice,
    pixelOfRas,
)
from SAM2SSlicerLib.synthetic import SyntheticClip  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return random_model("sam2.1_hiera_t", 64)


@pytest.fixture(scope="module")
def clip():
    source = SyntheticClip(num_frames=6, height=48, width=64, num_objects=2, seed=3)
    frames = np.stack([source.get(i) for i in range(6)])
    centres = []
    for objectIndex in range(2):
        ys, xs = np.nonzero(source.mask(0, objectIndex))
        centres.append((float(xs.mean()), float(ys.mean())))
    return frames, centres


class Backends:
    """The ``backendFactory`` of the tests: the engine in this process, recording what was asked."""

    def __init__(self):
        self.calls = []

    def __call__(self, url, token):
        self.calls.append((url, token))
        return InProcessBackend()


def _controller(tmp_path, model=None, store=None, dependencies=None, backends=None):
    logic = headless.createTrackingLogic()
    store = store or JsonSettingsStore(tmp_path / "settings.json")
    controller = SAM2SController(logic, store, dependencies=dependencies, backendFactory=backends or Backends())
    if model is not None:
        logic.setModel(model)
    messages = []
    controller.statusListeners.append(messages.append)
    controller.messages = messages
    return controller


def _editorNode(logic):
    return logic.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")


def _ready(tmp_path, model, clip, **options):
    """A controller with the clip imported, a segmentation with "Object 1" selected, the effect active."""
    controller = _controller(tmp_path, model, **options)
    editor = _editorNode(controller.logic)
    controller.importVideo(clip[0])
    controller.createSegmentation(editor)
    controller.effectActivated(editor)
    return controller, editor


def _run(controller):
    while controller.runner.isRunning():
        controller.runner.tick()


def _pointCount(logic):
    return sum(len(p.points) for s in logic.promptedSegmentIds() for p in logic.getPrompts(s).values())


# ---------------------------------------------------------------------------------------------
# defects 1, 3, 9: clicks, cleanup on exit, New selects
# ---------------------------------------------------------------------------------------------


def test_new_segmentation_and_new_segment_are_selected_so_the_first_click_prompts(tmp_path, model, clip):
    controller, editor = _ready(tmp_path, model, clip)
    segmentation = controller.logic.segmentationNode
    first = editor.GetSelectedSegmentID()
    assert first and segmentation.GetSegmentation().GetSegment(first).GetName() == "Object 1"
    assert controller.click((*clip[1][0], 0), False, editor) is True
    _run(controller)
    assert controller.logic.getPrompts(first)[0].points == (clip[1][0],)
    assert controller.logic.segmentMask(first)[0].any()  # the preview wrote frame 0
    second = controller.newSegment(editor)
    assert editor.GetSelectedSegmentID() == second != first
    assert segmentation.GetSegmentation().GetSegment(second).GetName() == "Object 2"
    assert controller.click((*clip[1][1], 2), True, editor) is True
    _run(controller)
    assert controller.logic.getPrompts(second)[2].labels == (0,)


def test_deselected_effect_and_left_module_take_no_clicks_or_keys(tmp_path, model, clip):
    controller, editor = _ready(tmp_path, model, clip)
    assert controller.click((*clip[1][0], 0), False, editor)
    _run(controller)
    points = _pointCount(controller.logic)
    controller.setTool(TOOL_BOX)
    assert controller.boxPress((1.0, 1.0, 0)) and controller.isDraggingBox()
    controller.effectDeactivated()  # Escape / another effect: SegmentEditor.py's exit() calls setActiveEffect(None)
    assert not controller.isDraggingBox()
    for event in (
        lambda: controller.click((*clip[1][0], 1), False, editor),
        lambda: controller.boxPress((1.0, 1.0, 1)),
        lambda: controller.boxRelease((9.0, 9.0, 1), editor),
        lambda: controller.keyPress("Return", False, False, 0, editor),
        lambda: controller.keyPress("Delete", False, False, 0, editor),
        lambda: controller.keyPress("x", False, False, 0, editor),
    ):
        assert event() is False  # left to other modules: markups, ROI, window/level
    assert _pointCount(controller.logic) == points and not controller.runner.isRunning()
    assert controller.tool == TOOL_BOX
    controller.effectActivated(editor)
    controller.moduleExited()
    assert controller.click((*clip[1][0], 1), False, editor) is False
    assert _pointCount(controller.logic) == points


def test_click_errors_are_messages_and_the_click_is_still_taken(tmp_path, model, clip):
    controller, editor = _ready(tmp_path, model, clip)
    logic = controller.logic
    assert controller.click(None, False, editor) is True
    assert "inside the video" in controller.lastStatus
    assert controller.click((5.0, 5.0, 99), False, editor) is True  # frame outside the video
    assert "99" in controller.lastStatus and _pointCount(logic) == 0
    editor.SetSelectedSegmentID(None)
    assert controller.click((5.0, 5.0, 0), False, editor) is True
    assert "Select a segment" in controller.lastStatus and _pointCount(logic) == 0
    editor.SetSelectedSegmentID(logic.segmentationNode.GetSegmentation().GetNthSegmentID(0))
    assert controller.boxPress((5.0, 5.0, 0)) and controller.boxRelease((5.4, 9.0, 0), editor)
    assert "box" in controller.lastStatus.lower() and not logic.promptedSegmentIds()  # < 1 pixel wide
    assert controller.boxPress((5.0, 5.0, 0)) and controller.boxRelease((20.0, 20.0, 1), editor)
    assert "one frame" in controller.lastStatus
    # busy: a propagation started and not yet written
    assert controller.click((*clip[1][0], 0), False, editor)
    _run(controller)
    job = controller.propagate("forward", 0, editor)
    assert job is not None and controller.isBusy()
    before = _pointCount(logic)
    assert controller.click((*clip[1][0], 3), False, editor) is True
    assert "Tracking is running" in controller.lastStatus and _pointCount(logic) == before
    _run(controller)
    assert not controller.isBusy()


# ---------------------------------------------------------------------------------------------
# defect 4: install guard; defect 17 and 5: first use and saved settings
# ---------------------------------------------------------------------------------------------


def test_install_never_runs_twice_or_from_a_click(tmp_path, model, clip):
    installed = {"done": False, "calls": 0, "reentry": None}

    def install():  # stands for ensureDependencies: Slicer processes events while pip runs
        installed["calls"] += 1
        installed["reentry"] = controller.installDependencies()  # a second click / key arriving meanwhile
        installed["done"] = True

    gate = DependencyGate(lambda: installed["done"], install)
    controller = _controller(tmp_path, model, dependencies=gate)
    editor = _editorNode(controller.logic)
    controller.importVideo(clip[0])
    controller.createSegmentation(editor)
    controller.effectActive = True  # as if activated before: clicks must not start the install
    assert controller.click((*clip[1][0], 0), False, editor) is True
    assert installed["calls"] == 0 and "Install" in controller.lastStatus and not controller.runner.isRunning()
    assert controller.keyPress("Return", False, False, 0, editor) is True and installed["calls"] == 0
    assert controller.actions(editor)["install"] is True
    controller.effectActivated(editor)  # activate() installs (asks first in Slicer)
    assert installed["calls"] == 1 and installed["reentry"] is False
    assert gate.state == "ready" and controller.installDependencies() is True and installed["calls"] == 1
    assert controller.actions(editor)["install"] is False

    failing = DependencyGate(lambda: False, lambda: (_ for _ in ()).throw(RuntimeError("declined")))
    other = _controller(tmp_path, dependencies=failing)
    assert other.installDependencies() is False and failing.state == "failed" and "declined" in other.lastStatus


def test_importing_a_video_installs_only_the_import_packages(tmp_path, clip):
    """N19: an import asks for PyAV and OpenCV only, never for PyTorch or the server packages; the
    tracking install is left for when tracking is asked for."""
    from SAM2SSlicerLib.dependencies import requirementsFor

    names = {
        kind: {r.split(">")[0].split("<")[0].strip() for r in requirementsFor(kind)}
        for kind in ("import", "remote", "local")
    }
    assert names["import"] == {"av", "opencv-python-headless"}
    assert "torch" in names["local"] and not {"torch", "fastapi", "uvicorn"} & (names["import"] | names["remote"])
    with pytest.raises(ValueError, match="purpose"):
        requirementsFor("gpu")
    calls = []
    tracking = DependencyGate(lambda: False, lambda: calls.append("tracking"))
    importing = DependencyGate(lambda: "import" in calls, lambda: calls.append("import"))
    logic = headless.createTrackingLogic()
    controller = SAM2SController(
        logic, JsonSettingsStore(tmp_path / "s.json"), dependencies=tracking, importDependencies=importing
    )
    assert controller.installImportDependencies() is True and calls == ["import"]
    controller.importVideo(clip[0])  # what the panel's import does after the gate
    assert logic.videoNode is not None and calls == ["import"] and not tracking.isReady()
    failing = DependencyGate(lambda: False, lambda: (_ for _ in ()).throw(RuntimeError("declined")))
    other = SAM2SController(logic, JsonSettingsStore(tmp_path / "t.json"), importDependencies=failing)
    assert other.installImportDependencies() is False and "declined" in other.lastStatus


def test_first_use_question_and_saved_settings_reach_a_new_session(tmp_path, monkeypatch):
    store = JsonSettingsStore(tmp_path / "settings.json")
    backends = Backends()
    first = _controller(tmp_path, store=store, backends=backends)
    assert first.needsComputeChoice() and backends.calls == []
    with pytest.raises(ValueError, match="http"):
        first.setCompute("server", "gpu-box:8000", "t" * 40)
    with pytest.raises(ValueError, match="token"):
        first.setCompute("server", "http://gpu-box:8000", "")
    assert first.needsComputeChoice() and backends.calls == []  # nothing saved or applied
    first.setCompute("server", " http://gpu-box:8000 ", "t" * 40)
    assert backends.calls == [("http://gpu-box:8000", "t" * 40)] and first.isRemote()
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"x")
    settings = ModelSettings(imageSize=512, memory="divemem", device="cpu", checkpoint=str(checkpoint))
    first.setModelSettings(settings)

    saved = (tmp_path / "settings.json").read_text()
    assert "t" * 40 not in saved and "http://gpu-box:8000" in saved  # the token is never saved (N15)

    # a new Slicer session, the effect used from the Segment Editor module: same store, new controller;
    # the token comes from $SAM2S_SERVER_TOKEN (else the user is asked for it again)
    monkeypatch.delenv("SAM2S_SERVER_TOKEN", raising=False)
    asked = _controller(tmp_path, store=JsonSettingsStore(tmp_path / "settings.json"), backends=Backends())
    assert asked.isRemote() and asked.serverToken == "" and "token" in asked.lastStatus
    monkeypatch.setenv("SAM2S_SERVER_TOKEN", "e" * 40)
    second_backends = Backends()
    second = _controller(tmp_path, store=JsonSettingsStore(tmp_path / "settings.json"), backends=second_backends)
    assert not second.needsComputeChoice()
    assert second.logic.settings == settings
    assert second_backends.calls == [("http://gpu-box:8000", "e" * 40)] and second.serverToken == "e" * 40
    second.setCompute("local")
    assert second_backends.calls[-1] == (None, "") and not second.isRemote()
    assert json.loads((tmp_path / "settings.json").read_text())["SAM2SSlicer/ServerToken"] == ""

    store = JsonSettingsStore(tmp_path / "settings.json")  # a token an older version saved: used once, removed
    store.setValue("SAM2SSlicer/ServerToken", "o" * 40)
    store.setValue("SAM2SSlicer/ComputeMode", "server")
    store.setValue("SAM2SSlicer/ServerUrl", "http://gpu-box:8000")
    older = _controller(tmp_path, store=store, backends=Backends())
    assert older.serverToken == "o" * 40 and "o" * 40 not in (tmp_path / "settings.json").read_text()
    store.setValue("SAM2SSlicer/ComputeMode", "local")

    checkpoint.unlink()  # the saved checkpoint is gone: defaults stay, and the user is told
    third = _controller(tmp_path, store=JsonSettingsStore(tmp_path / "settings.json"))
    assert third.logic.settings == ModelSettings() and "not used" in third.lastStatus


# ---------------------------------------------------------------------------------------------
# defects 6, 8, 14: import cancel, the editor node follows the logic, the frame range
# ---------------------------------------------------------------------------------------------


def test_cancelled_import_is_a_message_not_an_error(tmp_path, clip):
    controller = _controller(tmp_path)
    volumes = controller.logic.scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode")
    cancel = threading.Event()
    result = controller.importVideo(clip[0], progressCallback=lambda done, total: cancel.set(), cancelEvent=cancel)
    assert result is None and "cancelled" in controller.lastStatus
    assert controller.logic.scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode") == volumes
    assert controller.logic.videoNode is None


def test_editor_node_follows_the_logic_and_a_longer_video_gets_its_last_frame(tmp_path, clip):
    controller = _controller(tmp_path)
    editor = _editorNode(controller.logic)
    short = controller.importVideo(clip[0][:4])
    controller.bindEditorNode(editor)
    assert (controller.firstFrame, controller.lastFrame) == (0, 3)
    controller.setFrameRange(1, 2)
    segmentation = controller.createSegmentation(editor)
    assert editor.GetSegmentationNode() is segmentation and editor.GetSourceVolumeNode() is short
    long = controller.importVideo(np.concatenate([clip[0], clip[0]]))
    controller.setVideoNode(long, editor)
    assert (controller.firstFrame, controller.lastFrame) == (0, 11)
    assert editor.GetSourceVolumeNode() is long
    with pytest.raises(ValueError, match="0..11"):
        controller.setFrameRange(3, 12)
    other = controller.logic.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    controller.setSegmentationNode(other, editor)
    assert editor.GetSegmentationNode() is other and editor.GetSelectedSegmentID() in (None, "")


# ---------------------------------------------------------------------------------------------
# defects 7 and 10: busy, cancel, Escape, a failing listener
# ---------------------------------------------------------------------------------------------


def test_escape_stops_tracking_started_from_the_effect_not_from_the_panel(tmp_path, model, clip):
    controller, editor = _ready(tmp_path, model, clip)
    controller.click((*clip[1][0], 0), False, editor)
    _run(controller)
    job = controller.propagate("forward", 0, editor, origin="effect")
    assert job is not None and not job.cancelEvent.is_set()
    controller.effectDeactivated()  # Escape: qMRMLSegmentEditorWidget deselects the effect
    assert job.cancelEvent.is_set() and "deselected" in controller.lastStatus
    _run(controller)
    controller.effectActivated(editor)
    job = controller.propagate("forward", 0, editor, origin="panel")
    controller.effectDeactivated()
    assert not job.cancelEvent.is_set()  # the panel shows its progress and Cancel: it goes on
    _run(controller)
    assert job.status == "done"


def test_a_failing_listener_never_jams_the_runner_and_a_second_propagate_is_refused(tmp_path, model, clip):
    controller, editor = _ready(tmp_path, model, clip)
    controller.click((*clip[1][0], 0), False, editor)
    _run(controller)

    def broken(job, finished):
        raise RuntimeError("a broken progress bar")

    controller.runner.listeners.append(broken)
    first = controller.propagate("forward", 0, editor)
    assert first is not None and controller.actions(editor)["cancel"]
    assert controller.propagate("backward", 5, editor) is None  # refused, the first job stays
    assert "running" in controller.lastStatus and controller.runner.job is first
    with pytest.raises(RuntimeError, match="running"):
        controller.logic.createTrackingJob(startFrame=0)
    _run(controller)
    assert first.status == "done" and not controller.runner.isRunning()
    second = controller.propagate("backward", 5, editor)
    assert second is not None and second is not first
    _run(controller)
    assert second.status == "done" and controller.actions(editor)["propagate"]


def test_actions_enabled_follow_the_state(tmp_path, model, clip):
    controller = _controller(tmp_path, model)
    editor = _editorNode(controller.logic)
    actions = controller.actions(editor)
    assert actions["import"] and not actions["createSegmentation"] and not actions["propagate"]
    controller.importVideo(clip[0])
    controller.bindEditorNode(editor)
    actions = controller.actions(editor)
    assert actions["createSegmentation"] and not actions["prompt"] and not actions["export"]
    controller.createSegmentation(editor)
    actions = controller.actions(editor)
    assert actions["prompt"] and actions["propagate"] and actions["export"] and actions["clearFrame"]
    assert not actions["cancel"]
    controller.effectActivated(editor)
    controller.click((*clip[1][0], 0), False, editor)
    _run(controller)
    controller.propagate("forward", 0, editor)
    actions = controller.actions(editor)
    assert actions["cancel"] and not actions["propagate"] and not actions["import"] and not actions["prompt"]
    assert not actions["settings"] and not actions["export"]
    _run(controller)
    assert controller.actions(editor)["propagate"]


def _segmentEditorLogic(controller, editorNode):
    """Slicer's real ``vtkSlicerSegmentEditorLogic`` on the controller's scene and editor node,
    configured as Slicer's SegmentEditorLogicTest.py does (the logic inside the Qt editor widget)."""
    appLogic = slicer.vtkSlicerApplicationLogic()
    appLogic.SetMRMLScene(controller.logic.scene)
    editorLogic = slicer.vtkSlicerSegmentEditorLogic()
    editorLogic.SetMRMLScene(controller.logic.scene)
    editorLogic.SetMRMLApplicationLogic(appLogic)
    editorLogic.SetSegmentEditorNode(editorNode)
    editorLogic.SetSourceVolumeNode(controller.logic.videoNode)
    editorLogic.SetMaximumNumberOfUndoStates(10)
    editorLogic.appLogic = appLogic  # kept alive with it
    assert editorLogic.IsSegmentationNodeValid()
    return editorLogic


def test_undo_is_saved_once_per_job_and_bounded_by_the_budget(tmp_path, model, clip):
    from SAM2SSlicerLib import undo

    controller, editor = _ready(tmp_path, model, clip)
    editorLogic = _segmentEditorLogic(controller, editor)
    controller.undoEditor = editorLogic
    segmentId = editor.GetSelectedSegmentID()
    controller.click((*clip[1][0], 0), False, editor)
    _run(controller)
    preview = controller.logic.segmentMask(segmentId).copy()
    assert preview[0].any() and editorLogic.CanUndo()
    assert controller.undoLimit == undo.undoStateLimit(controller.logic.segmentationNode) == 10
    controller.propagate("forward", 0, editor)
    _run(controller)
    assert controller.logic.segmentMask(segmentId)[1:].any()
    editorLogic.Undo()  # one Undo reverts the whole propagation (one state per job)
    np.testing.assert_array_equal(controller.logic.segmentMask(segmentId), preview)
    editorLogic.Undo()
    assert not controller.logic.segmentMask(segmentId).any()  # and the next one the click
    editorLogic.Redo()
    editorLogic.Redo()
    propagated = controller.logic.segmentMask(segmentId).copy()
    # A budget below one state (a long video): the editor's maximum is 0, the user is told, and
    # Undo (the Z shortcut) cannot revert the propagation (N7).
    controller.undoBudget = undo.fullUndoStateBytes(controller.logic.segmentationNode) - 1
    controller.click((*clip[1][0], 3), False, editor)
    _run(controller)
    assert editorLogic.GetMaximumNumberOfUndoStates() == 0 and not editorLogic.CanUndo()
    assert controller.undoLimit == 0 and "Undo is off" in controller.messages[-2]
    afterClick = controller.logic.segmentMask(segmentId).copy()
    assert afterClick[:3].sum() == propagated[:3].sum()
    editorLogic.Undo()
    np.testing.assert_array_equal(controller.logic.segmentMask(segmentId), afterClick)
    controller.undoBudget = 3 * undo.fullUndoStateBytes(controller.logic.segmentationNode)
    controller.click((*clip[1][0], 4), False, editor)
    _run(controller)
    assert controller.undoLimit == 3 and editorLogic.GetMaximumNumberOfUndoStates() == 3
    editorLogic.Undo()
    np.testing.assert_array_equal(controller.logic.segmentMask(segmentId), afterClick)


def test_the_undo_budget_goes_to_the_editor_that_owns_the_effect(tmp_path, model, clip):
    """N9: the effect active in the Segment Editor module's editor (its own node and history)
    makes that editor the controller's ``undoEditor``; the panel's editor keeps its history."""
    from SAM2SSlicerLib import undo

    controller, panelNode = _ready(tmp_path, model, clip)
    panelEditor = _segmentEditorLogic(controller, panelNode)
    moduleNode = _editorNode(controller.logic)
    moduleNode.SetAndObserveSegmentationNode(controller.logic.segmentationNode)
    moduleNode.SetSelectedSegmentID(panelNode.GetSelectedSegmentID())
    moduleEditor = _segmentEditorLogic(controller, moduleNode)
    controller.click((*clip[1][0], 0), False, panelNode)  # a mask on frame 0 first: states have a size
    _run(controller)
    controller.undoBudget = int(2.5 * undo.fullUndoStateBytes(controller.logic.segmentationNode))
    # what SegmentEditorEffect.activate does in the Segment Editor module:
    controller.undoEditor = undo.editorOf(moduleNode, [panelEditor, moduleEditor])
    controller.effectActivated(moduleNode)
    controller.click((*clip[1][0], 0), False, moduleNode)
    _run(controller)
    assert controller.undoEditor is moduleEditor
    assert moduleEditor.GetMaximumNumberOfUndoStates() == 2 and moduleEditor.CanUndo()
    assert panelEditor.GetMaximumNumberOfUndoStates() == 10 and not panelEditor.CanUndo()


# ---------------------------------------------------------------------------------------------
# defect 16: a new object mid-video, propagating only what changed
# ---------------------------------------------------------------------------------------------


def test_propagating_changed_segments_leaves_the_others_untouched(tmp_path, model, clip):
    controller, editor = _ready(tmp_path, model, clip)
    logic = controller.logic
    first = editor.GetSelectedSegmentID()
    controller.click((*clip[1][0], 0), False, editor)
    _run(controller)
    assert controller.changedSegmentIds() == [first]
    controller.propagate("forward", 0, editor, scope="changed")
    _run(controller)
    assert controller.changedSegmentIds() == []
    assert controller.propagate("forward", 0, editor, scope="changed") is None
    before = logic.segmentMask(first).copy()
    second = controller.newSegment(editor)
    controller.click((*clip[1][1], 3), False, editor)
    _run(controller)
    assert controller.changedSegmentIds() == [second]
    job = controller.propagate("both", 3, editor, scope="changed")
    _run(controller)
    assert list(job.plan.writeObjects.values()) == [second]
    np.testing.assert_array_equal(logic.segmentMask(first), before)
    assert logic.segmentMask(second).any(axis=(1, 2)).sum() >= 1


# ---------------------------------------------------------------------------------------------
# view geometry (the effect converts view positions with these)
# ---------------------------------------------------------------------------------------------


def test_pixels_and_frames_of_a_slice_view(tmp_path, clip):
    controller = _controller(tmp_path)
    video = controller.importVideo(clip[0])
    ijkToRas = vtk.vtkMatrix4x4()
    video.GetIJKToRASMatrix(ijkToRas)
    sliceToRas = vtk.vtkMatrix4x4()  # an axial view: slice normal along the frames (K)
    for column in range(3):
        for row in range(3):
            sliceToRas.SetElement(row, column, ijkToRas.GetElement(row, column) / video.GetSpacing()[column])
    for x, y, frame in ((0, 0, 0), (63, 47, 5), (10.25, 20.5, 3)):
        ras = ijkToRas.MultiplyPoint([x, y, frame, 1.0])[:3]
        for row in range(3):
            sliceToRas.SetElement(row, 3, ras[row])
        assert pixelOfRas(video, ras, sliceToRas) == pytest.approx((x, y, frame))
        assert frameOfSlice(video, sliceToRas) == frame
    outside = ijkToRas.MultiplyPoint([70, 5, 1, 1.0])[:3]
    assert pixelOfRas(video, outside, sliceToRas) is None
    sagittal = vtk.vtkMatrix4x4()
    sagittal.DeepCopy([0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1])
    with pytest.raises(ValueError, match="axial"):
        pixelOfRas(video, ras, sagittal)


# ---------------------------------------------------------------------------------------------
# acceptance 4: the README's shortcut table is what the effect does
# ---------------------------------------------------------------------------------------------


def _readmeShortcuts() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("<!-- shortcuts -->") : text.index("<!-- /shortcuts -->")]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] and not set(cells[0]) <= set("-: ") and cells[0] != "Key":
            rows[cells[0].strip("`")] = cells[1]
    return rows


def test_readme_shortcut_table_matches_the_effects_key_handling(tmp_path, model, clip):
    rows = _readmeShortcuts()
    assert rows == {s.keys: s.action for s in SHORTCUTS}
    controller, editor = _ready(tmp_path, model, clip)
    logic = controller.logic
    segmentId = editor.GetSelectedSegmentID()
    done = {}
    for shortcut in SHORTCUTS:
        if shortcut.handledBy != "effect" or shortcut.keySym is None:
            assert controller.shortcutFor(shortcut.keySym or "", shortcut.ctrl, shortcut.shift) is None
            continue
        assert controller.shortcutFor(shortcut.keySym, shortcut.ctrl, shortcut.shift) is shortcut
        if shortcut.keySym == "x":
            assert controller.keyPress("x", False, False, 0, editor) and controller.tool == TOOL_BOX
            assert controller.keyPress("X", False, True, 0, editor) and controller.tool == TOOL_POINT
        elif shortcut.keySym == "Return":
            controller.click((*clip[1][0], 2), False, editor)
            _run(controller)
            assert controller.keyPress("Return", shortcut.ctrl, shortcut.shift, 2, editor)
            job = controller.runner.job
            expected = {"Return": [2, 3, 4, 5], "Shift+Return": [2, 1, 0], "Ctrl+Return": [2, 3, 4, 5, 1, 0]}
            assert job is not None and job.trackedFrames == expected[shortcut.keys]
            _run(controller)
        elif shortcut.keySym == "BackSpace":
            controller.click((*clip[1][0], 4), False, editor)
            controller.click((5.0, 5.0, 4), True, editor)
            _run(controller)
            assert logic.getPrompts(segmentId)[4].points == (clip[1][0], (5.0, 5.0))
            assert controller.keyPress("BackSpace", False, False, 4, editor)
            assert logic.getPrompts(segmentId)[4].points == (clip[1][0],)
        elif shortcut.keySym == "Delete":
            controller.click((5.0, 5.0, 1), False, editor)
            _run(controller)
            assert 1 in logic.getPrompts(segmentId)
            assert controller.keyPress("Delete", False, False, 1, editor)
            assert 1 not in logic.getPrompts(segmentId)
        done[shortcut.keys] = True
    assert set(done) == {s.keys for s in SHORTCUTS if s.handledBy == "effect" and s.keySym}
    assert controller.keyPress("KP_Enter", False, False, 0, editor) and controller.runner.isRunning()
    _run(controller)
    assert controller.keyPress("x", True, False, 0, editor) is False  # Ctrl+X stays Slicer's
    assert controller.keyPress("Return", True, True, 0, editor) is False
    assert controller.keyPress("a", False, False, 0, editor) is False
    # the editor-handled keys are Slicer's own shortcuts (qMRMLSegmentEditorWidget::installKeyboardShortcuts)
    assert {s.keys for s in SHORTCUTS if s.handledBy == "editor"} == {"Escape", "Ctrl+Z", "Ctrl+Y"}
    assert "deselect" in rows["Escape"]


def test_readme_walkthrough_names_only_buttons_that_exist():
    """Every bold button name of the README's Slicer walk-through is a button of the panel (.ui), of the
    effect's options or of the first-use question, or one of Slicer's own (Cancel of a progress dialog,
    the Segment Editor's Undo)."""
    import xml.etree.ElementTree as ElementTree

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    walkthrough = text[text.index("## Using it in Slicer") : text.index("The same flow without the GUI")]
    named = {name for name in re.findall(r"\*\*([^*]+)\*\*", walkthrough) if not re.search(r"[^.][.?:]$", name)}
    ui = ElementTree.parse(ROOT / "SAM2SSlicer" / "Resources" / "UI" / "SAM2SSlicer.ui")
    buttons = {
        widget.findtext("./property[@name='text']/string")
        for widget in ui.iter("widget")
        if widget.get("class") in ("QPushButton", "QRadioButton", "QCheckBox", "QToolButton")
    }
    qtShell = (ROOT / "SAM2SSlicer" / "SegmentEditorSAM2S" / "SegmentEditorEffect.py").read_text() + (
        ROOT / "SAM2SSlicer" / "SAM2SSlicer.py"
    ).read_text()
    buttons |= set(re.findall(r'(?:QPushButton|QRadioButton|addButton)\(\s*_\("([^"]+)"\)', qtShell))
    buttons |= set(re.findall(r'\(_\("([^"]+)"\), _\("[^"]+"\), "(?:forward|backward|both)"\)', qtShell))
    slicersOwn = {"Cancel", "Undo", "SAM2S", "SAM2SSlicer", "PyTorch"}  # dialogs, editor, effect, extensions
    assert named and named - buttons - slicersOwn == set()
    assert {"Forward", "Backward", "Both", "New", "New segment", "Points", "Box", "Install packages"} <= named


def test_backspace_and_delete_errors_become_messages(tmp_path, model, clip, monkeypatch):
    """Defect 4 of the first audit (issue 23): an error while removing prompts by key (here the
    prompt store fails, injected) is a status message; the key is taken and nothing raises into
    Slicer's event loop."""
    controller, editor = _ready(tmp_path, model, clip)
    assert controller.click((*clip[1][0], 0), False, editor)
    _run(controller)

    def broken(*args, **kwargs):
        raise RuntimeError("the prompts' markups node was removed")

    monkeypatch.setattr(controller.logic, "removeLastPointPrompt", broken)
    monkeypatch.setattr(controller.logic, "clearPrompts", broken)
    for key in ("BackSpace", "Delete"):
        assert controller.keyPress(key, False, False, 0, editor) is True
        assert controller.messages[-1] == "the prompts' markups node was removed"


def test_a_server_url_waits_for_its_token(tmp_path):
    """N16 of issue 23: typing a server URL and tabbing on to the token field is no error; the
    server is used once both are there; an empty URL is this computer again."""
    backends = Backends()
    controller = _controller(tmp_path, backends=backends)
    controller.serverFieldsEdited(" http://gpu-box:8000 ", "")
    assert backends.calls == [] and "token of http://gpu-box:8000" in controller.messages[-1]
    with pytest.raises(ValueError, match="http"):
        controller.serverFieldsEdited("gpu-box:8000", "t" * 40)
    controller.serverFieldsEdited("http://gpu-box:8000", "t" * 40)
    assert backends.calls == [("http://gpu-box:8000", "t" * 40)] and controller.isRemote()
    controller.serverFieldsEdited("", "t" * 40)
    assert backends.calls[-1] == (None, "") and not controller.isRemote()


# ---------------------------------------------------------------------------------------------
# issue 23, N21: the panel's state is kept in the scene's parameter node
# ---------------------------------------------------------------------------------------------


def test_the_panel_state_is_saved_with_the_scene_and_taken_up_after_a_reload(tmp_path, model, clip):
    from SAM2SSlicerLib import parameters

    scene = headless.createHeadlessScene()
    store = JsonSettingsStore(tmp_path / "settings.json")
    controller = SAM2SController(headless.createTrackingLogic(scene), store, backendFactory=Backends())
    editor = _editorNode(controller.logic)
    controller.importVideo(clip[0])
    segmentation = controller.createSegmentation(editor)
    controller.setFrameRange(1, 4)
    controller.setScope("all")
    controller.setTool(TOOL_BOX)
    # The scene's MRML (what .mrml / .mrb files hold) carries them, node references by ID.
    scene.scene.SetSaveToXMLString(1)
    scene.scene.Commit()
    loaded = slicer.vtkMRMLScene()
    loaded.SetLoadFromXMLString(1)
    loaded.SetSceneXMLString(scene.scene.GetSceneXMLString())
    loaded.Import()
    stored = parameters.readParameters(loaded)
    assert (stored.firstFrame, stored.lastFrame, stored.scope, stored.tool) == (1, 4, "all", TOOL_BOX)
    assert stored.videoNode.GetID() == controller.logic.videoNode.GetID()
    assert stored.segmentationNode.GetID() == segmentation.GetID()
    # A new controller on the same scene (a module reload, or the scene loaded) takes them up.
    reloaded = SAM2SController(headless.createTrackingLogic(scene), store, backendFactory=Backends())
    otherEditor = _editorNode(reloaded.logic)
    assert reloaded.restoreParameters(otherEditor)
    assert reloaded.logic.videoNode is controller.logic.videoNode
    assert reloaded.logic.segmentationNode is segmentation
    assert otherEditor.GetSegmentationNode() is segmentation
    assert (reloaded.firstFrame, reloaded.lastFrame, reloaded.scope, reloaded.tool) == (1, 4, "all", TOOL_BOX)
    # Values that no longer fit (a range beyond the video, an unknown tool) fall back to defaults.
    node = parameters.parameterNode(scene.scene)
    node.SetParameter("lastFrame", "99")
    node.SetParameter("tool", "lasso")
    assert reloaded.restoreParameters()
    assert (reloaded.firstFrame, reloaded.lastFrame, reloaded.tool) == (0, 5, TOOL_BOX)
    assert parameters.readParameters(slicer.vtkMRMLScene()) is None
