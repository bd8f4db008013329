"""SAM2S: track objects through endoscopic video in 3D Slicer with the SAM2S tracker.

Module, Widget, Logic and Test classes as in Slicer's scripted module template. A thin Qt shell:
what every button, click and key does is decided by ``SAM2SSlicerLib.controller.SAM2SController``
(tested headless on slicer-core); this file binds widgets and Slicer events to it. The controller
is shared with the "SAM2S" Segment Editor effect (``SegmentEditorSAM2S/SegmentEditorEffect.py``),
which this module registers when Slicer has started. Tracking runs in a tracking server process
(a local one started with Slicer's Python, or a remote GPU server given by URL and token):
Slicer's PythonQt cannot run Python worker threads, so a QTimer ticks the controller's
``JobRunner``, which polls the server without blocking and writes finished frames into MRML.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

import ctk
import qt
import slicer
from SAM2SSlicerLib import ModelSettings
from SAM2SSlicerLib.controller import DOCUMENTATION_URL, SCOPES, SHORTCUTS, SAM2SController, frameOfSlice
from SAM2SSlicerLib.logic import SAM2STrackingLogic, TrackingBusyError
from SAM2SSlicerLib.videoimport import SOURCE, frameRate
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

EFFECT_NAME = "SAM2S"


def shortcutHelp() -> str:
    """The shortcut table (``controller.SHORTCUTS``) as help text lines."""
    return "\n".join(f"{shortcut.keys}: {shortcut.action}" for shortcut in SHORTCUTS)


#
# SAM2SSlicer
#


class SAM2SSlicer(ScriptedLoadableModule):
    """Module description and registration of the Segment Editor effect."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SAM2S Video Tracking")
        # Slicer's category names are translated in the core modules' context, as its templates do
        # (Extensions/Testing/ScriptedLoadableExtensionTemplate): "Segmentation" is Slicer's own.
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "Markups", "Sequences"]
        self.parent.contributors = ["SAM2SSlicer developers (SAM2SSlicer project)"]
        self.parent.helpText = (
            _(
                "Track instruments and tissue through endoscopic / laparoscopic video with the SAM2S tracker "
                "(SAM 2 for surgical video). Import a video, click on an object in one frame, propagate, correct "
                "with more clicks and export the masklets as .seg.nrrd or per-frame label PNGs."
            )
            + "\n"
            + shortcutHelp()
            + "\n"
            + _('See the <a href="{url}">documentation</a>.').format(url=DOCUMENTATION_URL)
        )
        self.parent.acknowledgementText = _(
            "SAM 2 by Meta AI (Apache-2.0); SAM2S (arXiv 2511.16618) memory design. Developed by the "
            "SAM2SSlicer developers. The model weights are downloaded only when you click 'Download'."
        )
        slicer.app.connect("startupCompleted()", registerEffect)


def registerEffect():
    """Register the "SAM2S" Segment Editor effect (once Slicer has started)."""
    import qSlicerSegmentationsEditorEffectsPythonQt as effects

    path = os.path.join(os.path.dirname(__file__), "SegmentEditorSAM2S", "SegmentEditorEffect.py")
    instance = effects.qSlicerSegmentEditorScriptedEffect(None)
    instance.setPythonSource(path.replace("\\", "/"))
    instance.self().register()


#
# The shared controller (module panel and effect)
#


class QSettingsStore:
    """``controller.SettingsStore`` over Slicer's ``qt.QSettings``."""

    def value(self, key: str) -> str | None:
        value = qt.QSettings().value(key)
        return None if value in (None, "") else str(value)

    def setValue(self, key: str, value: str) -> None:
        qt.QSettings().setValue(key, value)


_sharedController = None


def getSharedController() -> SAM2SController:
    """The one controller of the module panel and the Segment Editor effect (one engine session). It
    loads the saved settings when made, so the effect used from the Segment Editor module in a new
    session has them too. A QTimer ticks its runner while a job runs; the tracking server is stopped
    when Slicer quits."""
    global _sharedController
    if _sharedController is None:
        from SAM2SSlicerLib.controller import DependencyGate
        from SAM2SSlicerLib.dependencies import dependenciesReady, ensureDependencies

        logic = SAM2SSlicerLogic().tracking
        holder = {}

        def purpose() -> str:
            return "remote" if holder["controller"].isRemote() else "local"

        gate = DependencyGate(lambda: dependenciesReady(purpose()), lambda: ensureDependencies(purpose=purpose()))
        importGate = DependencyGate(lambda: dependenciesReady("import"), lambda: ensureDependencies(purpose="import"))
        controller = SAM2SController(
            logic, QSettingsStore(), dependencies=gate, backendFactory=_backend, importDependencies=importGate
        )
        holder["controller"] = controller
        timer = qt.QTimer()
        timer.setInterval(100)

        def tick():
            controller.runner.tick()
            if not controller.runner.isRunning():
                timer.stop()

        timer.connect("timeout()", tick)
        controller.runner.startListeners.append(lambda job: timer.start())
        controller.timer = timer  # kept alive with the controller
        controller.statusListeners.append(lambda text: slicer.util.showStatusMessage(f"SAM2S: {text}", 5000))
        slicer.app.connect("aboutToQuit()", shutdownSharedController)
        _sharedController = controller
    return _sharedController


