"""What the SAM2S module panel and its Segment Editor effect do, without Qt.

The Qt files (``SAM2SSlicer.py`` and ``SegmentEditorSAM2S/SegmentEditorEffect.py``) only bind
widgets, mouse and keys to :class:`SAM2SController`, as Slicer's parameter-node pattern keeps
behaviour out of widgets. Everything a user can trigger is decided here and tested headless on
``slicer-core`` MRML with the real tracking backend (``Testing/Python/test_controller.py``):

* which actions are enabled (:meth:`SAM2SController.actions`);
* what a click, a box drag or a key does on a frame (:meth:`~SAM2SController.click`,
  :meth:`~SAM2SController.boxPress` / :meth:`~SAM2SController.boxRelease`,
  :meth:`~SAM2SController.keyPress`; the keys are listed once, in :data:`SHORTCUTS`);
* the busy and cancel state, and what happens when the effect is deselected or the module left
  (:meth:`~SAM2SController.effectDeactivated`, :meth:`~SAM2SController.moduleExited`);
* the guard that keeps the first-use package install from running twice
  (:class:`DependencyGate`);
* the saved settings and the first-use question "this computer or a server?"
  (:meth:`~SAM2SController.loadSettings`, :meth:`~SAM2SController.setCompute`);
* what is selected after New (:meth:`~SAM2SController.newSegment`).

Coordinates: frame = K index of the video volume (0-based); x = column (right), y = row (down,
0 at the top), in pixels of the imported frames.

Slicer code this follows: ``Modules/Scripted/SegmentEditor/SegmentEditor.py`` (``enter``:
``installKeyboardShortcuts``; ``exit``: ``setActiveEffect(None)``, ``uninstallKeyboardShortcuts``,
``removeViewObservations``), ``qMRMLSegmentEditorWidget::installKeyboardShortcuts`` (Escape
deselects the active effect; Z / Ctrl+Z undo; Y / Ctrl+Y redo), and
``vtkMRMLSegmentEditorNode`` (the selected segment, segmentation and source volume).

The shortcut table, the settings stores, the install gate, the slice-view geometry and the default
backend factory live in ``controls`` and are importable from here too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import vtk

from . import controls as _controls
from . import segments as _segments
from .computesettings import ComputeSettings
from .controls import COMPUTE_LOCAL as COMPUTE_LOCAL  # re-exported
from .controls import COMPUTE_SERVER as COMPUTE_SERVER  # re-exported
from .controls import DOCUMENTATION_URL as DOCUMENTATION_URL  # re-exported
from .controls import (
    SCOPES,
    SHORTCUTS,
    TOOL_BOX,
    TOOL_POINT,
    DependencyGate,
    SettingsStore,
    Shortcut,
    serverBackend,
)
from .controls import SETTINGS_PREFIX as SETTINGS_PREFIX  # re-exported
from .controls import JsonSettingsStore as JsonSettingsStore  # re-exported
from .controls import frameOfSlice as frameOfSlice  # re-exported
from .controls import pixelOfRas as pixelOfRas  # re-exported
from .controls import tr as _
from .logic import SAM2STrackingLogic, TrackingBusyError, TrackingJob
from .prompts import PromptError
from .runner import JobRunner
from .videoimport import ImportCancelled

__all__ = ["PROPAGATION", "SAM2SController", *_controls.__all__]

PROPAGATION = "propagation"
"""The ``JobRunner.pendingLabel`` of a propagation queued behind a click's preview."""  # the names of ``controls`` are importable from here too


def _promptDigest(frames: dict) -> str:
    """A digest of a segment's ``{frame: FramePrompts}`` (``FramePrompts`` repr has the mask's digest)."""
    return repr(sorted(frames.items()))


