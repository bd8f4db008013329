"""The "SAM2S" Segment Editor effect: click on a video frame to prompt the tracker, see that
frame's mask at once, propagate through the video.

Registered by the SAM2SSlicer module on ``startupCompleted`` (``registerEffect``). A thin Qt shell
over the module's shared ``SAM2SSlicerLib.controller.SAM2SController``: view positions become
``(x, y, frame)`` pixels (``controller.pixelOfRas``), and the controller decides what a click or
key does (its ``SHORTCUTS`` table is this effect's help, and the README's). Errors become status
messages; a click is never passed on as a window/level drag while the effect is active.
"""

import os

import qt
import slicer
import vtk
from SAM2SSlicerLib.controller import SCOPES, TOOL_BOX, TOOL_POINT, frameOfSlice, pixelOfRas
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect
from slicer.i18n import tr as _


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Prompt the SAM2S tracker with clicks and boxes, preview, propagate."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "SAM2S"
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self._boxPipelines = {}
        self._boxStartXy = None

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "..", "Resources", "Icons", "SegmentEditorSAM2S.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()

    def helpText(self):
        from SAM2SSlicerLib.controller import DOCUMENTATION_URL, SHORTCUTS

        rows = "".join(f"<br><b>{s.keys}</b>: {s.action}" for s in SHORTCUTS)  # translated in controls.py
        link = _('See the <a href="{url}">documentation</a>.').format(url=DOCUMENTATION_URL)
        return (
            "<html>" + _("Track the selected segment through the video with SAM2S.") + rows + "<br>" + link + "</html>"
        )

    @staticmethod
    def _controller():
        import SAM2SSlicer

        return SAM2SSlicer.getSharedController()

    # ------------------------------------------------------------------ options
    def setupOptionsFrame(self):
        toolsLayout = qt.QHBoxLayout()
        self.pointToolButton = qt.QRadioButton(_("Points"))
        self.pointToolButton.toolTip = _("Click = positive point, Shift+click = negative point.")
        self.boxToolButton = qt.QRadioButton(_("Box (X)"))
        self.boxToolButton.toolTip = _("Drag a box around the object on the shown frame.")
        toolsLayout.addWidget(self.pointToolButton)
        toolsLayout.addWidget(self.boxToolButton)
        self.scriptedEffect.addLabeledOptionsWidget(_("Prompt:"), toolsLayout)
        self.pointToolButton.connect("toggled(bool)", self.updateMRMLFromGUI)

        propagateLayout = qt.QHBoxLayout()
        for text, tip, direction in (
            (_("Backward"), _("Track backward from the shown frame (Shift+Return)."), "backward"),
            (_("Both"), _("Track forward, then backward from the shown frame (Ctrl+Return)."), "both"),
            (_("Forward"), _("Track forward from the shown frame (Return)."), "forward"),
        ):
            button = qt.QPushButton(text)
            button.toolTip = tip
            button.connect("clicked()", lambda d=direction: self.propagate(d))
            propagateLayout.addWidget(button)
        self.scriptedEffect.addLabeledOptionsWidget(_("Propagate:"), propagateLayout)

        self.scopeComboBox = qt.QComboBox()
        self.scopeComboBox.addItems([_("Selected segment"), _("New and changed segments"), _("All prompted segments")])
        self.scopeComboBox.toolTip = _("Which segments to track; the others stay untouched.")
        self.scriptedEffect.addLabeledOptionsWidget(_("Segments:"), self.scopeComboBox)

        progressLayout = qt.QHBoxLayout()
        self.progressBar = qt.QProgressBar()
        self.cancelButton = qt.QPushButton(_("Cancel"))
        self.cancelButton.toolTip = _("Stop after the current frame; finished frames are kept (Escape).")
        self.cancelButton.connect("clicked()", lambda: self._controller().cancel())
        progressLayout.addWidget(self.progressBar)
        progressLayout.addWidget(self.cancelButton)
        self.scriptedEffect.addOptionsWidget(progressLayout)
        self.statusLabel = qt.QLabel("")
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

    def activate(self):
        """Selected: listen to progress and messages, install missing packages (asks first: a
        selection, not a click in a view), follow the editor's video and segmentation."""
        controller = self._controller()
        if controller.needsComputeChoice():  # selected in the Segment Editor module first (N19)
            import SAM2SSlicer

            SAM2SSlicer.askWhereToCompute(controller)
        if self.onJobProgress not in controller.runner.listeners:
            controller.runner.listeners.append(self.onJobProgress)
        if self.onStatus not in controller.statusListeners:
            controller.statusListeners.append(self.onStatus)
        controller.undoEditor = self._owningEditor()  # N9: the undo budget goes to this effect's editor
        controller.effectActivated(self.scriptedEffect.parameterSetNode())
        self.updateGUIFromMRML()

    def deactivate(self):
        """Deselected (Escape, another effect, the module left): the controller stops taking events
        and stops tracking started from here; the box outline goes. A controller that was never
        made is not made now (N18)."""
        controller = self._existingController()
        if controller is not None:
            controller.effectDeactivated()
        self._clearBox()
        self._removeListeners()

    def cleanup(self):
        """The effect is deleted (Slicer exits or the editor widget goes): it never makes the
        controller (N18: possibly during shutdown)."""
        self._clearBox()
        self._removeListeners()

    def _owningEditor(self):
        """The ``qMRMLSegmentEditorWidget`` this effect instance belongs to (the SAM2S panel's or the
        Segment Editor module's): the one whose segment editor node is the effect's parameter node
        (``undo.editorOf``). None if no shown editor matches (no undo states are saved then)."""
        from SAM2SSlicerLib import undo

        editors = slicer.util.findChildren(slicer.util.mainWindow(), className="qMRMLSegmentEditorWidget")
        return undo.editorOf(self.scriptedEffect.parameterSetNode(), editors)

    @staticmethod
    def _existingController():
        import SAM2SSlicer

        return SAM2SSlicer.existingSharedController()

    def _removeListeners(self):
        controller = self._existingController()
        if controller is None:
            return
        for listeners, listener in (
            (controller.runner.listeners, self.onJobProgress),
            (controller.statusListeners, self.onStatus),
        ):
            if listener in listeners:
                listeners.remove(listener)

    def setMRMLDefaults(self):
        """No effect parameters: the tool is the controller's, kept in the module's parameter node
        (``SAM2SSlicerLib.parameters``) with the video, segmentation and frame range (N21)."""

    def updateGUIFromMRML(self):
        controller = self._existingController()  # not made just to show the tool (N18)
        tool = controller.tool if controller is not None else TOOL_POINT
        for button, value in ((self.pointToolButton, TOOL_POINT), (self.boxToolButton, TOOL_BOX)):
            wasBlocked = button.blockSignals(True)
            button.checked = tool == value
            button.blockSignals(wasBlocked)

    def updateMRMLFromGUI(self):
        self._controller().setTool(TOOL_POINT if self.pointToolButton.checked else TOOL_BOX)

    def onStatus(self, text):
        self.statusLabel.text = text

    # ------------------------------------------------------------------ interaction
    def _pixel(self, xy, viewWidget):
        """``(x, y, frame)`` of view position ``xy`` (``controller.pixelOfRas``), or None."""
        video = self._controller().logic.videoNode
        try:
            return pixelOfRas(video, self.xyToRas(xy, viewWidget), viewWidget.mrmlSliceNode().GetSliceToRAS())
        except ValueError as error:  # the view is not axial to the video
            self._controller().status(str(error))
            return None

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if viewWidget.className() != "qMRMLSliceWidget":
            return False
        controller = self._controller()
        editorNode = self.scriptedEffect.parameterSetNode()
        if eventId == vtk.vtkCommand.KeyPressEvent:
            frame = frameOfSlice(controller.logic.videoNode, viewWidget.mrmlSliceNode().GetSliceToRAS())
            handled = controller.keyPress(
                callerInteractor.GetKeySym(),
                bool(callerInteractor.GetControlKey()),
                bool(callerInteractor.GetShiftKey()),
                frame,
                editorNode,
            )
            self.updateGUIFromMRML()
            return handled
        xy = callerInteractor.GetEventPosition()
        if controller.tool == TOOL_BOX:
            if eventId == vtk.vtkCommand.LeftButtonPressEvent:
                self._boxStartXy = xy
                return controller.boxPress(self._pixel(xy, viewWidget))
            if eventId == vtk.vtkCommand.MouseMoveEvent and controller.isDraggingBox():
                self._drawBox(viewWidget, self._boxStartXy, xy)
                return True
            if eventId == vtk.vtkCommand.LeftButtonReleaseEvent and controller.isDraggingBox():
                self._clearBox()
                return controller.boxRelease(self._pixel(xy, viewWidget), editorNode)
            return False
        if eventId != vtk.vtkCommand.LeftButtonPressEvent:
            return False
        return controller.click(self._pixel(xy, viewWidget), bool(callerInteractor.GetShiftKey()), editorNode)

    def propagate(self, direction):
        """Propagate from the frame of the focused slice view (Red when none has focus)."""
        controller = self._controller()
        frame = None
        layoutManager = slicer.app.layoutManager()
        for viewName in ["Red"] + list(layoutManager.sliceViewNames()):
            widget = layoutManager.sliceWidget(viewName)
            if widget is not None and (frame is None or widget.sliceView().hasFocus()):
                frame = frameOfSlice(controller.logic.videoNode, widget.mrmlSliceNode().GetSliceToRAS())
        scope = SCOPES[max(self.scopeComboBox.currentIndex, 0)]
        controller.propagate(direction, frame, self.scriptedEffect.parameterSetNode(), scope=scope, origin="effect")

    # ------------------------------------------------------------------ box outline
    def _drawBox(self, viewWidget, xy0, xy1):
        pipeline = self._boxPipelines.get(viewWidget)
        if pipeline is None:
            points = vtk.vtkPoints()
            points.SetNumberOfPoints(4)
            lines = vtk.vtkCellArray()
            lines.InsertNextCell(5, [0, 1, 2, 3, 0])
            polyData = vtk.vtkPolyData()
            polyData.SetPoints(points)
            polyData.SetLines(lines)
            mapper = vtk.vtkPolyDataMapper2D()
            mapper.SetInputData(polyData)
            actor = vtk.vtkActor2D()
            actor.SetMapper(mapper)
            actor.GetProperty().SetColor(1.0, 1.0, 0.2)
            actor.GetProperty().SetLineWidth(2)
            self.scriptedEffect.addActor2D(viewWidget, actor)
            pipeline = self._boxPipelines[viewWidget] = (points, polyData, actor)
        points, polyData, _actor = pipeline
        (x0, y0), (x1, y1) = xy0, xy1
        for index, (x, y) in enumerate(((x0, y0), (x1, y0), (x1, y1), (x0, y1))):
            points.SetPoint(index, x, y, 0)
        points.Modified()
        polyData.Modified()
        viewWidget.sliceView().scheduleRender()

    def _clearBox(self):
        for viewWidget, (_points, _polyData, actor) in self._boxPipelines.items():
            self.scriptedEffect.removeActor2D(viewWidget, actor)
            viewWidget.sliceView().scheduleRender()
        self._boxPipelines = {}

    # ------------------------------------------------------------------ progress
    def onJobProgress(self, job, finished):
        self.progressBar.maximum = max(job.totalFrames, 1)
        self.progressBar.value = job.doneFrames
        self.cancelButton.enabled = not finished
