"""The steps of the module's self-test (``SAM2SSlicer.SAM2SSlicerTest``) that need no Slicer application.

Slicer's extension factory runs the module test (``py_SAM2SSlicer``) on build machines that have
neither PyTorch nor PyAV (N14 of issue 23). The test therefore runs its panel flow on a generated
clip (:func:`generatedClip`, numpy only) through the controller, and tracks only where PyTorch is
installed (:func:`trackingAvailable`). The same functions run, outside Slicer, in a virtual
environment with slicer-core and without torch or PyAV (``make factory-test``:
``Testing/Factory/run_module_test.py``), which is how this repository shows that the factory's
run passes. Only Qt steps (views, layout) stay in ``SAM2SSlicerTest``.

Qt-free: plain Python on the MRML classes (works in Slicer and on PyPI ``slicer-core``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import numpy as np

__all__ = ["generatedClip", "panelFlow", "trackingAvailable"]


def generatedClip(frames: int = 12, height: int = 120, width: int = 160, objects: int = 2):
    """``(clip, video)``: a ``synthetic.SyntheticClip`` (seed 0) and its ``(T, H, W, 3)`` uint8 RGB frames."""
    from .synthetic import SyntheticClip

    clip = SyntheticClip(num_frames=frames, height=height, width=width, num_objects=objects, seed=0)
    return clip, np.stack([clip.get(i) for i in range(frames)])


def trackingAvailable() -> bool:
    """True where PyTorch is installed (tracking on this computer can be tested); False on Slicer's
    extension build machines, where the module test skips its tracking part with a warning, as
    SlicerTotalSegmentator's test does."""
    return importlib.util.find_spec("torch") is not None


def panelFlow(controller, scene, check: Callable[[bool, str], None], step: Callable[[str], None] = print):
    """The panel's flow without tracking: import a generated clip, New segmentation (its first
    segment selected), keys reach the effect only while it is active, and the module's exit stops
    them. Returns the imported video node.

    Args:
        controller: a ``SAM2SController`` (in Slicer on the module's logic; headless on
            ``headless.createTrackingLogic``), with any backend: nothing is tracked.
        scene: its ``vtkMRMLScene``.
        check: ``check(condition, what)`` fails the test when ``condition`` is false (Slicer's
            ``unittest`` ``assertTrue``, or an ``AssertionError`` raiser).
        step: shows what runs (``delayDisplay`` in Slicer).
    """
    step("Importing a generated clip through the controller")
    _clip, frames = generatedClip()
    video = controller.importVideo(frames, name="clip", frameRate=25)
    check(video.GetImageData().GetDimensions() == (160, 120, 12), "the video volume is 160 x 120 x 12")
    check((controller.firstFrame, controller.lastFrame) == (0, 11), "the frame range is the whole video")

    step("New segmentation: its first segment is selected")
    editorNode = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    controller.createSegmentation(editorNode)
    check(bool(editorNode.GetSelectedSegmentID()), "a segment is selected")
    check(editorNode.GetSourceVolumeNode() is video, "the editor shows the video")

    step("Keys go to the effect only while it is active")
    controller.effectActivated(editorNode)
    check(controller.keyPress("x", False, False, 0, editorNode), "X is taken while the effect is active")
    check(controller.tool == "box", "X switches to the box tool")
    controller.moduleExited()
    check(not controller.keyPress("x", False, False, 0, editorNode), "no key is taken after the module's exit")
    check(not controller.click((10.0, 10.0, 0), False, editorNode), "no click is taken after the module's exit")
    return video
