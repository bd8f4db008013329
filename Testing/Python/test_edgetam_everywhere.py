"""EdgeTAM chosen through every front end (issue 24, acceptance 6): the command line, the tracking
server (through the Slicer module's ``ServerBackend``, as the module uses it) and the module's
controller in this process, the web app's options and tracking server (below the browser: its page
drives the same controller); the batch row is in ``test_batch.py`` (its Ray run).

Each uses a checkpoint of random EdgeTAM weights (``conftest.random_model``) on a generated clip,
at 256 px (the smallest size whose stride-16 map splits into the perceiver's 16 x 16 grid).
"""

from __future__ import annotations

import dataclasses
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


@pytest.mark.slow  # tracking server processes
def test_the_module_controller_tracks_with_edgetam_here_and_in_the_tracking_server(inputs, tmp_path):
    """The module's controller with EdgeTAM in this process and through a local tracking server,
    and the web app's (``sam2s web --model edgetam --checkpoint ...``: its options give the
    controller's settings, its backend factory the tracking server): equal masks."""
    import argparse

    from sam2sapp.web import options as web

    checkpoint = str(inputs["root"] / "edgetam.pt")
    settings = ModelSettings(configName="edgetam", checkpoint=checkpoint, imageSize=IMAGE_SIZE, device="cpu")
    parser = argparse.ArgumentParser()
    web.addWebArguments(parser)
    args = parser.parse_args(["--model", "edgetam", "--checkpoint", checkpoint, "--image-size", str(IMAGE_SIZE)])
    webSettings = dataclasses.replace(web.modelSettings(args), device="cpu")
    assert (webSettings.engine, webSettings.configName, webSettings.imageSize) == ("sam2", "edgetam", IMAGE_SIZE)
    server = LocalServer()
    webBackend = web.backendFactory(niceness=0)(None, "")
    runs = (
        ("here", InProcessBackend(), settings, JsonSettingsStore(tmp_path / "here.json")),
        ("server", ServerBackend(localServer=server), settings, JsonSettingsStore(tmp_path / "server.json")),
        ("web", webBackend, webSettings, web.MemorySettingsStore()),
    )
    masks = {}
    try:
        for name, backend, modelSettings, store in runs:
            controller = SAM2SController(
                headless.createTrackingLogic(backend=backend), store, backendFactory=lambda url, token, b=backend: b
            )
            controller.setModelSettings(modelSettings)
            masks[name] = _track(controller, inputs["clip"], inputs["frames"])
            controller.logic.close()
    finally:
        server.stop()
        webBackend.localServer.stop()
    assert masks["here"].any(axis=(1, 2)).all()  # every frame tracked
    np.testing.assert_array_equal(masks["server"], masks["here"])
    np.testing.assert_array_equal(masks["web"], masks["here"])


@pytest.mark.slow  # tracks at 512 px through the command line
def test_a_checkpoints_training_size_is_the_default_everywhere(inputs, tmp_path, monkeypatch, capsys):
    """Issue 24 item 3: with no image size given, a registry checkpoint runs at the size it was
    trained at (MedSAM2: SAM 2.1 tiny at 512 px), by registry name or by its file name, through
    the command line (the provenance of the output records 512), the tracking server (its model
    cache builds at 512) and the module's settings (what the module sends a server); an explicit
    size wins, and Meta's checkpoints and EdgeTAM keep 1024."""
    from sam2s.modelspec import ModelSpec
    from sam2s.serving.options import ServerLimits
    from sam2s.serving.server_bodies import ModelRequest
    from sam2s.serving.server_state import ServerState
    from SAM2SSlicerLib.provenance import readProvenance

    cache = tmp_path / "cache"
    cache.mkdir()
    medsam2 = cache / "MedSAM2_latest.pt"  # bring your own file: its published name in the cache
    torch.save({"model": random_model("sam2.1_hiera_t", 512).state_dict()}, medsam2)
    monkeypatch.setenv("SAM2S_CACHE_DIR", str(cache))
    root = inputs["root"]

    out = tmp_path / "medsam2.seg.nrrd"
    code = cli.main(
        ["track", str(root / "video.mp4"), "--prompts", str(root / "prompts.json"), "--output", str(out),
         "--model", "sam2.1_hiera_t", "--checkpoint", "medsam2", "--quiet"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    prov = readProvenance(out)
    assert (prov.config, prov.imageSize, prov.checkpointName) == ("sam2.1_hiera_t", 512, "MedSAM2_latest.pt")

    state = ServerState(["t" * 32], [str(cache)], ServerLimits())
    assert (
        state.model(ModelRequest(config="sam2.1_hiera_t", checkpoint="medsam2", device="cpu")).config.image_size == 512
    )
    assert ModelRequest(config="sam2.1_hiera_t", checkpoint=str(medsam2), image_size=256).input_size == 256

    settings = ModelSettings(checkpoint=str(medsam2), device="cpu")  # the module's "as trained"
    assert settings.imageSize is None and settings.toSpec().input_size == 512
    assert ModelSettings(configName="edgetam").toSpec().input_size == 1024
    assert ModelSpec(config="sam2.1_hiera_t").input_size == ModelSpec(config="sam2_hiera_s").input_size == 1024
    assert ModelSpec(config="sam2_hiera_s", checkpoint="/data/sam2_hiera_s_endo18.pth").input_size == 512
