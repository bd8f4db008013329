"""SAM2S: track objects through endoscopic video in 3D Slicer with the SAM2S tracker.

Module, Widget, Logic and Test classes as in Slicer's scripted module template. The Logic is a
thin adapter over ``SAM2SSlicerLib.logic.SAM2STrackingLogic`` (plain Python, no Qt), shared with
the "SAM2S" Segment Editor effect (``SegmentEditorSAM2S/SegmentEditorEffect.py``), which this
module registers when Slicer has started. Tracking runs in a tracking server process (by default
a local one started with Slicer's Python; or a remote GPU server given by URL and token): Slicer's
PythonQt cannot run Python worker threads. A QTimer (:class:`TrackingRunner`, around the headless
``SAM2SSlicerLib.runner.JobRunner``) polls the server without blocking and writes finished frames
into MRML in chunks.
"""

from __future__ import annotations

import logging
import os
import threading

import ctk
import qt
import slicer
import vtk
from SAM2SSlicerLib import ModelSettings
from SAM2SSlicerLib.logic import SAM2STrackingLogic, TrackingBusyError
from SAM2SSlicerLib.videoimport import SOURCE, frameRate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

SETTINGS_KEY = "SAM2SSlicer/ModelSettings"
EFFECT_NAME = "SAM2S"


#
# SAM2SSlicer
#


class SAM2SSlicer(ScriptedLoadableModule):
    """Module description and registration of the Segment Editor effect."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SAM2S Video Tracking"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations", "Markups", "Sequences"]
        self.parent.contributors = ["SAM2SSlicer team"]
        self.parent.helpText = """
Track instruments and tissue through endoscopic / laparoscopic video with the SAM2S tracker
(SAM 2 for surgical video). Import a video, click on an object in one frame, propagate, correct
with more clicks and export the masklets as .seg.nrrd or per-frame label PNGs.
Keyboard shortcuts of the SAM2S Segment Editor effect: click = positive point, Shift+click =
negative point, X = box tool on/off, Return = propagate forward, Shift+Return = backward,
Ctrl+Return = both directions, BackSpace = remove the last click of the frame, Delete = clear the
frame's prompts, Escape = cancel tracking.
"""
        self.parent.acknowledgementText = """