def existingSharedController() -> SAM2SController | None:
    """The shared controller if it was made, else None (without making it: N18 of issue 23, the
    effect's ``cleanup`` during Slicer's exit must not start SAM2S)."""
    return _sharedController


def shutdownSharedController() -> None:
    """Stop the shared controller's timer, job and tracking server and forget it (issue 23, N11):
    called by the module widget's ``cleanup()`` (a module reload calls it:
    ``slicer.util.reloadScriptedModule``) and when Slicer quits; the next use makes a new one."""
    global _sharedController
    controller, _sharedController = _sharedController, None
    if controller is None:
        return
    controller.timer.stop()
    controller.shutdown()


def _backend(url, token):
    """``controller.serverBackend`` with the upload progress of a remote server in the status bar."""
    from SAM2SSlicerLib.controller import serverBackend

    def uploadProgress(sent: int, total: int) -> None:
        # called from a timer tick, one chunk per tick: no processEvents (a nested tick would re-enter the job)
        slicer.util.showStatusMessage(
            _("SAM2S: uploading the frames: {percent}%").format(percent=100 * sent // max(total, 1))
        )

    return serverBackend(url, token, uploadProgress)


@contextlib.contextmanager
def showErrors(message: str):
    """Show an error of the block in a message box, with its traceback as details, and go on.

    ``slicer.util.tryWithErrorDisplay`` re-raises after showing (Base/Python/slicer/util.py), which
    leaves a traceback in the Python console for every refused action; a refusal here is a message."""
    import traceback

    slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
    try:
        yield
    except Exception as error:  # noqa: BLE001 - shown to the user; the action changed nothing
        slicer.app.restoreOverrideCursor()
        slicer.util.errorDisplay(f"{message}\n\n{error}", detailedText=traceback.format_exc())
        return
    slicer.app.restoreOverrideCursor()


def askWhereToCompute(controller: SAM2SController) -> None:
    """The first-use question (as SlicerNNInteractive asks): this computer, or a server. Asked
    from the module panel's ``enter`` and from the effect's ``activate`` (the effect selected in
    the Segment Editor module, the SAM2S panel never opened: N19), before anything is installed."""
    box = qt.QMessageBox(slicer.util.mainWindow())
    box.setWindowTitle(_("SAM2S: where should tracking run?"))
    box.setText(
        _(
            "Track on this computer (installs PyTorch into Slicer on first use), or on a tracking server "
            "started with `sam2s serve` on a GPU machine (Slicer then needs no PyTorch)?"
        )
    )
    box.addButton(_("This computer"), qt.QMessageBox.AcceptRole)
    box.addButton(_("A server..."), qt.QMessageBox.ActionRole)
    box.exec_()
    if box.buttonRole(box.clickedButton()) == qt.QMessageBox.AcceptRole:
        with showErrors(_("SAM2S could not do this.")):
            controller.setCompute("local")
        return
    url = qt.QInputDialog.getText(slicer.util.mainWindow(), _("Tracking server"), _("Server URL (http://host:port):"))
    token = qt.QInputDialog.getText(
        slicer.util.mainWindow(), _("Tracking server"), _("Token printed by sam2s serve:"), qt.QLineEdit.Password
    )
    if url:
        with showErrors(_("SAM2S could not do this.")):
            controller.setCompute("server", url, token)


def sliceToRasOf(viewName: str = "Red"):
    """The ``SliceToRAS`` matrix of slice view ``viewName`` (layout name), or None."""
    layoutManager = slicer.app.layoutManager()
    widget = layoutManager.sliceWidget(viewName) if layoutManager is not None else None
    return widget.mrmlSliceNode().GetSliceToRAS() if widget is not None else None


def shownFrame(videoNode, viewName: str = "Red") -> int | None:
    """The frame slice view ``viewName`` shows (``controller.frameOfSlice``)."""
    matrix = sliceToRasOf(viewName)
    return frameOfSlice(videoNode, matrix) if matrix is not None else None


def showVideo(videoNode) -> None:
    """Show ``videoNode`` in the Red slice view, axial (frames upright), fitted."""
    slicer.util.setSliceViewerLayers(background=videoNode, fit=True)
    layoutManager = slicer.app.layoutManager()
    if layoutManager is not None:
        layoutManager.sliceWidget("Red").mrmlSliceNode().SetOrientation("Axial")
        layoutManager.sliceWidget("Red").sliceLogic().FitSliceToAll()


#
# SAM2SSlicerWidget
#


class SAM2SSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: binds its widgets and the embedded Segment Editor to the shared controller."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.controller = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SAM2SSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.controller = getSharedController()
        self.controller.runner.listeners.append(self.onJobProgress)
        self.controller.statusListeners.append(self.onStatus)

        # Segment editor embedded in the panel (segments table, SAM2S effect, Undo / Redo). Its own
        # segmentation and source volume selectors are hidden: the panel's selectors set them.
        self.editor = slicer.qMRMLSegmentEditorWidget()
        self.editor.setMRMLScene(slicer.mrmlScene)
        self.editor.setSegmentationNodeSelectorVisible(False)
        self.editor.setSourceVolumeNodeSelectorVisible(False)
        self.editor.setSwitchToSegmentationsButtonVisible(False)
        self.ui.promptsCollapsibleButton.layout().addWidget(self.editor)
        self.editorNode = self._segmentEditorNode()
        self.editor.setMRMLSegmentEditorNode(self.editorNode)
        # Effects registered after this widget was made (SAM2S as the startup module) must show up:
        # Modules/Scripted/SegmentEditor/SegmentEditor.py does the same.
        self.effectFactory = slicer.qSlicerSegmentEditorEffectFactory.instance()
        self.effectFactory.connect("effectRegistered(QString)", self.onEffectRegistered)

        self.ui.checkpointPathLineEdit.filters = ctk.ctkPathLineEdit.Files | ctk.ctkPathLineEdit.Readable
        self.ui.checkpointPathLineEdit.nameFilters = [_("PyTorch checkpoint (*.pt *.pth)")]
        from SAM2SSlicerLib.settings import CONFIG_NAMES, DEVICES, MEMORY_POLICIES, PRECISIONS

        self.ui.configComboBox.addItems(list(CONFIG_NAMES))
        self.ui.deviceComboBox.addItems(list(DEVICES))
        # The first item is None: the size the checkpoint was trained at (ModelSettings.imageSize).
        self.ui.imageSizeComboBox.addItems([_("as trained"), "1024", "768", "512"])
        self.ui.imageSizeComboBox.toolTip = _(
            "Model input size in pixels. As trained: 1024, or 512 for MedSAM2 and SurgSAM-2 checkpoints. "
            "512 is about 4 times faster than 1024."
        )
        self.ui.memoryComboBox.addItems(list(MEMORY_POLICIES))
        self.ui.precisionComboBox.addItems(list(PRECISIONS))
        self._showSettings()

        ui, c = self.ui, self.controller
        ui.videoSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onVideoChanged)
        ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSegmentationChanged)
        ui.importVideoButton.connect("clicked(bool)", self.onImportVideoFile)
        ui.importFolderButton.connect("clicked(bool)", self.onImportFolder)
        ui.importSequenceButton.connect("clicked(bool)", self.onImportSequence)
        ui.createSegmentationButton.connect("clicked(bool)", lambda: self._do(c.createSegmentation, self.editorNode))
        ui.newSegmentButton.connect("clicked(bool)", lambda: self._do(c.newSegment, self.editorNode))
        ui.downloadButton.connect("clicked(bool)", self.onDownload)
        ui.installButton.connect("clicked(bool)", lambda: self._do(c.installDependencies))
        for widget in (
            ui.configComboBox,
            ui.deviceComboBox,
            ui.imageSizeComboBox,
            ui.memoryComboBox,
            ui.precisionComboBox,
        ):
            widget.connect("currentIndexChanged(int)", self.onModelSettingsChanged)
        ui.checkpointPathLineEdit.connect("currentPathChanged(QString)", self.onModelSettingsChanged)
        ui.serverUrlLineEdit.connect("editingFinished()", self.onServerChanged)
        ui.serverTokenLineEdit.connect("editingFinished()", self.onServerChanged)
        ui.positivePointButton.connect("clicked(bool)", lambda: self.activateEffectTool("point"))
        ui.boxButton.connect("clicked(bool)", lambda: self.activateEffectTool("box"))
        ui.clearFramePromptsButton.connect("clicked(bool)", self.onClearFramePrompts)
        ui.clearSegmentPromptsButton.connect("clicked(bool)", self.onClearSegmentPrompts)
        ui.firstFrameSpinBox.connect("valueChanged(int)", self.onFrameRangeChanged)
        ui.lastFrameSpinBox.connect("valueChanged(int)", self.onFrameRangeChanged)
        for button, direction in (
            (ui.forwardButton, "forward"),
            (ui.backwardButton, "backward"),
            (ui.bothButton, "both"),
        ):
            button.connect("clicked(bool)", lambda checked=False, d=direction: self.onPropagate(d))
        ui.cancelButton.connect("clicked(bool)", c.cancel)
        ui.segmentsComboBox.connect("currentIndexChanged(int)", lambda index: c.setScope(SCOPES[max(index, 0)]))
        ui.exportSegNrrdButton.connect("clicked(bool)", self.onExportSegNrrd)
        ui.exportPngButton.connect("clicked(bool)", self.onExportPngs)
        ui.exportCocoButton.connect("clicked(bool)", self.onExportCoco)
        ui.statisticsButton.connect("clicked(bool)", self.onStatistics)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        self.controller.restoreParameters(self.editorNode)  # a reloaded module takes up the scene's state
        self.updateGUI()

    def enter(self) -> None:
        """Install the Segment Editor's shortcuts (Escape, Z / Ctrl+Z undo, Y / Ctrl+Y redo), as
        SegmentEditor.py's ``enter`` does; ask the first-use question once."""
        self.editor.installKeyboardShortcuts()
        self.controller.undoEditor = self.editor  # its undo history covers the panel's tracking writes
        if self.controller.needsComputeChoice():
            self.askWhereToCompute()
        self.updateGUI()

    def exit(self) -> None:
        """Release the slice views, as SegmentEditor.py's ``exit`` does: deselect the effect (its
        mouse and key observers go), remove the shortcuts and the view observations."""
        self.controller.moduleExited()
        self.editor.setActiveEffect(None)
        self.editor.uninstallKeyboardShortcuts()
        self.editor.removeViewObservations()

    def cleanup(self) -> None:
        """The module is unloaded or reloaded (``slicer.util.reloadScriptedModule`` calls this):
        observers go, and the shared controller stops its timer, job and server (N11)."""
        self.removeObservers()
        self.effectFactory.disconnect("effectRegistered(QString)", self.onEffectRegistered)
        shutdownSharedController()

    # ---------------------------------------------------------------- helpers
    def _segmentEditorNode(self):
        node = slicer.mrmlScene.GetSingletonNode("SAM2SSlicer", "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag("SAM2SSlicer")
            node = slicer.mrmlScene.AddNode(node)
        return node

    def _do(self, function, *args):
        """Run a controller action; an error is shown in a message box (the action changed nothing)."""
        result = None
        with showErrors(_("SAM2S could not do this.")):
            result = function(*args)
        self.updateGUI()
        return result

    def onEffectRegistered(self) -> None:
        self.editor.updateEffectList()

    def onStatus(self, text: str) -> None:
        self.ui.statusLabel.text = text

    def askWhereToCompute(self) -> None:
        """The first-use question (``askWhereToCompute``), then the panel shows the settings."""
        askWhereToCompute(self.controller)
        self.updateGUI()
        self._showSettings()

    def _showSettings(self) -> None:
        settings, store = self.controller.logic.settings, self.controller.store
        widgets = (
            self.ui.configComboBox,
            self.ui.deviceComboBox,
            self.ui.imageSizeComboBox,
            self.ui.memoryComboBox,
            self.ui.precisionComboBox,
        )
        blocked = [w.blockSignals(True) for w in widgets]
        self.ui.configComboBox.setCurrentText(settings.configName)
        self.ui.deviceComboBox.setCurrentText(settings.device)
        if settings.imageSize is None:
            self.ui.imageSizeComboBox.currentIndex = 0
        else:
            self.ui.imageSizeComboBox.setCurrentText(str(settings.imageSize))
        self.ui.memoryComboBox.setCurrentText(settings.memory)
        self.ui.precisionComboBox.setCurrentText(settings.precision)
        for widget, wasBlocked in zip(widgets, blocked):
            widget.blockSignals(wasBlocked)
        self.ui.checkpointPathLineEdit.currentPath = settings.checkpoint
        self.ui.serverUrlLineEdit.text = store.value("SAM2SSlicer/ServerUrl") or ""
        self.ui.serverTokenLineEdit.text = self.controller.serverToken  # in memory only, never saved

    # ---------------------------------------------------------------- GUI state
    def updateGUI(self) -> None:
        """Show the controller's nodes and frame range and enable what it allows now."""
        c = self.controller
        video, seg = c.logic.videoNode, c.logic.segmentationNode
        for selector, node in ((self.ui.videoSelector, video), (self.ui.segmentationSelector, seg)):
            wasBlocked = selector.blockSignals(True)
            selector.setCurrentNode(node)
            selector.blockSignals(wasBlocked)
        frames = c.frameCount()
        wasBlocked = self.ui.segmentsComboBox.blockSignals(True)
        self.ui.segmentsComboBox.currentIndex = SCOPES.index(c.scope)
        self.ui.segmentsComboBox.blockSignals(wasBlocked)
        for spin, value in ((self.ui.firstFrameSpinBox, c.firstFrame), (self.ui.lastFrameSpinBox, c.lastFrame)):
            wasBlocked = spin.blockSignals(True)
            spin.maximum = max(frames - 1, 0)
            spin.value = value
            spin.blockSignals(wasBlocked)
        if video is not None:
            rate = frameRate(video) or _("unknown")
            self.ui.videoInfoLabel.text = _("{frames} frames, {rate} frames/s, {source}").format(
                frames=frames, rate=rate, source=video.GetAttribute(SOURCE) or ""
            )
        self.updateButtons()
        self._updateCheckpointStatus()

    def updateButtons(self) -> None:
        """Enable the buttons from ``controller.actions`` (cheap: called on every progress update)."""
        actions, ui = self.controller.actions(self.editorNode), self.ui
        for name, widgets in {
            "import": (ui.importVideoButton, ui.importFolderButton, ui.importSequenceButton),
            "createSegmentation": (ui.createSegmentationButton,),
            "newSegment": (ui.newSegmentButton,),
            "prompt": (ui.positivePointButton, ui.boxButton),
            "clearFrame": (ui.clearFramePromptsButton,),
            "clearSegment": (ui.clearSegmentPromptsButton,),
            "propagate": (ui.forwardButton, ui.backwardButton, ui.bothButton),
            "cancel": (ui.cancelButton,),
            "export": (ui.exportSegNrrdButton, ui.exportPngButton, ui.exportCocoButton, ui.statisticsButton),
            "install": (ui.installButton,),
            "settings": (
                ui.configComboBox,
                ui.deviceComboBox,
                ui.imageSizeComboBox,
                ui.memoryComboBox,
                ui.precisionComboBox,
            ),
        }.items():
            for widget in widgets:
                widget.enabled = actions[name]

    def _updateModelDescriptions(self) -> None:
        """Each model's published accuracy and measured speed here as its tooltip (issue 24)."""
        from SAM2SSlicerLib.settings import modelDescription

        box = self.ui.configComboBox
        size = self._imageSize()
        precision, device = self.ui.precisionComboBox.currentText or "auto", self.ui.deviceComboBox.currentText
        for index in range(box.count):
            box.setItemData(index, modelDescription(box.itemText(index), size, precision, device), qt.Qt.ToolTipRole)
        box.toolTip = modelDescription(box.currentText, size, precision, device)

    def _imageSize(self) -> int | None:
        """The image size chosen: None for "as trained" (the first item), else its pixels."""
        box = self.ui.imageSizeComboBox
        return None if box.currentIndex <= 0 else int(box.currentText)

    def _updateCheckpointStatus(self) -> None:
        if self.ui.checkpointPathLineEdit.currentPath:
            self.ui.checkpointStatusLabel.text = _("Local checkpoint file.")
            self.ui.downloadButton.enabled = False
            return
        if self.controller.isRemote() or not self.controller.dependencies.isReady():
            # the server has its own checkpoints; the cache check imports torch (not there yet)
            self.ui.checkpointStatusLabel.text = _("Download it, or choose a local .pt file.")
            self.ui.downloadButton.enabled = not self.controller.isRemote()
            return
        from SAM2SSlicerLib.settings import checkpointStatus

        self._updateModelDescriptions()
        path = checkpointStatus(self.ui.configComboBox.currentText)
        self.ui.checkpointStatusLabel.text = _("Downloaded: {path}").format(path=path) if path else _("Not downloaded.")
        self.ui.downloadButton.enabled = path is None

    # ---------------------------------------------------------------- nodes
    def onVideoChanged(self, node) -> None:
        with showErrors(_("This volume cannot be tracked.")):
            self.controller.setVideoNode(node, self.editorNode)
            if node is not None:
                showVideo(node)
        self.updateGUI()

    def onSegmentationChanged(self, node) -> None:
        with showErrors(_("This segmentation cannot be used for the video.")):
            self.controller.setSegmentationNode(node, self.editorNode)
        self.updateGUI()

    def onSceneStartClose(self, caller=None, event=None) -> None:
        """Before the nodes go (SegmentEditor.py observes StartCloseEvent too): stop tracking quietly."""
        self.controller.sceneAboutToClose()

    def onSceneEndClose(self, caller=None, event=None) -> None:
        self.controller.sceneAboutToClose()
        self.editorNode = self._segmentEditorNode()
        self.editor.setMRMLSegmentEditorNode(self.editorNode)
        self.updateGUI()

    def onSceneEndImport(self, caller=None, event=None) -> None:
        """A scene was loaded (.mrml / .mrb): take up its SAM2S parameter node (video,
        segmentation, frame range, scope, tool: ``controller.restoreParameters``)."""
        self.controller.restoreParameters(self.editorNode)
        self.updateGUI()

    def onFrameRangeChanged(self, value=None) -> None:
        first, last = int(self.ui.firstFrameSpinBox.value), int(self.ui.lastFrameSpinBox.value)
        if first <= last:
            self.controller.setFrameRange(first, last)

    # ---------------------------------------------------------------- import
    def _importOptions(self) -> dict:
        options = {"frameStep": int(self.ui.frameStepSpinBox.value)}
        if self.ui.timeRangeCheckBox.checked:
            options["startTime"] = float(self.ui.startTimeSpinBox.value)
            options["endTime"] = float(self.ui.endTimeSpinBox.value)
        if self.ui.maxWidthSpinBox.value > 0:
            options["maxWidth"] = int(self.ui.maxWidthSpinBox.value)
        return options

    def _runImport(self, function, source, **options) -> None:
        """An import with a cancellable progress dialog (decoding on the main thread, events processed
        after each frame). Cancel is not an error: the controller says "Import cancelled". Only the
        import's packages are installed first (no PyTorch: N19)."""
        if not self.controller.installImportDependencies():
            return
        cancel = threading.Event()
        dialog = slicer.util.createProgressDialog(labelText=_("Importing frames..."), maximum=100)
        dialog.connect("canceled()", cancel.set)

        def progress(done, total):
            dialog.setValue(int(100 * done / max(total, 1)))
            dialog.labelText = _("Importing frame {done} of {total}...").format(done=done, total=total)
            slicer.app.processEvents()

        try:
            with showErrors(_("Import failed.")):
                node = function(source, progressCallback=progress, cancelEvent=cancel, **options)
                if node is not None:  # None: cancelled, the controller said so
                    self.controller.bindEditorNode(self.editorNode)
                    showVideo(node)
        finally:
            dialog.close()
        self.updateGUI()

    def onImportVideoFile(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(),
            _("Import video"),
            "",
            _("Videos (*.mp4 *.avi *.mov *.mkv *.webm *.m4v *.dcm);;DICOM video (*.dcm);;All files (*)"),
        )
        if path:
            self._runImport(self.controller.importVideo, path, **self._importOptions())

    def onImportFolder(self) -> None:
        path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Import image folder"))
        if path:
            options = self._importOptions()
            if self.ui.frameRateSpinBox.value > 0:
                options["frameRate"] = float(self.ui.frameRateSpinBox.value)
            self._runImport(self.controller.importVideo, path, **options)

    def onImportSequence(self) -> None:
        sequence = self.ui.sequenceSelector.currentNode()
        if sequence is None:
            slicer.util.errorDisplay(_("Choose a Sequence of 2D frames to import first."))
            return
        self._runImport(self.controller.importSequence, sequence, **self._importOptions())

    # ---------------------------------------------------------------- model
    def onModelSettingsChanged(self, *args) -> None:
        settings = ModelSettings(
            configName=self.ui.configComboBox.currentText,
            checkpoint=self.ui.checkpointPathLineEdit.currentPath,
            device=self.ui.deviceComboBox.currentText,
            imageSize=self._imageSize(),
            memory=self.ui.memoryComboBox.currentText,
            precision=self.ui.precisionComboBox.currentText or "auto",
        )
        try:
            self.controller.setModelSettings(settings)
        except (ValueError, TrackingBusyError) as error:
            self.ui.checkpointStatusLabel.text = str(error)
            return
        self._updateCheckpointStatus()

    def onServerChanged(self) -> None:
        """The URL and token fields: a remote tracking server, or this computer when the URL is empty."""
        url, token = self.ui.serverUrlLineEdit.text, self.ui.serverTokenLineEdit.text
        self._do(self.controller.serverFieldsEdited, url, token)  # a URL waits for its token (N16)

    def onDownload(self) -> None:
        """Download the checkpoint of the chosen config (the user clicked: consent) with a cancellable
        progress dialog. The download runs in a worker thread that the loop below lets run by
        joining it in 0.1 s steps (``join`` releases the GIL; PythonQt gives a thread no time while
        Qt idles)."""
        if not self.controller.installDependencies():
            return
        from SAM2SSlicerLib.settings import downloadCheckpoint

        config = self.ui.configComboBox.currentText
        cancel = threading.Event()
        state = {"done": 0, "total": None, "error": None}
        dialog = slicer.util.createProgressDialog(
            labelText=_("Downloading {config}...").format(config=config), maximum=100
        )
        dialog.connect("canceled()", cancel.set)

        def work():
            try:
                downloadCheckpoint(config, lambda d, t: state.update(done=d, total=t), cancel)
            except BaseException as error:  # noqa: BLE001 - reported below
                state["error"] = error

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        while thread.is_alive():
            total = state["total"] or 0
            dialog.setValue(int(100 * state["done"] / total) if total else 0)
            dialog.labelText = _("Downloading {config}: {done:.0f} of {total:.0f} MB").format(
                config=config, done=state["done"] / 2**20, total=total / 2**20
            )
            slicer.app.processEvents()
            thread.join(0.1)
        dialog.close()
        if state["error"] is not None and not cancel.is_set():
            slicer.util.errorDisplay(_("Download failed:\n{error}").format(error=state["error"]))
        self._updateCheckpointStatus()

    # ---------------------------------------------------------------- prompts
    def activateEffectTool(self, tool: str) -> None:
        """Select the SAM2S effect in the embedded Segment Editor with ``tool`` ("point" / "box")."""
        self.controller.setTool(tool)
        self.editor.setActiveEffectByName(EFFECT_NAME)
        effect = self.editor.activeEffect()
        if effect is not None:
            effect.self().updateGUIFromMRML()

    def onClearFramePrompts(self) -> None:
        self._do(self.controller.clearPrompts, self.editorNode, shownFrame(self.controller.logic.videoNode))

    def onClearSegmentPrompts(self) -> None:
        if slicer.util.confirmYesNoDisplay(_("Delete all prompts of the selected segment?")):
            self._do(self.controller.clearPrompts, self.editorNode, None)

    # ---------------------------------------------------------------- tracking
    def onPropagate(self, direction: str) -> None:
        c = self.controller
        start = shownFrame(c.logic.videoNode) if self.ui.fromCurrentFrameCheckBox.checked else None
        scope = SCOPES[max(self.ui.segmentsComboBox.currentIndex, 0)]
        c.propagate(direction, start, self.editorNode, scope=scope, origin="panel")
        self.updateGUI()

    def onJobProgress(self, job, finished) -> None:
        self.ui.progressBar.maximum = max(job.totalFrames, 1)
        self.ui.progressBar.value = job.doneFrames
        self.updateButtons()
        if finished:
            if job.error is not None and not job.isPreview and not job.closedWithScene:
                slicer.util.errorDisplay(_("Tracking stopped: {error}").format(error=job.error))
            for warning in job.warnings:
                logging.warning(f"SAM2S: {warning}")

    # ---------------------------------------------------------------- export
    def onExportSegNrrd(self) -> None:
        seg = self.controller.logic.segmentationNode
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(),
            _("Export segmentation"),
            f"{seg.GetName()}.seg.nrrd",
            _("Segmentation (*.seg.nrrd)"),
        )
        if path:
            path = path if path.endswith(".seg.nrrd") else path + ".seg.nrrd"
            with showErrors(_("Export failed.")):
                self.controller.logic.exportSegmentation(path)
                slicer.util.showStatusMessage(_("Saved {path}").format(path=path), 5000)

    def onExportPngs(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Export label PNGs into folder"))
        if not folder:
            return
        existing = [name for name in os.listdir(folder) if not name.startswith(".")]
        question = _(
            "{folder} is not empty ({count} files). Write the label PNGs into it? Files named like 00000.png are "
            "replaced; other files stay."
        ).format(folder=folder, count=len(existing))
        if existing and not slicer.util.confirmOkCancelDisplay(question, _("Export label PNGs")):
            return
        with showErrors(_("Export failed.")):
            paths = self.controller.logic.exportLabelPngs(folder, overwrite=bool(existing))
            slicer.util.showStatusMessage(
                _("Wrote {n} label PNGs to {folder}").format(n=len(paths), folder=folder), 5000
            )

    def onExportCoco(self) -> None:
        seg = self.controller.logic.segmentationNode
        path = qt.QFileDialog.getSaveFileName(  # the dialog asks before replacing an existing file
            slicer.util.mainWindow(), _("Export COCO annotations"), f"{seg.GetName()}.json", _("COCO JSON (*.json)")
        )
        if path:
            with showErrors(_("Export failed.")):
                confirmed = path.lower().endswith(".json")  # the dialog confirmed replacing exactly this file
                if self.controller.exportCoco(path, overwrite=confirmed) is None:
                    slicer.util.errorDisplay(self.controller.lastStatus)

    def onStatistics(self) -> None:
        """Compute the statistics nodes (``logic.updateStatistics``), show the area chart and the
        table in the layout, and go to the frame of a clicked table row or plot point."""
        from SAM2SSlicerLib.stats import frameOfPlotPoint, frameOfTableRow, showStatisticsInLayout

        with showErrors(_("Statistics failed.")):
            nodes = self.controller.logic.updateStatistics()
            showStatisticsInLayout(slicer.mrmlScene, slicer.app.applicationLogic(), nodes)  # plot AND table (N17)
            layoutManager = slicer.app.layoutManager()
            plotView = layoutManager.plotWidget(0).plotView() if layoutManager.plotViewCount else None
            tableView = layoutManager.tableWidget(0).tableView() if layoutManager.tableViewCount else None
            if plotView is not None and not getattr(self, "_plotConnected", False):
                # qMRMLPlotView::dataSelected(vtkStringArray* seriesIDs, vtkCollection* pointIdArrays)
                def onPlotData(ids, selections) -> None:
                    for i in range(ids.GetNumberOfValues()):
                        points = selections.GetItemAsObject(i)
                        if points is not None and points.GetNumberOfTuples():
                            frame = frameOfPlotPoint(slicer.mrmlScene.GetNodeByID(ids.GetValue(i)), points.GetValue(0))
                            if frame is not None:
                                self.controller.jumpToFrame(frame)
                            return

                plotView.connect("dataSelected(vtkStringArray*,vtkCollection*)", onPlotData)
                self._plotConnected = True
            if tableView is not None and not getattr(self, "_tableConnected", False):

                def onTableSelection() -> None:
                    index = tableView.sortFilterProxyModel().mapToSource(tableView.currentIndex())
                    frame = frameOfTableRow(tableView.mrmlTableNode(), index.row()) if index.isValid() else None
                    if frame is not None:
                        self.controller.jumpToFrame(frame)

                tableView.connect("selectionChanged()", onTableSelection)
                self._tableConnected = True


#
# SAM2SSlicerLogic
#


class SAM2SSlicerLogic(ScriptedLoadableModuleLogic):
    """Thin adapter: ``self.tracking`` is the headless ``SAM2STrackingLogic`` on ``slicer.mrmlScene``
    with Slicer's module logics, tracking in a local tracking server (use ``importVideo``,
    ``addPointPrompt``, ``track``, ``exportSegmentation`` ...). Usable without the GUI."""

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


#
# SAM2SSlicerTest
#


class SAM2SSlicerTest(ScriptedLoadableModuleTest):
    """The panel's flow inside a real Slicer, as ``Testing/Python/test_controller.py`` and
    ``test_slicer_logic.py`` check it headless: import a generated clip, New, clicks and keys through
    the controller, leaving the module; then (only where PyTorch is installed) tracking 10 frames with
    random weights in a local tracking server, compared with the engine, a correction, cancel and
    export. Slicer's extension build machines have no PyTorch: there the tracking part is skipped
    with a warning, as SlicerTotalSegmentator's test does (``testLogic``).

    Run it from the module panel's "Reload and Test" button (developer mode), or in the Python console
    with ``SAM2SSlicer.SAM2SSlicerTest().runTest()``, or with ctest in a build tree
    (``slicerMacroBuildScriptedModule(... WITH_GENERIC_TESTS)``, ``slicer_add_python_unittest``)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SAM2SSlicer_panelFlow()
        self.setUp()
        self.test_SAM2SSlicer_trackingFlow()

    def _clip(self):
        from SAM2SSlicerLib.moduletest import generatedClip

        return generatedClip()

    def test_SAM2SSlicer_panelFlow(self):
        import tempfile

        from SAM2SSlicerLib.backends import InProcessBackend
        from SAM2SSlicerLib.controller import JsonSettingsStore
        from SAM2SSlicerLib.moduletest import panelFlow

        store = JsonSettingsStore(os.path.join(tempfile.mkdtemp(), "settings.json"))
        controller = SAM2SController(
            SAM2SSlicerLogic().tracking, store, backendFactory=lambda url, token: InProcessBackend()
        )
        video = panelFlow(controller, slicer.mrmlScene, self.assertTrue, self.delayDisplay)
        self.delayDisplay("The video is shown in the slice views")  # the Qt part
        showVideo(video)
        self.assertEqual(shownFrame(video), frameOfSlice(video, sliceToRasOf("Red")))

    def test_SAM2SSlicer_trackingFlow(self):
        import tempfile

        from SAM2SSlicerLib.moduletest import trackingAvailable

        if not trackingAvailable():
            logging.warning("test_SAM2SSlicer_trackingFlow skipped: PyTorch is not installed (extension build machine)")
            self.delayDisplay("Tracking part skipped: no PyTorch")
            return
        import numpy as np
        import sam2s
        import torch

        clip, frames = self._clip()
        folder = tempfile.mkdtemp()
        logic = SAM2SSlicerLogic().tracking  # tracks in a local tracking server (backends.ServerBackend)
        model = sam2s.build_model("sam2.1_hiera_t", image_size=256)  # untrained weights: flow test only
        checkpoint = os.path.join(folder, "random.pt")
        torch.save({"model": model.state_dict()}, checkpoint)  # the server builds the same model from it
        logic.setModelSettings(ModelSettings(checkpoint=checkpoint, imageSize=256, device="cpu"))
        video = logic.importVideo(frames, name="clip", frameRate=25)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(video), frames)

        self.delayDisplay("Prompting two objects")
        seg = logic.createSegmentation("Tracked")
        ids = {}
        for objectId in (1, 2):
            ids[objectId] = logic.addSegment(f"object {objectId}", objectId=objectId)
            ys, xs = np.nonzero(clip.mask(0, objectId - 1))
            logic.addPointPrompt(ids[objectId], 0, float(xs.mean()), float(ys.mean()))

        self.delayDisplay("Tracking 10 frames in the tracking server, polled from the main thread")
        from SAM2SSlicerLib.runner import JobRunner

        runner = JobRunner(logic)
        job = self._runJob(runner, logic.createTrackingJob(lastFrame=9))
        self.assertEqual(job.trackedFrames, list(range(10)))
        tracker = sam2s.VideoTracker(model, frames.copy())
        for objectId in (1, 2):
            ys, xs = np.nonzero(clip.mask(0, objectId - 1))
            tracker.add_points(0, objectId, [[float(xs.mean()), float(ys.mean())]], [1])
        stream = tracker.run(sam2s.session.TrackingPlan(((0, 9, False),)))
        expected = {tracked.frame_idx: tracked.masks() for tracked in stream}
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
        np.testing.assert_array_equal(logic.segmentMask(ids[1])[:5], before[:5])
        np.testing.assert_array_equal(logic.segmentMask(ids[2]), other)

        self.delayDisplay("Cancelling")
        before = logic.segmentMask(ids[2])
        job = self._runJob(runner, logic.createTrackingJob([ids[2]], startFrame=0, lastFrame=9), cancel=True)
        kept = len(job.trackedFrames)
        self.assertTrue(job.cancelled or kept == 10)
        self.assertEqual(job.trackedFrames, list(range(kept)))
        np.testing.assert_array_equal(logic.segmentMask(ids[2])[kept:], before[kept:])

        self._checkExports(logic, folder)
        self.assertIs(seg, logic.segmentationNode)
        logic.close()  # stops the local tracking server
        self.delayDisplay("Test passed")

    def _runJob(self, runner, job, cancel: bool = False):
        """Start ``job`` with the module's ``JobRunner`` and poll it from this (the main) thread to
        its end, as the panel's QTimer does; ``cancel`` asks it to stop at once (the server stops
        after its current frame; every finished frame is kept)."""
        runner.start(job)
        if cancel:
            runner.cancel()
        while runner.isRunning():
            runner.tick()
            slicer.app.processEvents()
        return job

    def _checkExports(self, logic, folder: str) -> None:
        """The .seg.nrrd loads back into Slicer with both segments; 12 label PNGs of ids 0, 1, 2."""
        import numpy as np
        from PIL import Image

        self.delayDisplay("Exporting")
        path = logic.exportSegmentation(os.path.join(folder, "tracked.seg.nrrd"))
        loaded = slicer.modules.segmentations.logic().LoadSegmentationFromFile(path, False, "loaded")
        self.assertEqual(loaded.GetSegmentation().GetNumberOfSegments(), 2)
        pngs = logic.exportLabelPngs(os.path.join(folder, "labels"))
        self.assertEqual(len(pngs), 12)
        self.assertTrue(set(np.unique(np.asarray(Image.open(pngs[0])))) <= {0, 1, 2})
