"""The trame-slicer view binding of ``sam2s web`` (see the package docstring).

One :class:`SAM2SWebApp` per server process: a trame server, trame-slicer's ``SlicerApp`` (the MRML
scene, its logics and one remote-rendered axial slice view), and the module's
:class:`~SAM2SSlicerLib.controller.SAM2SController` over a
:class:`~SAM2SSlicerLib.logic.SAM2STrackingLogic` on that scene. Everything the page can do goes
through the controller, as the Qt panel's buttons do; this file only binds state, buttons, mouse
and keys to it. The page's widgets are :mod:`.layout`'s, the access rules :mod:`.access`'s and
the options of ``sam2s web`` :mod:`.options`' (their public names are re-exported here).

* Mouse: a left click in the view is a positive point of the selected segment, Shift+click a
  negative one (``controller.click``); with the box tool a left drag is a box
  (``boxPress`` / ``boxRelease``). Positions go from the view's display coordinates (pixels, origin
  bottom-left, as VTK's interactor reports them) through the slice node's ``XYToRAS`` to RAS, then
  to video pixels ``(x right, y down, frame)`` by ``controller.pixelOfRas``.
* Tracking runs in a tracking server (``backends.ServerBackend``, a local child process unless
  ``--server``): trame's event loop only ticks the controller's ``JobRunner`` (one non-blocking
  step of the job: the server's start, the model load, a click's preview and each poll are
  requests it never waits for; and a bulk write of the finished frames, every
  :data:`TICK_SECONDS`), so the page answers while a session starts or a propagation runs.
* Access: bound to 127.0.0.1 by default. On any other address a token is required (the tracking
  server's rule, ``sam2s.serving.access.MIN_REMOTE_TOKEN_LENGTH`` characters or more): every HTTP and
  websocket request must carry it, as ``Authorization: Bearer TOKEN``, as ``?token=TOKEN`` (the
  page then keeps it in an HttpOnly cookie) or in that cookie; other requests get 401. The token
  comes from ``--token-file`` (a file only its owner can read), ``$SAM2S_WEB_TOKEN`` or
  ``--token`` (visible to other users in ``ps``).
* Open by path: only under the ``--allow-path`` folders, by the tracking server's rule
  (``sam2s.serving.access.check_readable``: real paths, and for an image folder every frame image it
  would read; :func:`checkOpenPath`). A ``VIDEO`` given on the command line outside them is
  allowed alone (not its folder), and the terminal says so.

Slicer code this follows: ``Modules/Scripted/SegmentEditor`` and ``qMRMLSegmentEditorWidget`` for
the selected segment (a ``vtkMRMLSegmentEditorNode``), ``vtkMRMLSliceNode::GetXYToRAS`` for the
click position; README "In a web browser" for use and measured figures.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

from sam2s.serving.access import read_token_file, real_roots, server_token

from .access import TOKEN_COOKIE, TOKEN_ENV, allowedRoots, bindRoutes, checkAccess, checkOpenPath
from .i18n import tr as _
from .options import LOCAL_SERVER_NICENESS, MemorySettingsStore, addWebArguments, backendFactory, modelSettings

__all__ = [  # the names of .access and .options that callers (sam2sapp.cli, the tests) use from here
    "LOCAL_SERVER_NICENESS",
    "TICK_SECONDS",
    "TOKEN_COOKIE",
    "TOKEN_ENV",
    "MemorySettingsStore",
    "SAM2SWebApp",
    "addWebArguments",
    "checkAccess",
    "checkOpenPath",
    "createApp",
    "run",
]

TICK_SECONDS = 0.1
"""Seconds between two ticks of the job runner (the Qt module's QTimer uses 100 ms too)."""
RENDER_FPS = 30.0
"""Highest rate of new images of the view (trame-rca's render scheduler)."""
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".dcm")

log = logging.getLogger("sam2s.web")


def _timeLabel(seconds: float) -> str:
    minutes, rest = divmod(max(seconds, 0.0), 60.0)
    return f"{int(minutes):02d}:{rest:06.3f}"


