"""The "SAM2S" Segment Editor effect: click on a video frame to prompt the tracker, see that
frame's mask at once, propagate through the video.

Registered by the SAM2SSlicer module on ``startupCompleted`` (``registerEffect``). A thin adapter:
prompts, previews and tracking go through the module's shared ``SAM2STrackingLogic`` and
``TrackingRunner`` (the engine in a tracking server process, polled by a QTimer that writes MRML).

Mouse and keyboard (in a slice view showing the video, axial):

==================  =========================================================
click               positive point (inside the object) for the selected segment
Shift+click         negative point (outside the object)
X                   box tool on / off; with it, drag a box around the object
Return              propagate forward from the shown frame
Shift+Return        propagate backward from the shown frame
Ctrl+Return         propagate in both directions
BackSpace           remove the last click of the selected segment on this frame
Delete              clear the selected segment's prompts on this frame
Escape              cancel tracking (finished frames are kept)
Ctrl+Z / Ctrl+Y     Segment Editor undo / redo of the written masks
==================  =========================================================
"""

import os

import qt
import slicer
import vtk
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

TOOL_POINT, TOOL_BOX = "point", "box"


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Prompt the SAM2S tracker with clicks and boxes, preview, propagate."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "SAM2S"
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self._boxStart = None  # (x, y, frame) while dragging a box
        self._boxPipelines = {}

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "..", "Resources", "Icons", "SegmentEditorSAM2S.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()

    def helpText(self):
        return """<html>Track the selected segment through the video with SAM2S.<br>
<b>Click</b>: positive point, <b>Shift+click</b>: negative point on the shown frame (its mask appears at once).
<b>X</b>: box tool (drag a box). <b>Return</b>: propagate forward, <b>Shift+Return</b>: backward,
<b>Ctrl+Return</b>: both. <b>BackSpace</b>: remove the last click, <b>Delete</b>: clear the frame's prompts,
<b>Escape</b>: cancel tracking. Undo with the Segment Editor's Undo button (Ctrl+Z).
Prompts are saved with the scene as markups points.</html>"""

    # ------------------------------------------------------------------ shared module objects
    @staticmethod
    def _module():
        import SAM2SSlicer

        return SAM2SSlicer

    def _tracking(self):
        return self._module().getSharedLogic().tracking

    def _runner(self):
        return self._module().getSharedRunner()

    def _syncNodes(self) -> bool:
        """Point the logic at the editor's segmentation and the video; False (with a message) if impossible."""
        tracking = self._tracking()
        parameterNode = self.scriptedEffect.parameterSetNode()
        segmentationNode = parameterNode.GetSegmentationNode() if parameterNode else None
        source = None
        if parameterNode is not None:  # GetSourceVolumeNode since Slicer 5.4, GetMasterVolumeNode before
            getSource = getattr(parameterNode, "GetSourceVolumeNode", None) or parameterNode.GetMasterVolumeNode
            source = getSource()
        from SAM2SSlicerLib.videoimport import isVideoVolume

        try:
            if source is not None and isVideoVolume(source) and source is not tracking.videoNode:
                tracking.setVideoNode(source)
            if tracking.videoNode is None:
                self._status("Import a video in the SAM2S module first.")
                return False
            if segmentationNode is not tracking.segmentationNode:
                tracking.setSegmentationNode(segmentationNode)
        except Exception as error:  # noqa: BLE001 - shown to the user
            self._status(str(error))
            return False
        return segmentationNode is not None

    # ------------------------------------------------------------------ options
    def setupOptionsFrame(self):
        toolsLayout = qt.QHBoxLayout()
        self.pointToolButton = qt.QRadioButton("Points")
        self.pointToolButton.toolTip = "Click = positive point, Shift+click = negative point."
        self.boxToolButton = qt.QRadioButton("Box (X)")
        self.boxToolButton.toolTip = "Drag a box around the object on the shown frame."
        toolsLayout.addWidget(self.pointToolButton)
        toolsLayout.addWidget(self.boxToolButton)
        self.scriptedEffect.addLabeledOptionsWidget("Prompt:", toolsLayout)
        self.pointToolButton.connect("toggled(bool)", self.updateMRMLFromGUI)

        propagateLayout = qt.QHBoxLayout()
        self.backwardButton = qt.QPushButton("Backward")
        self.backwardButton.toolTip = "Track backward from the shown frame (Shift+Return)."
        self.bothButton = qt.QPushButton("Both")
        self.bothButton.toolTip = "Track forward, then backward from the shown frame (Ctrl+Return)."
        self.forwardButton = qt.QPushButton("Forward")
        self.forwardButton.toolTip = "Track forward from the shown frame (Return)."
        for button, direction in (
            (self.backwardButton, "backward"),
            (self.bothButton, "both"),
            (self.forwardButton, "forward"),
        ):
            propagateLayout.addWidget(button)
            button.connect("clicked()", lambda d=direction: self.propagate(d))
        self.scriptedEffect.addLabeledOptionsWidget("Propagate:", propagateLayout)

        self.allSegmentsCheckBox = qt.QCheckBox("All prompted segments")
        self.allSegmentsCheckBox.toolTip = "Track every segment with prompts, not only the selected one."
        self.scriptedEffect.addOptionsWidget(self.allSegmentsCheckBox)

        progressLayout = qt.QHBoxLayout()
        self.progressBar = qt.QProgressBar()
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.toolTip = "Stop after the current frame; finished frames are kept (Escape)."
        self.cancelButton.connect("clicked()", lambda: self._runner().cancel())
        progressLayout.addWidget(self.progressBar)
        progressLayout.addWidget(self.cancelButton)
        self.scriptedEffect.addOptionsWidget(progressLayout)
        self.statusLabel = qt.QLabel("")
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

    def activate(self):
        runner = self._runner()
        if self.onJobProgress not in runner.listeners:
            runner.listeners.append(self.onJobProgress)
        self._syncNodes()

    def deactivate(self):
        runner = self._runner()
        if self.onJobProgress in runner.listeners:
            runner.listeners.remove(self.onJobProgress)
        self._clearBox()

    def setMRMLDefaults(self):
        self.scriptedEffect.setParameterDefault("Tool", TOOL_POINT)

    def updateGUIFromMRML(self):
        tool = self.scriptedEffect.parameter("Tool") if self.scriptedEffect.parameterDefined("Tool") else TOOL_POINT
        for button, value in ((self.pointToolButton, TOOL_POINT), (self.boxToolButton, TOOL_BOX)):
            wasBlocked = button.blockSignals(True)
            button.checked = tool == value
            button.blockSignals(wasBlocked)

    def updateMRMLFromGUI(self):
        self.scriptedEffect.setParameter("Tool", TOOL_POINT if self.pointToolButton.checked else TOOL_BOX)

    def _status(self, text):
        if hasattr(self, "statusLabel"):
            self.statusLabel.text = text
        slicer.util.showStatusMessage(f"SAM2S: {text}", 4000)

    # ------------------------------------------------------------------ interaction
    def _pixel(self, xy, viewWidget):
        """(x, y, frame) of a view position in video pixels (x right, y down), or None when the view
        does not show the video upright (axial) or the position is outside the frame."""
        video = self._tracking().videoNode
        if video is None:
            return None
        sliceToRas = viewWidget.mrmlSliceNode().GetSliceToRAS()
        rasToIjk = vtk.vtkMatrix4x4()
        video.GetRASToIJKMatrix(rasToIjk)
        normal = rasToIjk.MultiplyPoint(
            [sliceToRas.GetElement(0, 2), sliceToRas.GetElement(1, 2), sliceToRas.GetElement(2, 2), 0.0]
        )
        length = sum(v * v for v in normal[:3]) ** 0.5
        if length == 0 or abs(normal[2]) / length < 0.99:
            self._status("Show the video in an axial view (frames upright) to place prompts.")
            return None
        ras = self.xyToRas(xy, viewWidget)
        i, j, k, _ = rasToIjk.MultiplyPoint([ras[0], ras[1], ras[2], 1.0])
        width, height, frames = video.GetImageData().GetDimensions()
        frame = int(round(k))
        if not (0 <= i <= width - 1 and 0 <= j <= height - 1 and 0 <= frame < frames):
            return None
        return float(i), float(j), frame

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if viewWidget.className() != "qMRMLSliceWidget":
            return False
        if eventId == vtk.vtkCommand.KeyPressEvent:
            return self._onKey(callerInteractor, viewWidget)
        if eventId not in (
            vtk.vtkCommand.LeftButtonPressEvent,
            vtk.vtkCommand.MouseMoveEvent,
            vtk.vtkCommand.LeftButtonReleaseEvent,
        ):
            return False
        if eventId == vtk.vtkCommand.MouseMoveEvent and self._boxStart is None:
            return False
        if not self._syncNodes():
            return eventId == vtk.vtkCommand.LeftButtonPressEvent
        xy = callerInteractor.GetEventPosition()
        tool = self.scriptedEffect.parameter("Tool") if self.scriptedEffect.parameterDefined("Tool") else TOOL_POINT
        if tool == TOOL_BOX:
            return self._onBoxEvent(eventId, xy, viewWidget)
        if eventId != vtk.vtkCommand.LeftButtonPressEvent:
            return False
        pixel = self._pixel(xy, viewWidget)
        if pixel is None:
            return True
        x, y, frame = pixel
        positive = not callerInteractor.GetShiftKey()
        self._addPrompt(lambda segmentId: self._tracking().addPointPrompt(segmentId, frame, x, y, positive), frame)
        return True

    def _onBoxEvent(self, eventId, xy, viewWidget):
        if eventId == vtk.vtkCommand.LeftButtonPressEvent:
            self._boxStart = self._pixel(xy, viewWidget)
            self._boxStartXy = xy
            return True
        if self._boxStart is None:
            return False
        if eventId == vtk.vtkCommand.MouseMoveEvent:
            self._drawBox(viewWidget, self._boxStartXy, xy)
            return True
        # release
        start, self._boxStart = self._boxStart, None
        self._clearBox()
        end = self._pixel(xy, viewWidget)
        if start is None or end is None or end[2] != start[2]:
            self._status("Drag the box inside one frame.")
            return True
        frame = start[2]
        box = (start[0], start[1], end[0], end[1])
        self._addPrompt(lambda segmentId: self._tracking().setBoxPrompt(segmentId, frame, box), frame)
        return True

    def _addPrompt(self, addFunction, frame):
        """Store a prompt for the selected segment and preview its frame (computed by the tracking server)."""
        if self._runner().isRunning() and not self._runner().job.isPreview:
            self._status("Tracking is running: press Cancel (Escape) before adding prompts.")
            return
        segmentId = self.scriptedEffect.parameterSetNode().GetSelectedSegmentID()
        if not segmentId:
            self._status("Select a segment first.")
            return
        try:
            addFunction(segmentId)
        except Exception as error:  # noqa: BLE001 - bad prompt: tell the user, lose nothing
            self._status(str(error))
            return
        self._preview(segmentId, frame)

    def _preview(self, segmentId, frame):
        if not self._ensureDependencies():
            return
        tracking = self._tracking()
        self._status(f"Computing frame {frame}...")
        self._runner().startWhenIdle(
            lambda: tracking.createPreviewJob(segmentId, frame),
            beforeWrite=self.scriptedEffect.saveStateForUndo,
            onFinished=self.onJobFinished,
        )

    def _ensureDependencies(self):
        return self._module().ensureDependenciesOnce()

    def propagate(self, direction):
        if not self._syncNodes() or not self._ensureDependencies():
            return
        tracking = self._tracking()
        segmentId = self.scriptedEffect.parameterSetNode().GetSelectedSegmentID()
        segmentIds = None if self.allSegmentsCheckBox.checked else [segmentId]
        frame = self._module().currentFrameIndex(tracking.videoNode)
        for sliceViewName in slicer.app.layoutManager().sliceViewNames():
            widget = slicer.app.layoutManager().sliceWidget(sliceViewName)
            if widget.sliceView().hasFocus():
                frame = self._module().currentFrameIndex(tracking.videoNode, sliceViewName)
        try:
            job = tracking.createTrackingJob(segmentIds, startFrame=frame, direction=direction)
            self._runner().start(job, beforeWrite=self.scriptedEffect.saveStateForUndo, onFinished=self.onJobFinished)
        except Exception as error:  # noqa: BLE001
            self._status(str(error))

    def _onKey(self, interactor, viewWidget):
        key = interactor.GetKeySym()
        if key in ("Return", "KP_Enter"):
            direction = (
                "both" if interactor.GetControlKey() else ("backward" if interactor.GetShiftKey() else "forward")
            )
            self.propagate(direction)
            return True
        if key == "Escape" and self._runner().isRunning():
            self._runner().cancel()
            return True
        if key in ("x", "X"):
            tool = self.scriptedEffect.parameter("Tool") if self.scriptedEffect.parameterDefined("Tool") else TOOL_POINT
            self.scriptedEffect.setParameter("Tool", TOOL_BOX if tool == TOOL_POINT else TOOL_POINT)
            self.updateGUIFromMRML()
            return True
        if key in ("BackSpace", "Delete") and self._syncNodes():
            segmentId = self.scriptedEffect.parameterSetNode().GetSelectedSegmentID()
            frame = self._module().currentFrameIndex(self._tracking().videoNode, viewWidget.mrmlSliceNode().GetName())
            if segmentId and frame is not None:
                if key == "BackSpace":
                    removed = self._tracking().removeLastPointPrompt(segmentId, frame)
                else:
                    removed = self._tracking().clearPrompts(segmentId, frame)
                self._status(f"Prompts changed on frame {frame}." if removed else "No prompt to remove on this frame.")
                if removed and frame in self._tracking().getPrompts(segmentId):
                    self._preview(segmentId, frame)
            return True
        return False

    # ------------------------------------------------------------------ box drawing
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
            pipeline = (points, polyData, actor)
            self._boxPipelines[viewWidget] = pipeline
        points, polyData, _ = pipeline
        (x0, y0), (x1, y1) = xy0, xy1
        for index, (x, y) in enumerate(((x0, y0), (x1, y0), (x1, y1), (x0, y1))):
            points.SetPoint(index, x, y, 0)
        points.Modified()
        polyData.Modified()
        viewWidget.sliceView().scheduleRender()

    def _clearBox(self):
        for viewWidget, (_, _, actor) in self._boxPipelines.items():
            self.scriptedEffect.removeActor2D(viewWidget, actor)
            viewWidget.sliceView().scheduleRender()
        self._boxPipelines = {}

    # ------------------------------------------------------------------ progress
    def onJobProgress(self, job, finished):
        if not hasattr(self, "progressBar"):
            return
        self.progressBar.maximum = max(job.totalFrames, 1)
        self.progressBar.value = job.doneFrames
        if not job.isPreview:
            self.statusLabel.text = f"{job.status}: {job.doneFrames} of {job.totalFrames} frames"

    def onJobFinished(self, job):
        if job.error is not None:
            self._status(f"Stopped: {job.error}")
        elif job.isPreview:
            self._status(f"Frame {job.plan.previewFrame} updated.")
        elif job.cancelled:
            self._status(f"Cancelled: {job.writtenFrames} finished frames kept.")
        else:
            self._status(f"Done: {job.writtenFrames} frames written.")
