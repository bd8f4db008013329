"""EdgeTAM chosen through every front end (issue 24, acceptance 6): the command line, the tracking
server (through the Slicer module's ``ServerBackend``, as the module uses it) and the module's
controller in this process; the batch row is in ``test_batch.py`` (its Ray run).

Each uses a checkpoint of random EdgeTAM weights (``conftest.random_model``) on a generated clip,
at 256 px (the smallest size whose stride-16 map splits into the perceiver's 16 x 16 grid).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import random_model
from PIL import Image
from sam2sapp import cli
from sam2sapp.visualize import write_video
from SAM2SSlicerLib import ModelSettings, headless
from SAM2SSlicerLib.backends import InProcessBackend, LocalServer, ServerBackend
from SAM2SSlicerLib.controller import JsonSettingsStore, SAM2SController
from SAM2SSlicerLib.synthetic import SyntheticClip

slicerio = pytest.importorskip("slicerio")

FRAMES, H, W, IMAGE_SIZE = 6, 96, 128, 256


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A generated mp4, its prompts file (a mask per object on frame 0) and an EdgeTAM checkpoint."""
    root = tmp_path_factory.mktemp("edgetam-everywhere")
    clip = SyntheticClip(FRAMES, H, W, num_objects=2, seed=5)
    frames = np.stack([clip.get(i) for i in range(FRAMES)])
    write_video(root / "video.mp4", iter(frames), fps=10)
    objects = []
    for k in range(2):
        Image.fromarray(clip.mask(0, k).astype(np.uint8) * 255).save(root / f"mask{k + 1}.png")
        objects.append({"id": k + 1, "name": f"blob {k + 1}", "prompts": [{"frame": 0, "mask": f"mask{k + 1}.png"}]})
    (root / "prompts.json").write_text(json.dumps({"objects": objects}))
    torch.save({"model": random_model("edgetam", IMAGE_SIZE).state_dict()}, root / "edgetam.pt")
    return {"root": root, "clip": clip, "frames": frames}


@pytest.mark.slow  # end to end through the command line
def test_the_command_line_tracks_with_edgetam(inputs, capsys):
    root = inputs["root"]
    out = root / "cli.seg.nrrd"
    code = cli.main(
        ["track", str(root / "video.mp4"), "--prompts", str(root / "prompts.json"), "--output", str(out),
         "--model", "edgetam", "--checkpoint", str(root / "edgetam.pt"), "--image-size", str(IMAGE_SIZE),
         "--quiet"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "engine: sam2" in captured.out and "edgetam" in captured.out
    seg = slicerio.read_segmentation(str(out))
    assert {s["name"] for s in seg["segments"]} == {"blob 1", "blob 2"}
    # A SAM 2.1 checkpoint given for --model edgetam is refused, naming the config it matches.
    tiny = root / "tiny.pt"
    torch.save({"model": random_model("sam2.1_hiera_t", 64).state_dict()}, tiny)
    code = cli.main(
        ["track", str(root / "video.mp4"), "--prompts", str(root / "prompts.json"), "--output",
         str(root / "wrong.seg.nrrd"), "--model", "edgetam", "--checkpoint", str(tiny), "--quiet"]
    )  # fmt: skip
    assert code != 0 and "sam2.1_hiera_t" in capsys.readouterr().err


def _track(controller: SAM2SController, clip: SyntheticClip, frames: np.ndarray) -> np.ndarray:
    """The panel's flow: import, New, a click on object 1 on frame 0, propagate; the segment's masks."""
    editor = controller.logic.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    controller.importVideo(frames)
    controller.createSegmentation(editor)
    controller.effectActivated(editor)
    ys, xs = np.nonzero(clip.mask(0, 0))
    assert controller.click((float(xs.mean()), float(ys.mean()), 0), False, editor)
    while controller.runner.isRunning():
        controller.runner.tick()
    assert controller.propagate("forward", 0, editor) is not None, controller.lastStatus
    while controller.runner.isRunning():
        controller.runner.tick()
    assert controller.lastStatus.startswith("Done"), controller.lastStatus
    return controller.logic.segmentMask(editor.GetSelectedSegmentID())


@pytest.mark.slow  # a tracking server process
def test_the_module_controller_tracks_with_edgetam_here_and_in_the_tracking_server(inputs, tmp_path):
    settings = ModelSettings(
        configName="edgetam", checkpoint=str(inputs["root"] / "edgetam.pt"), imageSize=IMAGE_SIZE, device="cpu"
    )
    masks = {}
    server = LocalServer()
    try:
        for name, backend in (("here", InProcessBackend()), ("server", ServerBackend(localServer=server))):
            controller = SAM2SController(
                headless.createTrackingLogic(backend=backend),
                JsonSettingsStore(tmp_path / f"{name}.json"),
                backendFactory=lambda url, token, b=backend: b,
            )
            controller.setModelSettings(settings)
            masks[name] = _track(controller, inputs["clip"], inputs["frames"])
            controller.logic.close()
    finally:
        server.stop()
    assert masks["here"].any(axis=(1, 2)).all()  # every frame tracked
    np.testing.assert_array_equal(masks["server"], masks["here"])