class SAM2SController(ComputeSettings):
    """The behaviour of the SAM2S panel and effect over a :class:`SAM2STrackingLogic` (see the module
    docstring). One controller is shared by the module panel and the effect in Slicer.

    Args:
        logic: the tracking logic (its scene is Slicer's, or a headless one in tests).
        store: where settings persist (:class:`SettingsStore`).
        runner: the :class:`JobRunner` of the logic (default: a new one; the Qt shell ticks it
            from a QTimer).
        dependencies: the install gate of tracking (default: nothing to install, always ready).
        importDependencies: the install gate of importing a video (``dependencies.requirementsFor("import")``:
            no PyTorch; default: always ready).
        backendFactory: ``(url or None, token) -> backend`` for :meth:`setCompute` (default:
            ``backends.ServerBackend``: a local tracking server, or the remote one at ``url``).

    Attributes:
        tool: ``TOOL_POINT`` or ``TOOL_BOX``. firstFrame, lastFrame: the propagation range.
        scope: the last propagation's scope (:data:`SCOPES`), shown again by the panel.
        The video, segmentation, range, scope and tool are kept in the scene's parameter node
        (``parameters``: saved with the scene, read back by :meth:`restoreParameters`).
        statusListeners: ``listener(text)`` for messages to the user (status line / label).
        undoEditor: the Segment Editor whose undo history covers the tracking writes: the
            ``qMRMLSegmentEditorWidget`` that owns the active SAM2S effect (the module panel's or
            the Segment Editor module's: ``undo.editorOf``), or a ``vtkSlicerSegmentEditorLogic``
            headless; None: no undo states. Before each job's first write its maximum is set to
            the states that fit ``undoBudget`` (``undo.limitUndoStates``) and one state is saved.
        undoBudget: bytes the undo history may keep (``undo.DEFAULT_UNDO_BUDGET``, 1 GiB).
        undoLimit: undo states that fit (``undo.undoStateLimit``, updated before each job's first
            write; 0 = undo off).
    """

    def __init__(
        self,
        logic: SAM2STrackingLogic,
        store: SettingsStore,
        runner: JobRunner | None = None,
        dependencies: DependencyGate | None = None,
        backendFactory: Callable[[str | None, str], Any] | None = None,
        importDependencies: DependencyGate | None = None,
    ) -> None:
        self.logic = logic
        self.store = store
        self.runner = runner if runner is not None else JobRunner(logic)
        self.dependencies = dependencies or DependencyGate(lambda: True, lambda: None)
        self.importDependencies = importDependencies or DependencyGate(lambda: True, lambda: None)
        self.backendFactory = backendFactory or serverBackend
        self.tool = TOOL_POINT
        self.scope = SCOPES[0]
        self.firstFrame = self.lastFrame = 0
        self.statusListeners: list[Callable[[str], None]] = []
        self.undoEditor: Any = None
        from .undo import DEFAULT_UNDO_BUDGET, SLICER_DEFAULT_UNDO_STATES

        self.undoBudget = DEFAULT_UNDO_BUDGET
        self.undoLimit = SLICER_DEFAULT_UNDO_STATES
        self.effectActive = False
        self.lastStatus = ""
        self._boxStart: tuple[float, float, int] | None = None
        self._effectJob: TrackingJob | None = None
        # (segmentation node ID, segmentId) -> prompt digest at the segment's last finished propagation
        self._propagated: dict[tuple[str, str], str] = {}
        self._computeKey: tuple[str, str, str] | None = None
        self.serverToken = ""  # the remote server's token, in memory only: never saved (a password)
        self.runner.listeners.append(self._onJobTick)
        self.runner.failedListeners.append(self._queuedFailed)
        self.loadSettings()

    # ------------------------------------------------------------------ messages
    def status(self, text: str) -> None:
        """Show ``text`` to the user (every status listener; errors in a listener are ignored)."""
        self.lastStatus = text
        for listener in list(self.statusListeners):
            try:
                listener(text)
            except Exception:  # noqa: BLE001, S110 - a broken label must not stop the action
                pass

    # ------------------------------------------------------------------ dependencies
    def installDependencies(self) -> bool:
        """Install the missing Python packages (from a button or the effect's ``activate``, never from
        a click). Returns True when ready; False when an install already runs or failed (a message
        says which)."""
        if self.dependencies.isInstalling():
            self.status(_("The Python packages of SAM2S are being installed; wait until it finishes."))
            return False
        if self.dependencies.ensure():
            return True
        if self.dependencies.state == "failed":
            self.status(
                _("SAM2S cannot run without its Python packages: {error}").format(error=self.dependencies.error)
            )
        return False

    def installImportDependencies(self) -> bool:
        """Install what importing a video needs (PyAV, OpenCV; never PyTorch: N19), from the import
        buttons. Returns True when ready; False when an install runs or failed (a message says which)."""
        gate = self.importDependencies
        if gate.isInstalling() or self.dependencies.isInstalling():
            self.status(_("The Python packages of SAM2S are being installed; wait until it finishes."))
            return False
        if gate.ensure():
            return True
        if gate.state == "failed":
            self.status(_("SAM2S cannot import videos without its Python packages: {error}").format(error=gate.error))
        return False

    def _dependenciesReadyOrSay(self) -> bool:
        """For mouse and key handlers: never installs, only tells the user how to."""
        if self.dependencies.isReady():
            return True
        if self.dependencies.isInstalling():
            self.status(_("The Python packages of SAM2S are being installed; wait until it finishes."))
        else:
            self.status(
                _(
                    "SAM2S needs its Python packages first: press 'Install' in the SAM2S panel or select the effect again."
                )
            )
        return False

    # ------------------------------------------------------------------ nodes
    def setVideoNode(self, videoNode, editorNode=None) -> None:
        """Track on ``videoNode``; the frame range becomes the whole video (a longer video gets its
        last frame). With ``editorNode`` (``vtkMRMLSegmentEditorNode``) its source volume follows.

        Raises what ``SAM2STrackingLogic.setVideoNode`` raises (ValueError, TrackingBusyError)."""
        self.logic.setVideoNode(videoNode)
        frames = self.frameCount()
        self.firstFrame, self.lastFrame = 0, max(frames - 1, 0)
        self.bindEditorNode(editorNode)
        self.storeParameters()

    def setSegmentationNode(self, segmentationNode, editorNode=None) -> None:
        """Write into ``segmentationNode``; with ``editorNode`` its segmentation follows (so that the
        Segment Editor's undo snapshots the segmentation the tracker writes).

        Raises what ``SAM2STrackingLogic.setSegmentationNode`` raises."""
        self.logic.setSegmentationNode(segmentationNode)
        self.bindEditorNode(editorNode)
        self.storeParameters()

    def bindEditorNode(self, editorNode) -> None:
        """Make ``editorNode`` (``vtkMRMLSegmentEditorNode``) show the logic's segmentation and video.
        A selected segment that is not in that segmentation is deselected."""
        if editorNode is None:
            return
        segmentation, video = self.logic.segmentationNode, self.logic.videoNode
        if editorNode.GetSegmentationNode() is not segmentation:
            editorNode.SetAndObserveSegmentationNode(segmentation)
        if editorNode.GetSourceVolumeNode() is not video:
            editorNode.SetAndObserveSourceVolumeNode(video)
        selected = editorNode.GetSelectedSegmentID()
        if selected and (segmentation is None or segmentation.GetSegmentation().GetSegment(selected) is None):
            editorNode.SetSelectedSegmentID(None)

    def followEditorNode(self, editorNode) -> bool:
        """Track on what ``editorNode`` shows (the effect in the Segment Editor module): its source
        volume when it is a SAM2S video, and its segmentation. False (with a message) when that is
        not possible."""
        from .videoimport import isVideoVolume

        segmentation = editorNode.GetSegmentationNode() if editorNode is not None else None
        source = editorNode.GetSourceVolumeNode() if editorNode is not None else None
        try:
            if source is not None and isVideoVolume(source) and source is not self.logic.videoNode:
                self.setVideoNode(source)
            if self.logic.videoNode is None:
                self.status(_("Import a video in the SAM2S module first."))
                return False
            if segmentation is not self.logic.segmentationNode:
                self.logic.setSegmentationNode(segmentation)
                self.storeParameters()
        except (ValueError, RuntimeError) as error:  # TrackingBusyError is a RuntimeError
            self.status(str(error))
            return False
        if segmentation is None:
            self.status(_("Choose or create a segmentation for the video first."))
            return False
        return True

    def frameCount(self) -> int:
        """Frames of the current video (0 without one)."""
        video = self.logic.videoNode
        if video is None or video.GetImageData() is None:
            return 0
        return video.GetImageData().GetDimensions()[2]

    def setFrameRange(self, first: int, last: int) -> None:
        """The inclusive frame range of propagations. Raises ``ValueError`` outside the video."""
        frames = self.frameCount()
        if not 0 <= int(first) <= int(last) < max(frames, 1):
            raise ValueError(
                _("Frame range {first}..{last} is not within the video's frames 0..{end}.").format(
                    first=first, last=last, end=frames - 1
                )
            )
        self.firstFrame, self.lastFrame = int(first), int(last)
        self.storeParameters()

    def storeParameters(self) -> None:
        """Write the video, segmentation, frame range, scope and tool into the scene's parameter
        node (``parameters.writeParameters``): they are saved with the scene (N21)."""
        from .parameters import TrackingParameters, writeParameters

        logic = self.logic
        writeParameters(
            logic.scene,
            TrackingParameters(
                logic.videoNode, logic.segmentationNode, self.firstFrame, self.lastFrame, self.scope, self.tool
            ),
        )

    def restoreParameters(self, editorNode=None) -> bool:
        """Take up what the scene's parameter node holds (a loaded scene, a reloaded module): its
        video (when it is a SAM2S video), segmentation, frame range (when within the video),
        scope and tool; ``editorNode`` follows. Values that do not fit are left at their defaults.
        Returns False (changing nothing) without a parameter node, or while a job runs."""
        from .parameters import readParameters
        from .videoimport import isVideoVolume

        stored = readParameters(self.logic.scene)
        if stored is None or self.runner.isRunning():
            return False
        try:
            if stored.videoNode is not None and isVideoVolume(stored.videoNode):
                if stored.videoNode is not self.logic.videoNode:
                    self.logic.setVideoNode(stored.videoNode)
                if stored.segmentationNode is not None and stored.segmentationNode is not self.logic.segmentationNode:
                    self.logic.setSegmentationNode(stored.segmentationNode)
        except (ValueError, RuntimeError) as error:
            self.status(str(error))
        frames = self.frameCount()
        if 0 <= stored.firstFrame <= stored.lastFrame < frames:
            self.firstFrame, self.lastFrame = stored.firstFrame, stored.lastFrame
        else:
            self.firstFrame, self.lastFrame = 0, max(frames - 1, 0)
        if stored.scope in SCOPES:
            self.scope = stored.scope
        if stored.tool in (TOOL_POINT, TOOL_BOX):
            self.tool, self._boxStart = stored.tool, None
        self.bindEditorNode(editorNode)
        return True

    def jumpToFrame(self, frame: int, sliceNodes: Iterable | None = None) -> bool:
        """Show ``frame`` (K index of the video, 0-based) in the slice views: each slice node
        (default: every ``vtkMRMLSliceNode`` of the scene) is moved along its normal to the frame's
        plane (``JumpSliceByOffsetting`` through the frame's centre, so in-plane panning stays).
        Used by the statistics table and plot (a clicked row or point). Returns False, with a
        status message, without a video or for a frame outside it.
        """
        frames = self.frameCount()
        if not 0 <= int(frame) < frames:
            self.status(_("Frame {frame} is not in the video (0..{end}).").format(frame=frame, end=frames - 1))
            return False
        video = self.logic.videoNode
        width, height, _frames = video.GetImageData().GetDimensions()
        ijkToRas = vtk.vtkMatrix4x4()
        video.GetIJKToRASMatrix(ijkToRas)
        ras = ijkToRas.MultiplyPoint([(width - 1) / 2, (height - 1) / 2, int(frame), 1.0])[:3]
        if sliceNodes is None:
            found = video.GetScene().GetNodesByClass("vtkMRMLSliceNode")
            sliceNodes = [found.GetItemAsObject(i) for i in range(found.GetNumberOfItems())]
        for sliceNode in sliceNodes:
            sliceNode.JumpSliceByOffsetting(*ras)
        return True

    def createSegmentation(self, editorNode=None):
        """A new segmentation on the video with one segment "Object 1", selected in ``editorNode``.
        Returns the segmentation node. Raises RuntimeError without a video."""
        node = self.logic.createSegmentation()
        self.bindEditorNode(editorNode)
        self.newSegment(editorNode)
        self.storeParameters()
        return node

    def newSegment(self, editorNode=None, name: str | None = None) -> str:
        """Add a segment ("Object N", the next free object id) and select it in ``editorNode``, so
        the next click prompts it. Returns its ID. Raises RuntimeError without a segmentation,
        ValueError when all 254 object ids are used."""
        node = self.logic.segmentationNode
        if node is None:
            raise RuntimeError(_("Create a segmentation for the video first."))
        objectId = _segments.freeObjectId(node)
        segmentId = self.logic.addSegment(name or _("Object {n}").format(n=objectId), objectId=objectId)
        if editorNode is not None:
            self.bindEditorNode(editorNode)
            editorNode.SetSelectedSegmentID(segmentId)
        return segmentId

    # ------------------------------------------------------------------ state
    def isBusy(self) -> bool:
        """True while a propagation runs or waits for a click's preview to finish (a preview alone
        does not count: clicks may go on)."""
        job = self.runner.job
        return (job is not None and not job.isPreview) or self.runner.pendingLabel == PROPAGATION

    def actions(self, editorNode=None) -> dict[str, bool]:
        """Which actions are enabled now (the Qt shell enables its buttons from this).

        Keys: ``import``, ``download``, ``install``, ``createSegmentation``, ``newSegment``, ``prompt``
        (point and box tools), ``clearFrame``, ``clearSegment``, ``propagate``, ``cancel``, ``export``,
        ``settings``.
        """
        logic = self.logic
        busy, running = self.isBusy(), self.runner.isRunning()
        video = logic.videoNode is not None and logic.videoNode.GetScene() is not None
        segmentation = video and logic.segmentationNode is not None and logic.segmentationNode.GetScene() is not None
        selected = bool(editorNode.GetSelectedSegmentID()) if editorNode is not None else False
        return {
            "import": not running,
            "download": not running,
            "install": not self.dependencies.isInstalling() and not self.dependencies.isReady(),
            "createSegmentation": video and not busy,
            "newSegment": segmentation and not busy,
            "prompt": segmentation and not busy,
            "clearFrame": segmentation and selected and not busy,
            "clearSegment": segmentation and selected and not busy,
            "propagate": segmentation and not running,
            "cancel": running,
            "export": segmentation and not running,
            "settings": not running,
        }

    # ------------------------------------------------------------------ effect and module life
    def effectActivated(self, editorNode=None) -> None:
        """The SAM2S effect was selected: clicks and keys go to the tracker. Installs missing packages
        (asks first) unless an install runs, and follows the editor node's video and segmentation."""
        self.effectActive = True
        self._boxStart = None
        if not self.dependencies.isReady():
            self.installDependencies()
        if editorNode is not None:
            self.followEditorNode(editorNode)

    def effectDeactivated(self) -> None:
        """The effect was deselected (Escape, another effect, leaving the module): clicks and keys are
        no longer taken, a box drag is dropped, a pending preview is dropped, and a propagation started
        from the effect stops after its current frame (finished frames are kept), because its progress
        and Cancel button are in the effect's panel, which is gone now."""
        self.effectActive = False
        self._boxStart = None
        job = self.runner.job
        if job is not None and job is self._effectJob and not job.isPreview:
            self.runner.cancel()
            self.status(_("Tracking stops after the current frame: the SAM2S effect was deselected."))
        elif job is not None and job.isPreview:
            self.runner.dropPending()

    def moduleExited(self) -> None:
        """The SAM2S module was left (its ``exit``: the Qt shell also deselects the effect, removes the
        keyboard shortcuts and the view observations, as ``SegmentEditor.py`` does). A propagation
        started from the panel's buttons goes on; its progress is shown in the status bar."""
        self.effectDeactivated()

    def shutdown(self) -> None:
        """Stop everything this controller runs, for a module reload, the module's ``cleanup()`` or
        Slicer's quit (issue 23, N11): the running job is cancelled and dropped without writing,
        the queued request forgotten, the engine session closed and the backend closed (a local
        tracking server and its processes end: ``backends.LocalServer.stop``). Listeners are
        removed. Safe to call twice; the controller is not used afterwards."""
        self.effectActive = False
        job = self.runner.job
        self.runner.cancel()
        if job is not None:
            job.discardResults()
        self.runner.job = None
        self.logic.close()
        self.statusListeners.clear()
        self.undoEditor = None
        self.runner.listeners.clear()
        self.runner.startListeners.clear()

    # ------------------------------------------------------------------ mouse
    def click(self, pixel: tuple[float, float, int] | None, negative: bool, editorNode) -> bool:
        """A left click of the point tool at ``pixel`` = ``(x, y, frame)`` (None: outside the video).

        Stores a positive (or, with ``negative``, a negative) point for the selected segment and starts
        a preview of that frame. Every refusal or error becomes a status message; the click is still
        taken (returns True) so that it never turns into a window/level drag. Returns False only when
        the effect is not active (the click then belongs to other modules).
        """
        if not self.effectActive:
            return False
        if pixel is None:
            self.status(_("Click inside the video frame."))
            return True
        x, y, frame = pixel
        self._prompt(
            lambda segmentId: self.logic.addPointPrompt(segmentId, frame, x, y, not negative), frame, editorNode
        )
        return True

    def boxPress(self, pixel: tuple[float, float, int] | None) -> bool:
        """The box tool's button press at ``pixel`` (``(x, y, frame)`` or None). Returns True when taken."""
        if not self.effectActive:
            return False
        self._boxStart = pixel
        if pixel is None:
            self.status(_("Start the box inside the video frame."))
        return True

    def isDraggingBox(self) -> bool:
        return self._boxStart is not None

    def boxRelease(self, pixel: tuple[float, float, int] | None, editorNode) -> bool:
        """The box tool's button release: stores the box (replacing the frame's earlier box) and starts a
        preview. Returns True when taken (always while the effect is active)."""
        if not self.effectActive:
            return False
        start, self._boxStart = self._boxStart, None
        if start is None or pixel is None or pixel[2] != start[2]:
            self.status(_("Drag the box inside one frame."))
            return True
        frame = start[2]
        box = (start[0], start[1], pixel[0], pixel[1])
        self._prompt(lambda segmentId: self.logic.setBoxPrompt(segmentId, frame, box), frame, editorNode)
        return True

    def _prompt(self, add: Callable[[str], Any], frame: int, editorNode) -> None:
        if self.isBusy():
            self.status(_("Tracking is running: cancel it (Cancel or Escape) before adding prompts."))
            return
        if not self.followEditorNode(editorNode) or not self._dependenciesReadyOrSay():
            return
        segmentId = editorNode.GetSelectedSegmentID()
        if not segmentId:
            self.status(_("Select a segment first, or press 'New segment'."))
            return
        try:
            add(segmentId)
        except (PromptError, ValueError, KeyError, RuntimeError) as error:  # nothing was stored
            self.status(str(error).strip("'\""))
            return
        self._preview(segmentId, frame)

    def _preview(self, segmentId: str, frame: int) -> None:
        logic = self.logic
        self.status(_("Computing frame {frame}...").format(frame=frame))
        try:
            self.runner.startWhenIdle(
                lambda: logic.createPreviewJob(segmentId, frame),
                beforeWrite=self._undoHook(),
                onFinished=self._finished,
            )
        except (PromptError, ValueError, KeyError, RuntimeError) as error:
            self.status(str(error))

    # ------------------------------------------------------------------ keys
    @staticmethod
    def shortcutFor(keySym: str, ctrl: bool, shift: bool) -> Shortcut | None:
        """The :data:`SHORTCUTS` row the effect handles for this key, or None.

        ``KP_Enter`` counts as Return, letters count in either case. Return needs its exact modifiers
        (Ctrl+Shift+Return is nothing); other keys are not taken with Ctrl (Ctrl+X stays "cut")."""
        keySym = "Return" if keySym == "KP_Enter" else keySym
        if len(keySym) == 1:
            keySym, shift = keySym.lower(), False
        for shortcut in SHORTCUTS:
            if shortcut.handledBy != "effect" or shortcut.keySym != keySym:
                continue
            if keySym == "Return" and (shortcut.ctrl, shortcut.shift) != (ctrl, shift):
                continue
            if keySym != "Return" and ctrl:
                continue
            return shortcut
        return None

    def keyPress(self, keySym: str, ctrl: bool, shift: bool, frame: int | None, editorNode) -> bool:
        """A key pressed in a slice view on ``frame`` (the frame it shows). Returns True when the key
        was used (see :data:`SHORTCUTS`); other keys are left to Slicer."""
        if not self.effectActive:
            return False
        shortcut = self.shortcutFor(keySym, ctrl, shift)
        if shortcut is None:
            return False
        if shortcut.keySym == "x":
            self.setTool(TOOL_BOX if self.tool == TOOL_POINT else TOOL_POINT)
        elif shortcut.keySym == "Return":
            direction = {"Return": "forward", "Shift+Return": "backward", "Ctrl+Return": "both"}[shortcut.keys]
            self.propagate(direction, frame, editorNode, origin="effect")
        elif shortcut.keySym in ("BackSpace", "Delete"):
            self._removePrompts(shortcut.keySym == "BackSpace", frame, editorNode)
        return True

    def setScope(self, scope: str) -> None:
        """The panel's propagation scope (:data:`SCOPES`), kept in the parameter node.
        Raises ValueError for another name."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}.")
        if scope != self.scope:
            self.scope = scope
            self.storeParameters()

    def setTool(self, tool: str) -> None:
        """``TOOL_POINT`` or ``TOOL_BOX``; a box drag in progress is dropped."""
        if tool not in (TOOL_POINT, TOOL_BOX):
            raise ValueError(f"tool must be {TOOL_POINT!r} or {TOOL_BOX!r}; got {tool!r}.")
        self.tool, self._boxStart = tool, None
        self.storeParameters()

    def _removePrompts(self, lastOnly: bool, frame: int | None, editorNode) -> None:
        if self.isBusy():
            self.status(_("Tracking is running: cancel it before changing prompts."))
            return
        if not self.followEditorNode(editorNode):
            return
        segmentId = editorNode.GetSelectedSegmentID()
        if not segmentId or frame is None:
            self.status(_("Select a segment first."))
            return
        remove = self.logic.removeLastPointPrompt if lastOnly else self.logic.clearPrompts
        try:
            removed = remove(segmentId, frame)
        except (PromptError, ValueError, KeyError, RuntimeError) as error:  # a key never raises into Slicer
            self.status(str(error).strip("'\""))
            return
        if not removed:
            self.status(_("No prompt to remove on frame {frame}.").format(frame=frame))
            return
        self.status(_("Prompts changed on frame {frame}.").format(frame=frame))
        if frame in self.logic.getPrompts(segmentId) and self.dependencies.isReady():
            self._preview(segmentId, frame)

    def clearPrompts(self, editorNode, frame: int | None) -> int:
        """Delete the selected segment's prompts on ``frame`` (all frames when None). Returns the number
        of points deleted."""
        segmentId = editorNode.GetSelectedSegmentID() if editorNode is not None else None
        if not segmentId:
            self.status(_("Select a segment first."))
            return 0
        return self.logic.clearPrompts(segmentId, frame)

    # ------------------------------------------------------------------ propagation
    def changedSegmentIds(self) -> list[str]:
        """Prompted segments whose prompts differ from those of their last finished propagation
        (new objects and corrected ones): propagating only these leaves the others untouched."""
        changed = []
        node = self.logic.segmentationNode
        for segmentId in self.logic.promptedSegmentIds():
            frames = self.logic.getPrompts(segmentId)
            if frames and self._propagated.get((node.GetID(), segmentId)) != _promptDigest(frames):
                changed.append(segmentId)
        return changed

    def propagate(
        self,
        direction: str,
        startFrame: int | None,
        editorNode,
        scope: str = "selected",
        origin: str = "panel",
    ) -> TrackingJob | None:
        """Start a propagation of the segments of ``scope`` (:data:`SCOPES`) from ``startFrame``
        (clamped to the frame range; None: the earliest prompted frame) in ``direction``
        (``forward``, ``backward``, ``both``) within ``firstFrame .. lastFrame``.

        ``origin`` ``"effect"`` (keys or the effect's buttons) makes the job stop when the effect is
        deselected. Returns the started job, or None with a status message (nothing running then).
        """
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}.")
        if origin == "panel":
            self.setScope(scope)  # the panel's choice, kept with the scene
        if self.runner.isRunning() and not self.runner.job.isPreview:
            self.status(_("Tracking is running; cancel it or wait for it to finish first."))
            return None
        if editorNode is not None and not self.followEditorNode(editorNode):
            return None
        if not self._dependenciesReadyOrSay():
            return None
        if scope == "selected":
            segmentId = editorNode.GetSelectedSegmentID() if editorNode is not None else None
            if not segmentId:
                self.status(_("Select a segment in the segments table first."))
                return None
            segmentIds = [segmentId]
        elif scope == "changed":
            segmentIds = self.changedSegmentIds()
            if not segmentIds:
                self.status(_("No segment has new or changed prompts since it was last propagated."))
                return None
        else:
            segmentIds = None
        if startFrame is not None:
            startFrame = min(max(int(startFrame), self.firstFrame), self.lastFrame)

        def makeJob() -> TrackingJob:
            job = self.logic.createTrackingJob(segmentIds, startFrame, self.firstFrame, self.lastFrame, direction)
            self._effectJob = job if origin == "effect" else None
            self.status(_("Tracking {n} frames...").format(n=job.totalFrames))
            return job

        try:
            if not self.runner.startWhenIdle(makeJob, self._undoHook(), self._finished, label=PROPAGATION):
                # a click's preview (maybe still making the server session) runs: the propagation
                # follows it, never nested in it (issue 23, N5)
                self.status(_("Tracking starts when the mask being computed is ready."))
                return None
        except (PromptError, ValueError, KeyError, RuntimeError) as error:
            self.status(str(error).strip("'\""))
            return None
        return self.runner.job

    def cancel(self) -> None:
        """Stop the running job after its current frame (finished frames are kept)."""
        if self.runner.isRunning():
            self.runner.cancel()
            self.status(_("Cancelling: tracking stops after the current frame."))

    def sceneAboutToClose(self) -> None:
        """Slicer closes the scene (its StartCloseEvent, which SegmentEditor.py observes too): a
        running job stops and its results are dropped quietly, marked ``closedWithScene`` (not an
        error for the user), and the logic forgets its nodes."""
        job = self.runner.job
        if job is not None and not job.finished.is_set():
            job.closedWithScene = True
        self.runner.cancel()
        self.logic.forgetNodes()

    def _undoHook(self) -> Callable[[], None] | None:
        """``beforeWrite`` of a job: bound the undo history of :attr:`undoEditor`
        (``undo.limitUndoStates``: whole labelmap layers are copied per state,
        ``vtkSegmentationHistory::SaveState``), then save one state when at least one fits the
        budget; otherwise undo is off for this video (maximum 0, shortcuts included) and the user
        is told."""
        editor = self.undoEditor
        if editor is None:
            return None

        def beforeWrite() -> None:
            from . import undo

            segmentation = self.logic.segmentationNode
            if segmentation is None:
                return
            self.undoLimit = undo.limitUndoStates(editor, segmentation, self.undoBudget)
            if self.undoLimit > 0:
                undo.saveUndoState(editor)
            else:
                self.status(
                    _(
                        "Undo is off for this video: one undo state would copy {mb:.0f} MB (budget {budget:.0f} MB)."
                    ).format(mb=undo.fullUndoStateBytes(segmentation) / 1e6, budget=self.undoBudget / 1e6)
                )

        return beforeWrite

    def _queuedFailed(self, label: str, error: Exception) -> None:
        self.status(str(error).strip("'\""))

    def _onJobTick(self, job: TrackingJob, finished: bool) -> None:
        if not job.isPreview and not finished:
            self.status(
                _("{status}: {done} of {total} frames").format(
                    status=job.status, done=job.doneFrames, total=job.totalFrames
                )
            )

    def _finished(self, job: TrackingJob) -> None:
        if self._effectJob is job:
            self._effectJob = None
        for warning in job.warnings:
            self.status(warning)
        if job.closedWithScene:
            self.status(_("Tracking stopped: the scene was closed."))
        elif job.error is not None:
            self.status(_("Tracking stopped: {error}").format(error=job.error))
        elif job.isPreview and job.cancelled:
            self.status(_("Cancelled before the frames reached the server; click again to start over."))
        elif job.isPreview:
            self.status(_("Frame {frame} updated.").format(frame=job.plan.previewFrame))
        elif job.cancelled:
            self.status(_("Cancelled: {n} finished frames kept.").format(n=job.writtenFrames))
        else:
            self._notePropagated(job)
            self.status(_("Done: {n} frames written.").format(n=job.writtenFrames))

    def _notePropagated(self, job: TrackingJob) -> None:
        """Remember the prompts each written segment was propagated with (for :meth:`changedSegmentIds`)."""
        segmentation = self.logic.segmentationNode
        if segmentation is None or segmentation is not job.plan.segmentationNode:
            return
        for segmentId in job.plan.writeObjects.values():
            if segmentation.GetSegmentation().GetSegment(segmentId) is not None:
                self._propagated[(segmentation.GetID(), segmentId)] = _promptDigest(self.logic.getPrompts(segmentId))

    # ------------------------------------------------------------------ import
    def importVideo(self, source, progressCallback=None, cancelEvent: threading.Event | None = None, **options):
        """Import a video file, image folder or array (``SAM2STrackingLogic.importVideo``) and make it
        current with its whole frame range. Returns the node, or None when the user cancelled (a
        message says so; nothing was added; not an error).

        Raises what the import raises otherwise (``NotEnoughMemoryError``, ``ValueError`` ...)."""
        return self._import(self.logic.importVideo, source, progressCallback, cancelEvent, options)

    def importSequence(
        self, sequenceNode, progressCallback=None, cancelEvent: threading.Event | None = None, **options
    ):
        """:meth:`importVideo` for a Sequence of 2D frames (``SAM2STrackingLogic.importSequence``)."""
        return self._import(self.logic.importSequence, sequenceNode, progressCallback, cancelEvent, options)

    def _import(self, function, source, progressCallback, cancelEvent, options):
        if self.runner.isRunning():
            raise TrackingBusyError(_("Tracking is running; cancel it before importing another video."))
        try:
            node = function(source, progressCallback=progressCallback, cancelEvent=cancelEvent, **options)
        except ImportCancelled:
            self.status(_("Import cancelled; nothing was added."))
            return None
        self.setVideoNode(node)
        return node

    # ------------------------------------------------------------------ export
    def exportCoco(self, path: str, overwrite: bool = False) -> str | None:
        """Export > COCO: write all segments as a COCO instance ``.json`` (``logic.exportCoco``; a
        ``.json`` suffix is added when missing) and say where. Returns the path, or None when
        pycocotools is missing (the status says how to install it; nothing written).

        Raises:
            TrackingBusyError: tracking runs. outputs.OutputError (a ValueError): bad path, or an
                existing file without ``overwrite`` (the shell asks the user first). OSError: writing failed.
        """
        from .coco import CocoUnavailableError

        if self.runner.isRunning():
            raise TrackingBusyError(_("Tracking is running; wait for it or cancel it before exporting."))
        path = str(path) if str(path).lower().endswith(".json") else f"{path}.json"
        try:
            written = self.logic.exportCoco(path, overwrite=overwrite)
        except CocoUnavailableError as error:
            self.status(str(error))
            return None
        self.status(_("Saved COCO annotations to {path}").format(path=written))
        return written