def _hexColor(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{min(max(int(round(c * 255)), 0), 255):02x}" for c in rgb[:3])


def _rgbOfHex(text: str) -> tuple[float, float, float]:
    match = re.fullmatch(r"#?([0-9a-fA-F]{6})([0-9a-fA-F]{2})?", text.strip())
    if not match:
        raise ValueError(f"Colour {text!r} is not #RRGGBB.")
    value = match.group(1)
    return tuple(int(value[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- the app
class SAM2SWebApp:
    """The web app (see the module docstring).

    Args:
        server: a trame server (``trame.app.get_server(client_type="vue3")``).
        controller: the module's controller; its logic's scene must be ``slicerApp.scene``.
        slicerApp: trame-slicer's ``SlicerApp``.
        allowedRoots: folders whose files the page may open by path (real paths).
        workFolder: a new folder of this app for uploads and exports (removed by :meth:`close`).
        maxUploadBytes: largest accepted upload.
        requiredToken: the token every request must carry (:func:`checkAccess`), or None.

    Attributes:
        sliceView: the axial ``trame_slicer.views.SliceView`` showing the video.
        editorNode: the ``vtkMRMLSegmentEditorNode`` holding the selected segment.
    """

    def __init__(
        self,
        server,
        controller,
        slicerApp,
        allowedRoots: Sequence[str],
        workFolder: str,
        maxUploadBytes: int = 2048 << 20,
        requiredToken: str | None = None,
    ) -> None:
        from trame_slicer.core import LayoutManager
        from trame_slicer.rca_view import register_rca_factories
        from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

        self.server = server
        self.state = server.state
        self.controller = controller
        self.logic = controller.logic
        self.slicerApp = slicerApp
        self.allowedRoots = real_roots(allowedRoots)
        self.workFolder = workFolder
        self.maxUploadBytes = int(maxUploadBytes)
        self.requiredToken = requiredToken
        self._downloads: dict[str, str] = {}
        self._pressed = False
        self._lastFrame = -1
        self._playTask: asyncio.Task | None = None
        self._tickTask: asyncio.Task | None = None

        # The same frame rate with the mouse outside the view (trame-slicer's default drops to 10 fps): the
        # render scheduler only looks for a new request once per period, which would delay frame changes
        # made with the slider or the keyboard by up to 100 ms. One JPEG quality (trame-rca's still
        # quality, 90): each change is rendered and encoded once, not again at a higher quality after 5
        # periods, which halves the work while a propagation shares the CPU.
        register_rca_factories(
            slicerApp.view_manager,
            server,
            slice_view_ui_f=lambda *args: None,
            target_fps=RENDER_FPS,
            blur_fps=RENDER_FPS,
            interactive_quality=90,
        )
        self.layoutManager = LayoutManager(slicerApp.scene, slicerApp.view_manager, server)
        self.layoutManager.register_layout(
            "video", Layout(LayoutDirection.Vertical, [ViewLayoutDefinition.axial_view()])
        )
        self.layoutManager.set_layout("video")
        self.sliceView = slicerApp.view_manager.get_slice_views()[0]
        self.sliceNode = self.sliceView.get_view_node()
        # No multisample anti-aliasing: a slice view draws images, not edges of polygons, and on a
        # software renderer (Mesa llvmpipe, the headless servers' case) the 4 samples per pixel
        # trame-slicer's window asks for double the cost of each frame change (measured 170 -> 85 ms
        # CPU at 1038 x 744).
        self.sliceView.render_window().SetMultiSamples(0)
        self.editorNode = slicerApp.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", "SAM2SWebEditor")

        controller.statusListeners.append(self._onStatus)
        controller.runner.listeners.append(self._onJobTick)
        controller.runner.startListeners.append(lambda job: self._ensureTicking())
        controller.effectActivated(self.editorNode)  # clicks in the view are prompts, always
        self._observeView()
        self._initState()
        self._buildUi()

    # ------------------------------------------------------------------------------------ state
    def _modelInfo(self) -> str:
        """The model tracking uses, its published accuracy and its speed measured here (issue 24:
        ``settings.modelDescription``; the flow engine has neither)."""
        from SAM2SSlicerLib.settings import modelDescription

        settings = self.controller.logic.settings
        if getattr(settings, "engine", "sam2") != "sam2":
            return _("Engine: {engine} (no model)").format(engine=settings.engine)
        return _("Model {description}").format(
            description=modelDescription(settings.configName, settings.imageSize, settings.precision, settings.device)
        )

    def _initState(self) -> None:
        s = self.state
        s.trame__title = "SAM2S web"
        s.update(
            {
                "video_path": "",
                "video_name": "",
                "model_info": self._modelInfo(),
                "video_loaded": False,
                "frame": 0,
                "frame_count": 1,
                "time_label": "",
                "playing": False,
                "segments": [],
                "selected_segment": None,
                "tool": "point",
                "tool_applied": "point",
                "direction": "forward",
                "scope": "selected",
                "frame_range": [0, 0],
                "running": False,
                "progress": 0,
                "progress_text": "",
                "status": _("Open a video to start."),
                "downloads": [],
                "review": [],
                "upload": None,
                "shown_frame": -1,
                "finished_jobs": 0,
                "prompt_summary": "",
                "show_masks": True,
                "masks_shown": True,
                "allowed_roots": ", ".join(self.allowedRoots),
            }
        )
        s.change("frame")(self._onFrameChanged)
        s.change("selected_segment")(self._onSegmentSelected)
        s.change("tool")(self._onToolChanged)
        s.change("upload")(self._onUpload)
        s.change("playing")(self._onPlaying)
        s.change("show_masks")(self._onShowMasks)

    def _onToolChanged(self, tool, **_kwargs) -> None:
        self.controller.setTool(tool)
        self.state.tool_applied = self.controller.tool  # the server's confirmation (pages and tests wait on it)

    def _onStatus(self, text: str) -> None:
        with self.state:
            self.state.status = text

    def _flush(self) -> None:
        """Push the changed state to the page now (from callbacks outside trame's own handlers)."""
        self.state.flush()

    # ------------------------------------------------------------------------------------ the view
    def _observeView(self) -> None:
        interactor = self.sliceView.interactor()
        # Before Slicer's interactor style (window/level drag on a left drag), which the abort flag skips.
        self._commands = {}
        for event in ("LeftButtonPressEvent", "LeftButtonReleaseEvent", "MouseMoveEvent"):
            tag = interactor.AddObserver(event, self._onMouse, 100.0)
            self._commands[event] = interactor.GetCommand(tag)
        self.sliceNode.AddObserver("ModifiedEvent", self._onSliceNodeModified)

    def pixelAtDisplay(self, x: float, y: float) -> tuple[float, float, int] | None:
        """``(x, y, frame)`` in video pixels (x right, y down, frame = K index) under the view's
        display position ``(x, y)`` (pixels, origin bottom-left), or None outside the video."""
        from SAM2SSlicerLib.controller import pixelOfRas

        ras = self.sliceNode.GetXYToRAS().MultiplyPoint([float(x), float(y), 0.0, 1.0])[:3]
        return pixelOfRas(self.logic.videoNode, ras, self.sliceNode.GetSliceToRAS())

    def displayOfPixel(self, x: float, y: float) -> tuple[float, float]:
        """Inverse of :meth:`pixelAtDisplay` on the shown frame: the view's display position (pixels,
        origin bottom-left) of video pixel ``(x, y)``."""
        import vtk

        ijkToRas = vtk.vtkMatrix4x4()
        self.logic.videoNode.GetIJKToRASMatrix(ijkToRas)
        ras = ijkToRas.MultiplyPoint([float(x), float(y), float(self.state.frame), 1.0])
        rasToXy = vtk.vtkMatrix4x4()
        vtk.vtkMatrix4x4.Invert(self.sliceNode.GetXYToRAS(), rasToXy)
        xy = rasToXy.MultiplyPoint(ras)
        return xy[0], xy[1]

    def viewOfPixel(self, x: float, y: float) -> list[float]:
        """Where video pixel ``(x, y)`` of the shown frame is in the view, as fractions of the view's
        width (from the left) and height (from the top): for pages and tests placing clicks."""
        width, height = self.sliceView.render_window().GetSize()
        dx, dy = self.displayOfPixel(x, y)
        return [dx / max(width, 1), 1.0 - dy / max(height, 1)]

    def _onMouse(self, interactor, event: str) -> None:
        if self.logic.videoNode is None:
            return
        x, y = interactor.GetEventPosition()
        try:
            pixel = self.pixelAtDisplay(x, y)
        except ValueError as error:
            self._onStatus(str(error))
            pixel = None
        box = self.controller.tool == "box"
        taken = False
        if event == "LeftButtonPressEvent":
            self._pressed = True
            taken = self.controller.boxPress(pixel) if box else True
        elif event == "LeftButtonReleaseEvent" and self._pressed:
            self._pressed = False
            if box:
                taken = self.controller.boxRelease(pixel, self.editorNode)
            else:
                taken = self.controller.click(pixel, bool(interactor.GetShiftKey()), self.editorNode)
        elif event == "MouseMoveEvent":
            taken = self._pressed  # no window/level drag while a prompt is placed
        if taken:
            self._commands[event].SetAbortFlag(1)
        self._flush()

    def _onSliceNodeModified(self, *_args) -> None:
        from SAM2SSlicerLib.controller import frameOfSlice

        frame = frameOfSlice(self.logic.videoNode, self.sliceNode.GetSliceToRAS())
        if frame is not None and frame != self.state.frame:
            self._lastFrame = frame
            with self.state:
                self.state.frame = frame
                self._updateTime(frame)

    def _onFrameChanged(self, frame, **_kwargs) -> None:
        frame = int(frame or 0)
        if self.logic.videoNode is None:
            return
        self._updateTime(frame)
        if frame != self._lastFrame:
            self._lastFrame = frame
            self.controller.jumpToFrame(frame, [self.sliceNode])
        self.state.shown_frame = frame
        self._updatePromptSummary()

    def _updateTime(self, frame: int) -> None:
        """The shown frame's time (mm:ss.sss from the video's frame times or rate; empty for image
        folders, which have neither)."""
        from SAM2SSlicerLib.videoimport import frameRate, frameTimes

        video = self.logic.videoNode
        times = frameTimes(video) if video is not None else None
        rate = frameRate(video) if video is not None else None
        if times and 0 <= frame < len(times):
            self.state.time_label = _timeLabel(times[frame])
        elif rate:
            self.state.time_label = _timeLabel(frame / rate)
        else:
            self.state.time_label = ""

    def _onShowMasks(self, show_masks, **_kwargs) -> None:
        node = self.logic.segmentationNode
        display = node.GetDisplayNode() if node is not None else None
        if display is not None:
            display.SetVisibility(bool(show_masks))
        self.state.masks_shown = bool(show_masks)  # the server's confirmation (pages and tests wait on it)

    def stepFrame(self, delta: int) -> None:
        """Show the frame ``delta`` frames later (earlier when negative), clamped to the video."""
        self.state.frame = min(max(int(self.state.frame) + int(delta), 0), max(self.state.frame_count - 1, 0))

    def _onPlaying(self, playing, **_kwargs) -> None:
        if playing and (self._playTask is None or self._playTask.done()):
            self._playTask = asyncio.ensure_future(self._play())

    async def _play(self) -> None:
        from SAM2SSlicerLib.videoimport import frameRate

        rate = frameRate(self.logic.videoNode) or 25.0
        while self.state.playing and self.logic.videoNode is not None:
            with self.state:
                if self.state.frame >= self.state.frame_count - 1:
                    self.state.playing = False
                    break
                self.stepFrame(1)
            await asyncio.sleep(1.0 / rate)

    # ------------------------------------------------------------------------------------ video
    def openVideo(self, path: str) -> bool:
        """Open a video file or image folder on this computer, under an allowed root (:func:`checkOpenPath`).
        Returns False with a status message when refused or unreadable (nothing changes then)."""
        try:
            real = checkOpenPath(path, self.allowedRoots)
        except ValueError as error:
            self._onStatus(str(error))
            return False
        return self._import(real, os.path.basename(os.path.expanduser(str(path).strip()).rstrip(os.sep)))

    def _import(self, path: str, name: str) -> bool:
        from SAM2SSlicerLib.logic import TrackingBusyError

        try:
            node = self.controller.importVideo(path)
        except (TrackingBusyError, ValueError, OSError, RuntimeError, MemoryError) as error:
            self._onStatus(_("Could not open {name}: {error}").format(name=name, error=error))
            return False
        if node is None:
            return False
        self._showVideo(node, name)
        return True

    def _showVideo(self, node, name: str) -> None:
        display = node.GetDisplayNode()
        if display is not None and display.IsA("vtkMRMLScalarVolumeDisplayNode"):
            display.SetAutoWindowLevel(0)
            display.SetWindowLevel(255, 127.5)  # true colour (auto window/level shifts the colours)
        self.sliceView.set_background_volume_id(node.GetID())
        self.controller.createSegmentation(self.editorNode)
        frames = self.controller.frameCount()

        with self.state:
            self.state.video_loaded = True
            self.state.video_name = name
            self.state.frame_count = frames
            self.state.frame_range = [0, max(frames - 1, 0)]
            self.state.downloads = []
            self.state.review = []
            self.sliceView.fit_view_to_content()  # centres the view on the middle frame: show frame 0 after
            self._lastFrame = -1
            self.state.frame = 0
            self._onFrameChanged(0)
            self._refreshSegments()
            self._onShowMasks(self.state.show_masks)
        self._onStatus(_("Opened {name}: {n} frames. Click on an object.").format(name=name, n=frames))

    def _onUpload(self, upload, **_kwargs) -> None:
        if not upload:
            return
        files = upload if isinstance(upload, list) else [upload]
        item = files[0]
        name = os.path.basename(str(item.get("name") or "upload.mp4"))
        content = item.get("content") or b""
        if isinstance(content, list):
            content = b"".join(content)
        if len(content) > self.maxUploadBytes:
            self._onStatus(_("{name} is larger than --max-upload-mb.").format(name=name))
            return
        if not name.lower().endswith(VIDEO_SUFFIXES):
            self._onStatus(_("Upload a video file ({suffixes}).").format(suffixes=", ".join(VIDEO_SUFFIXES)))
            return
        folder = tempfile.mkdtemp(prefix="upload-", dir=self.workFolder)
        path = os.path.join(folder, name)
        with open(path, "wb") as file:
            file.write(content)
        self.state.upload = None
        self._import(path, name)

    # ------------------------------------------------------------------------------------ segments
    def _refreshSegments(self) -> None:
        node = self.logic.segmentationNode
        items = []
        if node is not None:
            segmentation = node.GetSegmentation()
            for i in range(segmentation.GetNumberOfSegments()):
                segmentId = segmentation.GetNthSegmentID(i)
                segment = segmentation.GetSegment(segmentId)
                items.append(
                    {
                        "id": segmentId,
                        "name": segment.GetName(),
                        "color": _hexColor(segment.GetColor()),
                        "objectId": self.logic.objectIdOfSegment(segmentId, create=False),
                    }
                )
        self.state.segments = items
        selected = self.editorNode.GetSelectedSegmentID()
        self.state.selected_segment = selected if any(item["id"] == selected for item in items) else None

    def _onSegmentSelected(self, selected_segment, **_kwargs) -> None:
        if (self.editorNode.GetSelectedSegmentID() or None) != (selected_segment or None):
            self.editorNode.SetSelectedSegmentID(selected_segment)

    def addSegment(self) -> None:
        """Add a segment ("Object N", the next free object id) and select it (``controller.newSegment``)."""
        try:
            self.controller.newSegment(self.editorNode)
        except (RuntimeError, ValueError) as error:
            self._onStatus(str(error))
        self._refreshSegments()

    def renameSegment(self, segmentId: str, name: str) -> None:
        """Rename a segment (an empty name is ignored)."""
        segment = self._segment(segmentId)
        if segment is not None and str(name).strip():
            segment.SetName(str(name).strip())
        self._refreshSegments()

    def recolorSegment(self, segmentId: str, color: str) -> None:
        """Set a segment's colour from ``#RRGGBB`` (a bad value becomes a status message)."""
        segment = self._segment(segmentId)
        try:
            if segment is not None:
                segment.SetColor(*_rgbOfHex(str(color)))
        except ValueError as error:
            self._onStatus(str(error))
        self._refreshSegments()

    def deleteSegment(self, segmentId: str) -> None:
        """Remove a segment and its prompts (refused, with a message, while tracking runs)."""
        if self.controller.isBusy():
            self._onStatus(_("Tracking is running; cancel it before deleting a segment."))
            return
        node = self.logic.segmentationNode
        if node is not None and self._segment(segmentId) is not None:
            self.logic.clearPrompts(segmentId)
            node.GetSegmentation().RemoveSegment(segmentId)
        self._refreshSegments()

    def _segment(self, segmentId: str):
        node = self.logic.segmentationNode
        return node.GetSegmentation().GetSegment(segmentId) if node is not None and segmentId else None

    # ------------------------------------------------------------------------------------ prompts, tracking
    def prompts(self) -> dict[str, dict[str, dict]]:
        """Every stored prompt: ``{segmentId: {frame: {"points": [[x, y], ...], "labels": [1|0, ...],
        "box": [x0, y0, x1, y1] or None}}}`` in video pixels (x right, y down; frame as a string,
        JSON keys). The page shows the shown frame's count; tests replay them in the headless logic."""
        result: dict[str, dict[str, dict]] = {}
        for segmentId in self.logic.promptedSegmentIds():
            result[segmentId] = {
                str(frame): {
                    "points": [list(map(float, point)) for point in prompt.points],
                    "labels": [int(label) for label in prompt.labels],
                    "box": list(map(float, prompt.box)) if prompt.box is not None else None,
                }
                for frame, prompt in self.logic.getPrompts(segmentId).items()
            }
        return result

    def _updatePromptSummary(self) -> None:
        frame = str(int(self.state.frame))
        points = boxes = 0
        for frames in self.prompts().values():
            prompt = frames.get(frame)
            if prompt:
                points += len(prompt["points"])
                boxes += prompt["box"] is not None
        self.state.prompt_summary = _("{points} points, {boxes} boxes on this frame").format(points=points, boxes=boxes)

    def clearFrame(self) -> None:
        """Remove the selected segment's prompts on the shown frame (``controller.clearPrompts``)."""
        self.controller.clearPrompts(self.editorNode, int(self.state.frame))
        self._updatePromptSummary()

    def propagate(self, direction: str, scope: str, frameRange: Sequence[int], startFrame: int) -> None:
        """Propagate the segments of ``scope`` (``controller.SCOPES``) in ``direction`` (forward,
        backward, both) within the inclusive ``frameRange`` ``[first, last]`` from ``startFrame``
        (frame indices). The page sends the values it shows with the click, so a change made just
        before the click is never lost. Bad values become a status message."""
        try:
            first, last = (int(v) for v in frameRange)
            self.controller.setFrameRange(first, last)
            job = self.controller.propagate(
                str(direction), int(startFrame), self.editorNode, scope=str(scope), origin="panel"
            )
        except (TypeError, ValueError) as error:
            self._onStatus(str(error))
            return
        if job is not None:
            self.state.running = True
            self.state.progress = 0
            self.state.progress_text = f"0 / {job.totalFrames}"

    def cancel(self) -> None:
        """Stop the running job after its current frame; finished frames are kept."""
        self.controller.cancel()

    def _ensureTicking(self) -> None:
        if self._tickTask is None or self._tickTask.done():
            self._tickTask = asyncio.ensure_future(self._tickLoop())

    async def _tickLoop(self) -> None:
        runner = self.controller.runner
        while runner.isRunning():
            await asyncio.sleep(TICK_SECONDS)
            with self.state:
                runner.tick()

    def _onJobTick(self, job, finished: bool) -> None:
        s = self.state
        if not job.isPreview:
            s.progress = round(100 * job.doneFrames / max(job.totalFrames, 1))
            s.progress_text = f"{job.doneFrames} / {job.totalFrames}"
        if finished:
            s.finished_jobs += 1  # pages and tests wait on it (a status text may be an earlier one's)
            s.running = bool(self.controller.isBusy())
            self._refreshSegments()
            self._updatePromptSummary()

    # ------------------------------------------------------------------------------------ exports
    def export(self, kind: str) -> str | None:
        """Write ``kind`` (``seg.nrrd``, ``png`` = label PNGs in a zip, ``coco``) into the work
        folder and offer it for download; returns its file name, or None (with a message)."""
        from SAM2SSlicerLib.logic import TrackingBusyError

        node = self.logic.segmentationNode
        if node is None:
            self._onStatus(_("Open a video first."))
            return None
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(self.state.video_name or "video").stem) or "video"
        folder = tempfile.mkdtemp(prefix="export-", dir=self.workFolder)
        try:
            if self.controller.runner.isRunning():
                raise TrackingBusyError(_("Tracking is running; wait for it or cancel it before exporting."))
            if kind == "seg.nrrd":
                path = self.logic.exportSegmentation(os.path.join(folder, f"{base}.seg.nrrd"))
            elif kind == "png":
                labels = os.path.join(folder, "labels")
                written = self.logic.exportLabelPngs(labels)
                path = os.path.join(folder, f"{base}_labels.zip")
                with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
                    for file in written:
                        archive.write(file, os.path.join("labels", os.path.basename(file)))
            elif kind == "coco":
                path = self.controller.exportCoco(os.path.join(folder, f"{base}_coco.json"))
                if path is None:
                    return None
            else:
                raise ValueError(f"Unknown export {kind!r}; use seg.nrrd, png or coco.")
        except (TrackingBusyError, ValueError, RuntimeError, OSError) as error:
            self._onStatus(_("Export failed: {error}").format(error=error))
            return None
        key = os.path.basename(folder)
        name = os.path.basename(path)
        self._downloads[f"{key}/{name}"] = path
        self.state.downloads = [{"name": name, "url": f"sam2s/download/{key}/{name}"}] + [
            d for d in self.state.downloads if d["name"] != name
        ]
        self._onStatus(_("{name} is ready: download it below.").format(name=name))
        return name

    def downloadPath(self, key: str) -> str | None:
        """The file offered at ``sam2s/download/<key>`` (only files this app exported)."""
        return self._downloads.get(key)

    def updateReview(self) -> None:
        """Fill the review list: frames where an object appears, disappears or the model's confidence
        drops (``stats.reviewList``)."""
        from SAM2SSlicerLib import stats

        node, video = self.logic.segmentationNode, self.logic.videoNode
        if node is None or video is None:
            return
        statistics, _colors = stats.segmentationStatistics(node, video, None, self.logic.segmentConfidences)
        self.state.review = [
            {"frame": item.frame, "name": item.name, "reason": item.reason, "detail": item.detail}
            for item in stats.reviewList(statistics)
        ]
        self._onStatus(_("{n} frames to review.").format(n=len(self.state.review)))

    # ------------------------------------------------------------------------------------ keys
    def onKey(self, key: str, shift: bool = False) -> None:
        """Keyboard: Left/Right (or , and .) step one frame, Shift with them 10 frames, Home/End jump
        to the first/last frame, Space plays/pauses, Escape cancels tracking, M shows/hides the masks; the module's shortcuts
        (``controller.SHORTCUTS``: undo a point, box/point tool, propagate ...) otherwise."""
        step = 10 if shift else 1
        if key in ("ArrowLeft", ","):
            self.stepFrame(-step)
        elif key in ("ArrowRight", "."):
            self.stepFrame(step)
        elif key == "Home":
            self.state.frame = 0
        elif key == "End":
            self.state.frame = max(self.state.frame_count - 1, 0)
        elif key == " ":
            self.state.playing = not self.state.playing
        elif key == "Escape":
            self.cancel()
        elif key in ("m", "M"):
            self.state.show_masks = not self.state.show_masks
        else:
            self.controller.keyPress(key, False, shift, int(self.state.frame), self.editorNode)
            self.state.tool = self.controller.tool

    # ------------------------------------------------------------------------------------ UI
    def _buildUi(self) -> None:
        """The page (:mod:`.layout`) and the triggers it fires."""
        from .layout import buildPage

        self.server.controller.add("on_server_bind")(self._bindRoutes)
        for name, callback in (
            ("sam2s_key", self.onKey),
            ("sam2s_view_of_pixel", self.viewOfPixel),
            ("sam2s_prompts", self.prompts),
            ("sam2s_color", self.recolorSegment),
            ("sam2s_rename", self.renameSegment),
            ("sam2s_delete", self.deleteSegment),
        ):
            self.server.trigger(name)(callback)
        self.ui = buildPage(self)

    # ------------------------------------------------------------------------------------ HTTP
    def _bindRoutes(self, wslinkServer) -> None:
        bindRoutes(wslinkServer, self.downloadPath, self.requiredToken)

    def close(self) -> None:
        """Stop tracking, close the tracking server and remove the work folder (this app's uploads and
        exports only)."""
        try:
            self.controller.cancel()
            self.logic.close()
        finally:
            shutil.rmtree(self.workFolder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- entry point
def createApp(args: argparse.Namespace, server=None) -> SAM2SWebApp:
    """Build the app for the parsed ``sam2s web`` options (checks them first: ValueError or
    ``track.CliError`` name the bad option)."""
    from SAM2SSlicerLib.controller import COMPUTE_LOCAL, COMPUTE_SERVER, SAM2SController
    from SAM2SSlicerLib.logic import SAM2STrackingLogic
    from SAM2SSlicerLib.runner import JobRunner
    from trame.app import get_server
    from trame_slicer import module as trameSlicerModule
    from trame_slicer.core import SlicerApp

    token = checkAccess(args.host, read_token_file(args.token_file) if args.token_file else args.token)
    roots = allowedRoots(args.allow_path, args.video)
    settings = modelSettings(args)
    settings.validate()

    server = server or get_server("sam2s-web", client_type="vue3")
    server.enable_module(trameSlicerModule)
    slicerApp = SlicerApp()
    logic = SAM2STrackingLogic(
        slicerApp.scene,
        segmentationsLogic=slicerApp.segmentations_logic,
        volumesLogic=slicerApp.volumes_logic,
    )
    # Jobs are ticked from trame's event loop: every request to the tracking server (prompts,
    # previews, frame uploads, polls) is advanced without waiting (runner.JobRunner), so the loop
    # keeps answering. MRML is written by ticks only.
    controller = SAM2SController(
        logic,
        MemorySettingsStore(),
        runner=JobRunner(logic),
        backendFactory=backendFactory(args.tracking_niceness),
    )
    controller.setModelSettings(settings)
    if args.server:
        serverToken = server_token(args.server_token_file, args.server_token, "--server-token-file") or ""
        controller.setCompute(COMPUTE_SERVER, args.server, serverToken)
    else:
        controller.setCompute(COMPUTE_LOCAL)
    app = SAM2SWebApp(
        server,
        controller,
        slicerApp,
        roots,
        tempfile.mkdtemp(prefix="sam2s-web-"),
        maxUploadBytes=args.max_upload_mb << 20,
        requiredToken=token,
    )
    if args.video:
        app.openVideo(args.video)
    return app


def run(args: argparse.Namespace) -> int:
    """``sam2s web``: serve the app until Ctrl+C (or SIGTERM). Prints ``sam2s web: http://HOST:PORT/
    (ready in S s)`` once the page can be opened (and how to pass the token when one is needed).
    Returns the exit code."""
    started = time.monotonic()
    app = createApp(args)
    server = app.server

    @server.controller.add("on_server_ready")
    def ready(**_kwargs) -> None:
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        url = f"http://{host}:{server.port}/"
        print(f"sam2s web: {url} (ready in {time.monotonic() - started:.1f} s)", flush=True)
        if app.requiredToken:  # never printed: it is the user's own (--token or $SAM2S_WEB_TOKEN)
            print(
                f"sam2s web: open {url}?token=TOKEN with your token (other computers: this computer's address)",
                flush=True,
            )

    try:
        server.start(host=args.host, port=args.port, open_browser=False, show_connection_info=False, timeout=0)
    finally:
        app.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sam2s web", description="The SAM2S tracker in a web browser.")
    addWebArguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