SAM 2 by Meta AI (Apache-2.0); SAM2S (arXiv 2511.16618) memory design. Developed by the
SAM2SSlicer team. The model weights are downloaded only when you click "Download".
"""
        slicer.app.connect("startupCompleted()", registerEffect)


def registerEffect():
    """Register the "SAM2S" Segment Editor effect (once Slicer has started)."""
    import qSlicerSegmentationsEditorEffectsPythonQt as effects

    path = os.path.join(os.path.dirname(__file__), "SegmentEditorSAM2S", "SegmentEditorEffect.py")
    instance = effects.qSlicerSegmentEditorScriptedEffect(None)
    instance.setPythonSource(path.replace("\\", "/"))
    instance.self().register()


#
# Shared logic and worker
#

_sharedLogic = None


def getSharedLogic() -> SAM2SSlicerLogic:
    """The one module logic used by the module panel and the Segment Editor effect (one engine
    session); its tracking server is stopped when Slicer quits."""
    global _sharedLogic
    if _sharedLogic is None:
        _sharedLogic = SAM2SSlicerLogic()
        slicer.app.connect("aboutToQuit()", _sharedLogic.tracking.close)
    return _sharedLogic


class TrackingRunner:
    """A QTimer (every 100 ms) around ``SAM2SSlicerLib.runner.JobRunner``: ``start`` begins a job
    (prompts are sent, a propagation starts in the tracking server), each timeout polls it once
    without blocking and writes its finished frames into MRML; ``listeners`` get ``(job, finished)``."""

    def __init__(self, logic: SAM2STrackingLogic) -> None:
        from SAM2SSlicerLib.runner import JobRunner

        self.jobs = JobRunner(logic)
        self.listeners = self.jobs.listeners
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self._tick)

    def isRunning(self) -> bool:
        return self.jobs.isRunning()

    def start(self, job, beforeWrite=None, onFinished=None) -> None:
        """Begin ``job``; raises ``TrackingBusyError`` when another job runs."""
        self.jobs.start(job, beforeWrite, onFinished)
        self.timer.start()

    def startWhenIdle(self, makeJob, beforeWrite=None, onFinished=None) -> None:
        self.jobs.startWhenIdle(makeJob, beforeWrite, onFinished)
        self.timer.start()

    def cancel(self) -> None:
        self.jobs.cancel()

    def _tick(self) -> None:
        self.jobs.tick()
        if not self.jobs.isRunning():
            self.timer.stop()


_sharedRunner = None


def getSharedRunner() -> TrackingRunner:
    """The worker shared by the module panel and the effect (one job at a time)."""
    global _sharedRunner
    if _sharedRunner is None:
        _sharedRunner = TrackingRunner(getSharedLogic().tracking)
    return _sharedRunner


_dependenciesReady = False


def ensureDependenciesOnce() -> bool:
    """Install missing Python packages on first use (the user is asked first); False if unavailable.

    Called before the first import, download, preview or tracking - never on module load.
    """
    global _dependenciesReady
    if _dependenciesReady:
        return True
    from SAM2SSlicerLib.dependencies import ensureDependencies

    try:
        ensureDependencies()
    except Exception as error:  # noqa: BLE001 - shown to the user
        slicer.util.errorDisplay(f"SAM2S cannot run without its Python packages:\n{error}")
        return False
    _dependenciesReady = True
    return True


def currentFrameIndex(videoNode, sliceViewName: str = "Red") -> int | None:
    """The video frame (K index) shown in slice view ``sliceViewName``, or None."""
    if videoNode is None or slicer.app.layoutManager() is None:
        return None
    widget = slicer.app.layoutManager().sliceWidget(sliceViewName)
    if widget is None:
        return None
    sliceToRas = widget.mrmlSliceNode().GetSliceToRAS()
    center = [sliceToRas.GetElement(r, 3) for r in range(3)] + [1.0]
    rasToIjk = vtk.vtkMatrix4x4()
    videoNode.GetRASToIJKMatrix(rasToIjk)
    k = int(round(rasToIjk.MultiplyPoint(center)[2]))
    frames = videoNode.GetImageData().GetDimensions()[2]
    return min(max(k, 0), frames - 1)


def showVideo(videoNode) -> None:
    """Show ``videoNode`` in the Red slice view, axial (frames upright), fitted."""
    slicer.util.setSliceViewerLayers(background=videoNode, fit=True)
    layoutManager = slicer.app.layoutManager()
    if layoutManager is not None:
        sliceNode = layoutManager.sliceWidget("Red").mrmlSliceNode()
        sliceNode.SetOrientation("Axial")
        layoutManager.sliceWidget("Red").sliceLogic().FitSliceToAll()


#
# SAM2SSlicerWidget
#


class SAM2SSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: import, model and device, prompt tools, propagation with progress and
    Cancel, export. Thin: every action calls the shared logic."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.runner = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SAM2SSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = getSharedLogic()
        self.runner = getSharedRunner()
        self.runner.listeners.append(self.onJobProgress)

        # Segment editor embedded in the panel (segments table, SAM2S effect, Undo / Redo).
        self.editor = slicer.qMRMLSegmentEditorWidget()
        self.editor.setMaximumNumberOfUndoStates(10)
        self.editor.setMRMLScene(slicer.mrmlScene)
        self.ui.promptsCollapsibleButton.layout().addWidget(self.editor)
        self.editorNode = self._segmentEditorNode()
        self.editor.setMRMLSegmentEditorNode(self.editorNode)

        self.ui.checkpointPathLineEdit.filters = ctk.ctkPathLineEdit.Files | ctk.ctkPathLineEdit.Readable
        self.ui.checkpointPathLineEdit.nameFilters = ["PyTorch checkpoint (*.pt *.pth)"]
        self.ui.configComboBox.addItems(self._configNames())
        self.ui.deviceComboBox.addItems(["auto", "cpu", "cuda", "mps"])
        self.ui.imageSizeComboBox.addItems(["1024", "768", "512"])
        self.ui.memoryComboBox.addItems(["sam2", "divemem"])
        self._loadSettings()

        self.ui.videoSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onVideoChanged)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSegmentationChanged)
        self.ui.importVideoButton.connect("clicked(bool)", self.onImportVideoFile)
        self.ui.importFolderButton.connect("clicked(bool)", self.onImportFolder)
        self.ui.importSequenceButton.connect("clicked(bool)", self.onImportSequence)
        self.ui.createSegmentationButton.connect("clicked(bool)", self.onCreateSegmentation)
        self.ui.downloadButton.connect("clicked(bool)", self.onDownload)
        for widget in (
            self.ui.configComboBox,
            self.ui.deviceComboBox,
            self.ui.imageSizeComboBox,
            self.ui.memoryComboBox,
        ):
            widget.connect("currentIndexChanged(int)", self.onModelSettingsChanged)
        self.ui.checkpointPathLineEdit.connect("currentPathChanged(QString)", self.onModelSettingsChanged)
        self.ui.serverUrlLineEdit.connect("editingFinished()", self.onServerChanged)
        self.ui.serverTokenLineEdit.connect("editingFinished()", self.onServerChanged)
        self.ui.positivePointButton.connect("clicked(bool)", lambda: self.activateEffectTool("point"))
        self.ui.boxButton.connect("clicked(bool)", lambda: self.activateEffectTool("box"))
        self.ui.clearFramePromptsButton.connect("clicked(bool)", self.onClearFramePrompts)
        self.ui.clearSegmentPromptsButton.connect("clicked(bool)", self.onClearSegmentPrompts)
        self.ui.forwardButton.connect("clicked(bool)", lambda: self.onPropagate("forward"))
        self.ui.backwardButton.connect("clicked(bool)", lambda: self.onPropagate("backward"))
        self.ui.bothButton.connect("clicked(bool)", lambda: self.onPropagate("both"))
        self.ui.cancelButton.connect("clicked(bool)", self.runner.cancel)
        self.ui.exportSegNrrdButton.connect("clicked(bool)", self.onExportSegNrrd)
        self.ui.exportPngButton.connect("clicked(bool)", self.onExportPngs)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.onModelSettingsChanged()  # hand the saved settings to the logic
        self.onServerChanged()
        self.updateGUI()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.logic is not None:
            self.runner.cancel()
            self.logic.tracking.close()  # stops the local tracking server (started again on the next action)
        if self.runner is not None and self.onJobProgress in self.runner.listeners:
            self.runner.listeners.remove(self.onJobProgress)

    def enter(self) -> None:
        self.updateGUI()

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _configNames() -> list[str]:
        from SAM2SSlicerLib.settings import configNames  # no torch import: the module loads without it

        return configNames()

    def _segmentEditorNode(self):
        node = slicer.mrmlScene.GetSingletonNode("SAM2SSlicer", "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag("SAM2SSlicer")
            node = slicer.mrmlScene.AddNode(node)
        return node

    def ensureDependencies(self) -> bool:
        """Install missing Python packages on first use (asks first); False if unavailable."""
        return ensureDependenciesOnce()

    def _modelSettings(self) -> ModelSettings:
        return ModelSettings(
            configName=self.ui.configComboBox.currentText,
            checkpoint=self.ui.checkpointPathLineEdit.currentPath,
            device=self.ui.deviceComboBox.currentText,
            imageSize=int(self.ui.imageSizeComboBox.currentText),
            memory=self.ui.memoryComboBox.currentText,
        )

    def _loadSettings(self) -> None:
        import json

        try:
            values = json.loads(qt.QSettings().value(SETTINGS_KEY, "{}") or "{}")
        except (TypeError, ValueError):
            values = {}
        settings = ModelSettings.fromDict(values)
        self.ui.configComboBox.setCurrentText(settings.configName)
        self.ui.checkpointPathLineEdit.currentPath = settings.checkpoint
        self.ui.deviceComboBox.setCurrentText(settings.device)
        self.ui.imageSizeComboBox.setCurrentText(str(settings.imageSize))
        self.ui.memoryComboBox.setCurrentText(settings.memory)
        self.ui.serverUrlLineEdit.text = qt.QSettings().value(SETTINGS_KEY + "/serverUrl", "") or ""
        self.ui.serverTokenLineEdit.text = qt.QSettings().value(SETTINGS_KEY + "/serverToken", "") or ""

    # ---------------------------------------------------------------- GUI state
    def updateGUI(self) -> None:
        """Show the logic's nodes and enable what can be done now."""
        tracking = self.logic.tracking
        video, seg = tracking.videoNode, tracking.segmentationNode
        for selector, node in ((self.ui.videoSelector, video), (self.ui.segmentationSelector, seg)):
            wasBlocked = selector.blockSignals(True)
            selector.setCurrentNode(node)
            selector.blockSignals(wasBlocked)
        if video is not None:
            frames = video.GetImageData().GetDimensions()[2]
            for spin in (self.ui.firstFrameSpinBox, self.ui.lastFrameSpinBox):
                spin.maximum = frames - 1
            if self.ui.lastFrameSpinBox.value == 0:
                self.ui.lastFrameSpinBox.value = frames - 1
            rate = frameRate(video) or "unknown"
            source = video.GetAttribute(SOURCE) or ""
            self.ui.videoInfoLabel.text = f"{frames} frames, {rate} frames/s, {source}"
        self.updateButtons()
        self._updateCheckpointStatus()

    def updateButtons(self) -> None:
        """Enable / disable the action buttons (cheap: called on every progress update)."""
        tracking = self.logic.tracking
        video, seg = tracking.videoNode, tracking.segmentationNode
        busy = self.runner.isRunning()
        ready = video is not None and seg is not None and not busy
        for button in (self.ui.forwardButton, self.ui.backwardButton, self.ui.bothButton):
            button.enabled = ready
        self.ui.cancelButton.enabled = busy
        self.ui.createSegmentationButton.enabled = video is not None and not busy
        self.ui.exportSegNrrdButton.enabled = seg is not None and not busy
        self.ui.exportPngButton.enabled = seg is not None and not busy

    def _updateCheckpointStatus(self) -> None:
        if self.ui.checkpointPathLineEdit.currentPath:
            self.ui.checkpointStatusLabel.text = "Local checkpoint file."
            self.ui.downloadButton.enabled = False
            return
        if not _dependenciesReady:  # the cache check imports torch: not before the packages are there
            self.ui.checkpointStatusLabel.text = "Download it, or choose a local .pt file."
            self.ui.downloadButton.enabled = True
            return
        from SAM2SSlicerLib.settings import checkpointStatus

        path = checkpointStatus(self.ui.configComboBox.currentText)
        self.ui.checkpointStatusLabel.text = f"Downloaded: {path}" if path else "Not downloaded."
        self.ui.downloadButton.enabled = path is None

    # ---------------------------------------------------------------- nodes
    def onVideoChanged(self, node) -> None:
        try:
            self.logic.tracking.setVideoNode(node)
        except Exception as error:  # noqa: BLE001
            slicer.util.errorDisplay(str(error))
            return
        if node is not None:
            if hasattr(self.editor, "setSourceVolumeNode"):  # Slicer >= 5.4
                self.editor.setSourceVolumeNode(node)
            else:
                self.editor.setMasterVolumeNode(node)
            showVideo(node)
        self.updateGUI()

    def onSegmentationChanged(self, node) -> None:
        try:
            self.logic.tracking.setSegmentationNode(node)
        except Exception as error:  # noqa: BLE001
            slicer.util.errorDisplay(str(error))
            self.ui.segmentationSelector.setCurrentNode(self.logic.tracking.segmentationNode)
            return
        self.editor.setSegmentationNode(node)
        self.updateGUI()

    def onSceneEndClose(self, caller=None, event=None) -> None:
        self.runner.cancel()
        self.logic.tracking.forgetNodes()
        self.editorNode = self._segmentEditorNode()
        self.editor.setMRMLSegmentEditorNode(self.editorNode)
        self.updateGUI()

    # ---------------------------------------------------------------- import
    def _importOptions(self) -> dict:
        options = {"frameStep": int(self.ui.frameStepSpinBox.value)}
        if self.ui.timeRangeCheckBox.checked:
            options["startTime"] = float(self.ui.startTimeSpinBox.value)
            options["endTime"] = float(self.ui.endTimeSpinBox.value)
        if self.ui.maxWidthSpinBox.value > 0:
            options["maxWidth"] = int(self.ui.maxWidthSpinBox.value)
        return options

    def _runImport(self, function, *args, **options) -> None:
        """Run an import with a cancellable progress dialog (decoding on the main thread, with events
        processed after each frame, because the result is a new MRML node)."""
        if not self.ensureDependencies():
            return
        cancel = threading.Event()
        dialog = slicer.util.createProgressDialog(labelText="Importing frames...", maximum=100)
        dialog.connect("canceled()", cancel.set)

        def progress(done, total):
            dialog.setValue(int(100 * done / max(total, 1)))
            dialog.labelText = f"Importing frame {done} of {total}..."
            slicer.app.processEvents()

        try:
            with slicer.util.tryWithErrorDisplay("Import failed.", waitCursor=True):
                node = function(*args, progressCallback=progress, cancelEvent=cancel, **options)
                self.ui.videoSelector.setCurrentNode(node)
                showVideo(node)
        finally:
            dialog.close()
        self.updateGUI()

    def onImportVideoFile(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), "Import video", "", "Videos (*.mp4 *.avi *.mov *.mkv *.webm *.m4v)"
        )
        if path:
            self._runImport(self.logic.tracking.importVideo, path, **self._importOptions())

    def onImportFolder(self) -> None:
        path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Import image folder")
        if path:
            options = self._importOptions()
            if self.ui.frameRateSpinBox.value > 0:
                options["frameRate"] = float(self.ui.frameRateSpinBox.value)
            self._runImport(self.logic.tracking.importVideo, path, **options)

    def onImportSequence(self) -> None:
        sequence = self.ui.sequenceSelector.currentNode()
        if sequence is None:
            slicer.util.errorDisplay("Choose a Sequence of 2D frames to import first.")
            return
        self._runImport(self.logic.tracking.importSequence, sequence, **self._importOptions())

    def onCreateSegmentation(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not create a segmentation.", waitCursor=True):
            node = self.logic.tracking.createSegmentation()
            self.ui.segmentationSelector.setCurrentNode(node)
            self.logic.tracking.addSegment("Object 1")
        self.updateGUI()

    # ---------------------------------------------------------------- model
    def onModelSettingsChanged(self, *args) -> None:
        import json

        settings = self._modelSettings()
        try:
            self.logic.setModelSettings(settings)
        except TrackingBusyError as error:
            slicer.util.errorDisplay(str(error))
            return
        except ValueError as error:
            self.ui.checkpointStatusLabel.text = str(error)
            return
        qt.QSettings().setValue(SETTINGS_KEY, json.dumps(settings.toDict()))
        self._updateCheckpointStatus()

    def onServerChanged(self) -> None:
        """Use the remote tracking server of the URL and token fields (a local one when empty)."""
        url, token = self.ui.serverUrlLineEdit.text.strip(), self.ui.serverTokenLineEdit.text.strip()
        try:
            self.logic.setServer(url, token)
        except (TrackingBusyError, ValueError) as error:
            slicer.util.errorDisplay(str(error))
            return
        qt.QSettings().setValue(SETTINGS_KEY + "/serverUrl", url)
        qt.QSettings().setValue(SETTINGS_KEY + "/serverToken", token)

    def onDownload(self) -> None:
        """Download the checkpoint of the chosen config (the user clicked: consent), with a
        cancellable progress dialog; the download runs in a worker thread."""
        if not self.ensureDependencies():
            return
        from SAM2SSlicerLib.settings import downloadCheckpoint

        config = self.ui.configComboBox.currentText
        cancel = threading.Event()
        state = {"done": 0, "total": None, "error": None, "path": None}
        dialog = slicer.util.createProgressDialog(labelText=f"Downloading {config} from Meta...", maximum=100)
        dialog.connect("canceled()", cancel.set)

        def work():
            try:
                state["path"] = downloadCheckpoint(config, lambda d, t: state.update(done=d, total=t), cancel)
            except BaseException as error:  # noqa: BLE001 - reported below
                state["error"] = error

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        while thread.is_alive():
            total = state["total"] or 0
            dialog.setValue(int(100 * state["done"] / total) if total else 0)
            dialog.labelText = f"Downloading {config}: {state['done'] / 2**20:.0f} of {total / 2**20:.0f} MB"
            slicer.app.processEvents()
            thread.join(0.1)
        dialog.close()
        if state["error"] is not None and not cancel.is_set():
            slicer.util.errorDisplay(f"Download failed:\n{state['error']}")
        self._updateCheckpointStatus()

    # ---------------------------------------------------------------- prompts
    def activateEffectTool(self, tool: str) -> None:
        """Select the SAM2S effect in the embedded Segment Editor with ``tool`` ("point" / "box")."""
        self.editor.setActiveEffectByName(EFFECT_NAME)
        effect = self.editor.activeEffect()
        if effect is not None:
            effect.setParameter("Tool", tool)
            effect.self().updateGUIFromMRML()

    def _selectedSegmentId(self) -> str | None:
        return self.editorNode.GetSelectedSegmentID() or None

    def onClearFramePrompts(self) -> None:
        segmentId = self._selectedSegmentId()
        frame = currentFrameIndex(self.logic.tracking.videoNode)
        if segmentId and frame is not None:
            self.logic.tracking.clearPrompts(segmentId, frame)

    def onClearSegmentPrompts(self) -> None:
        segmentId = self._selectedSegmentId()
        if segmentId and slicer.util.confirmYesNoDisplay("Delete all prompts of the selected segment?"):
            self.logic.tracking.clearPrompts(segmentId)

    # ---------------------------------------------------------------- tracking
    def onPropagate(self, direction: str) -> None:
        if not self.ensureDependencies():
            return
        tracking = self.logic.tracking
        segmentIds = None if self.ui.allSegmentsCheckBox.checked else [self._selectedSegmentId()]
        if segmentIds == [None]:
            slicer.util.errorDisplay("Select a segment in the segments table first.")
            return
        first, last = int(self.ui.firstFrameSpinBox.value), int(self.ui.lastFrameSpinBox.value)
        start = currentFrameIndex(tracking.videoNode) if self.ui.fromCurrentFrameCheckBox.checked else None
        if start is not None:
            start = min(max(start, first), last)
        with slicer.util.tryWithErrorDisplay("Could not start tracking.", waitCursor=True):
            job = tracking.createTrackingJob(segmentIds, start, first, last, direction)
            self.runner.start(job, beforeWrite=self.editor.saveStateForUndo, onFinished=self.onJobFinished)
        self.updateGUI()

    def onJobProgress(self, job, finished) -> None:
        self.ui.progressBar.maximum = max(job.totalFrames, 1)
        self.ui.progressBar.value = job.doneFrames
        self.ui.statusLabel.text = f"{job.status}: {job.doneFrames} of {job.totalFrames} frames"
        self.updateButtons()

    def onJobFinished(self, job) -> None:
        if job.error is not None:
            slicer.util.errorDisplay(f"Tracking stopped: {job.error}")
        elif job.cancelled:
            self.ui.statusLabel.text = f"Cancelled: {job.writtenFrames} finished frames kept."
        else:
            self.ui.statusLabel.text = f"Done: {job.writtenFrames} frames written."
        for warning in job.warnings:
            logging.warning(f"SAM2S: {warning}")
        self.updateGUI()

    # ---------------------------------------------------------------- export
    def onExportSegNrrd(self) -> None:
        seg = self.logic.tracking.segmentationNode
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(), "Export segmentation", f"{seg.GetName()}.seg.nrrd", "Segmentation (*.seg.nrrd)"
        )
        if path:
            if not path.endswith(".seg.nrrd"):
                path += ".seg.nrrd"
            with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
                self.logic.tracking.exportSegmentation(path)
                slicer.util.showStatusMessage(f"Saved {path}", 5000)

    def onExportPngs(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Export label PNGs into folder")
        if folder:
            existing = [name for name in os.listdir(folder) if not name.startswith(".")]
            question = (
                f"{folder} is not empty ({len(existing)} files). Write the label PNGs into it? Files named like "
                "00000.png are replaced; other files stay."
            )
            if existing and not slicer.util.confirmOkCancelDisplay(question, "Export label PNGs"):
                return
            with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
                paths = self.logic.tracking.exportLabelPngs(folder, overwrite=bool(existing))
                slicer.util.showStatusMessage(f"Wrote {len(paths)} label PNGs to {folder}", 5000)


#
# SAM2SSlicerLogic
#


class SAM2SSlicerLogic(ScriptedLoadableModuleLogic):
    """Thin adapter: ``self.tracking`` is the headless ``SAM2STrackingLogic`` on ``slicer.mrmlScene``
    with Slicer's module logics; use its API (``importVideo``, ``addPointPrompt``, ``track``,
    ``exportSegmentation`` ...). Usable without the GUI."""

    def __init__(self) -> None:
        from SAM2SSlicerLib.backends import ServerBackend

        ScriptedLoadableModuleLogic.__init__(self)
        self.tracking = SAM2STrackingLogic(
            slicer.mrmlScene,
            segmentationsLogic=slicer.modules.segmentations.logic(),
            markupsLogic=slicer.modules.markups.logic(),
            sequencesLogic=slicer.modules.sequences.logic() if hasattr(slicer.modules, "sequences") else None,
            volumesLogic=slicer.modules.volumes.logic(),
            backend=ServerBackend(),  # a local tracking server, started on first use
        )

    def setServer(self, url: str, token: str) -> None:
        """Track in the server at ``url`` with ``token`` (a remote GPU machine), or in a local server
        when ``url`` is empty. Raises ``ValueError`` (a URL without token) or ``TrackingBusyError``."""
        from SAM2SSlicerLib.backends import ServerBackend

        current = self.tracking.backend
        if (getattr(current, "url", None) or "") == url and (getattr(current, "token", None) or "") == (
            token if url else ""
        ):
            return

        def uploadProgress(sent: int, total: int) -> None:
            slicer.util.showStatusMessage(f"SAM2S: uploading the frames to {url}: {100 * sent // max(total, 1)}%")
            slicer.app.processEvents()

        backend = ServerBackend(url, token, uploadProgress=uploadProgress) if url else ServerBackend()
        self.tracking.setBackend(backend)
        current.close()

    def setModelSettings(self, settings: ModelSettings) -> None:
        self.tracking.setModelSettings(settings)

    def setModel(self, model) -> None:
        self.tracking.setModel(model)


#
# SAM2SSlicerTest
#


class SAM2SSlicerTest(ScriptedLoadableModuleTest):
    """The same flow as ``Testing/Python/test_slicer_logic.py``, inside a real Slicer: import a
    generated clip, prompt two objects, track 10 frames with random weights, compare with the
    engine, correct and re-propagate, cancel, export. Run it from the Python console with
    ``slicer.util.selectModule('SAM2SSlicer'); slicer.modules.SAM2SSlicerWidget.onReload()`` or
    ``slicer.util.getModuleTest('SAM2SSlicer').runTest()``, or with ctest in a build tree."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SAM2SSlicer_trackingFlow()

    def test_SAM2SSlicer_trackingFlow(self):
        import tempfile

        import numpy as np
        import sam2s
        from PIL import Image
        from SAM2SSlicerLib.synthetic import SyntheticClip

        self.delayDisplay("Importing a generated clip")
        clip = SyntheticClip(num_frames=12, height=120, width=160, num_objects=2, seed=0)
        frames = np.stack([clip.get(i) for i in range(12)])
        import torch
        from SAM2SSlicerLib import ModelSettings

        folder = tempfile.mkdtemp()
        module = SAM2SSlicerLogic()  # tracks in a local tracking server (backends.ServerBackend)
        logic = module.tracking
        model = sam2s.build_model("sam2.1_hiera_t", image_size=256)  # untrained weights: flow test only
        checkpoint = os.path.join(folder, "random.pt")
        torch.save({"model": model.state_dict()}, checkpoint)  # the server builds the same model from it
        logic.setModelSettings(ModelSettings(checkpoint=checkpoint, imageSize=256, device="cpu"))
        video = logic.importVideo(frames, name="clip", frameRate=25)
        self.assertEqual(video.GetImageData().GetDimensions(), (160, 120, 12))
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(video), frames)
        showVideo(video)

        self.delayDisplay("Prompting two objects")
        seg = logic.createSegmentation("Tracked")
        ids = {}
        for objectId in (1, 2):
            ids[objectId] = logic.addSegment(f"object {objectId}", objectId=objectId)
            ys, xs = np.nonzero(clip.mask(0, objectId - 1))
            logic.addPointPrompt(ids[objectId], 0, float(xs.mean()), float(ys.mean()))

        self.delayDisplay("Tracking 10 frames in the tracking server, polled by a QTimer")
        runner = TrackingRunner(logic)
        job = logic.createTrackingJob(lastFrame=9)
        runner.start(job)
        while runner.isRunning():
            slicer.app.processEvents()
        self.assertEqual(job.trackedFrames, list(range(10)))
        tracker = sam2s.VideoTracker(model, frames.copy())
        for objectId in (1, 2):
            ys, xs = np.nonzero(clip.mask(0, objectId - 1))
            tracker.add_points(0, objectId, [[float(xs.mean()), float(ys.mean())]], [1])
        expected = {f: {o: logits[i] > 0 for i, o in enumerate(oids)} for f, oids, logits in tracker.propagate(0, 9)}
        for objectId, segmentId in ids.items():
            mask = logic.segmentMask(segmentId)
            for frame in range(10):
                np.testing.assert_array_equal(mask[frame], expected[frame][objectId])
            self.assertFalse(mask[10:].any())

        self.delayDisplay("Correcting frame 5 and re-propagating")
        before = logic.segmentMask(ids[1])
        other = logic.segmentMask(ids[2])
        logic.addPointPrompt(ids[1], 5, 5.0, 5.0, positive=False)
        logic.track([ids[1]], startFrame=5, lastFrame=9)
        after = logic.segmentMask(ids[1])
        np.testing.assert_array_equal(after[:5], before[:5])
        np.testing.assert_array_equal(logic.segmentMask(ids[2]), other)

        self.delayDisplay("Cancelling")
        before = logic.segmentMask(ids[2])
        job = logic.createTrackingJob([ids[2]], startFrame=0, lastFrame=9)
        runner.start(job)
        runner.cancel()  # the server stops after its current frame; every finished frame is kept
        while runner.isRunning():
            slicer.app.processEvents()
        kept = len(job.trackedFrames)
        self.assertTrue(job.cancelled or kept == 10)
        self.assertEqual(job.trackedFrames, list(range(kept)))
        np.testing.assert_array_equal(logic.segmentMask(ids[2])[kept:], before[kept:])

        self.delayDisplay("Exporting")
        path = logic.exportSegmentation(os.path.join(folder, "tracked.seg.nrrd"))
        loaded = slicer.modules.segmentations.logic().LoadSegmentationFromFile(path, False, "loaded")
        self.assertEqual(loaded.GetSegmentation().GetNumberOfSegments(), 2)
        pngs = logic.exportLabelPngs(os.path.join(folder, "labels"))
        self.assertEqual(len(pngs), 12)
        labels = np.asarray(Image.open(pngs[0]))
        self.assertTrue(set(np.unique(labels)) <= {0, 1, 2})
        self.assertIs(seg, logic.segmentationNode)
        logic.close()  # stops the local tracking server
        self.delayDisplay("Test passed")
