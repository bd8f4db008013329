"""The one stream (issue 22): ``plan_passes`` decides the passes, ``Tracker.run(plan)`` is the only
loop around ``propagate`` and yields ``TrackedFrame``s, a tracking server's ``RemoteSession`` is a
``sam2s.Tracker`` with the same stream, and ``sam2s track --server`` writes what ``sam2s track``
writes in this process."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from conftest import ROOT, random_model
from PIL import Image
from sam2s import FlowTracker, ModelSpec, TrackingPlan, VideoTracker, plan_passes
from sam2s.session import PromptError, Tracker
from SAM2SSlicerLib.synthetic import SyntheticClip

REAL = ROOT.parent / "shared" / "data" / "endoscapes_v4"


@pytest.mark.parametrize(
    "prompted, first, last, direction, start, passes",
    [
        ([3, 7], 0, 9, "both", None, [(3, 9, False), (2, 0, True)]),
        ([0], 0, 9, "both", None, [(0, 9, False)]),
        ([3, 7], 0, 9, "forward", None, [(3, 9, False)]),
        ([3, 7], 0, 9, "backward", None, [(7, 0, True)]),
        ([12], 2, 9, "both", None, [(2, 9, False)]),  # nothing prompted in the range: from its start
        ([12], 2, 9, "backward", None, [(9, 2, True)]),
        ([3], 0, 9, "both", 5, [(5, 9, False), (4, 0, True)]),
    ],
)
def test_plan_passes(prompted, first, last, direction, start, passes):
    assert plan_passes(prompted, first, last, direction, start) == passes
    assert TrackingPlan(tuple(passes)).total == sum(abs(e - s) + 1 for s, e, _ in passes)


def test_plan_passes_refuses_bad_values():
    with pytest.raises(ValueError, match="direction must be one of forward, backward, both"):
        plan_passes([0], 0, 9, "sideways")
    with pytest.raises(ValueError, match="empty"):
        plan_passes([0], 5, 4)
    with pytest.raises(ValueError, match="outside the frame range 0..9"):
        plan_passes([0], 0, 9, "both", 10)


@pytest.fixture(scope="module")
def clip():
    source = SyntheticClip(12, 48, 64, 2, seed=3)
    return source, np.stack([source.get(t) for t in range(12)])


def _prompted(tracker: Tracker, source) -> Tracker:
    for k in range(2):
        tracker.add_mask(4, k + 1, source.mask(4, k))
    return tracker


def test_run_is_propagate_pass_by_pass_with_the_engines_confidences(clip):
    source, frames = clip
    model = random_model("sam2.1_hiera_t", 64)
    passes = tuple(plan_passes([4], 0, 11))
    streamed = list(_prompted(VideoTracker(model, frames), source).run(TrackingPlan(passes)))
    reference = _prompted(VideoTracker(model, frames), source)
    expected = [(t, ids, logits.copy()) for s, e, r in passes for t, ids, logits in reference.propagate(s, e, r)]
    assert [f.frame_idx for f in streamed] == [t for t, _, _ in expected] == [*range(4, 12), *range(3, -1, -1)]
    assert [(f.done, f.total) for f in streamed] == [(k + 1, 12) for k in range(12)]
    for tracked, (t, ids, logits) in zip(streamed, expected):
        assert tracked.obj_ids == ids == [1, 2]
        np.testing.assert_array_equal(tracked.logits, logits)
        assert tracked.confidences == [reference.confidence(k, t) for k in ids]
        assert all(c is not None for c in tracked.confidences)
        assert set(tracked.masks()) == {1, 2} and tracked.masks()[1].dtype == bool


def test_run_stops_at_cancel_and_leaves_the_session_idle(clip):
    source, frames = clip
    tracker = _prompted(FlowTracker(frames), source)
    cancel = threading.Event()
    seen = []
    for tracked in tracker.run(TrackingPlan(((4, 11, False), (3, 0, True))), cancel=cancel):
        seen.append(tracked.frame_idx)
        if len(seen) == 3:
            cancel.set()  # the frame computed is yielded; nothing after it
    assert seen == [4, 5, 6]
    tracker.add_points(9, 1, [[10.0, 10.0]], [1])  # not busy: the pass's generator was closed
    with pytest.raises(PromptError):  # a refused pass raises from the stream, not later
        list(_prompted(FlowTracker(frames), source).run(TrackingPlan(((0, 3, False),))))


def test_run_without_keep_tracked_drops_what_no_later_pass_starts_from(clip):
    source, frames = clip
    kept = _prompted(FlowTracker(frames), source)
    list(kept.run(TrackingPlan(tuple(plan_passes([4], 0, 11)))))
    dropped = _prompted(FlowTracker(frames), source)
    plan = TrackingPlan(tuple(plan_passes([4], 0, 11)), keep_tracked=False)
    masks = {f.frame_idx: f.masks() for f in dropped.run(plan)}
    assert len(kept.objects[1].tracked) >= 11
    assert sorted(dropped.objects[1].tracked) == [0, 3, 4, 11]  # the passes' starts and ends, not every frame
    assert set(masks) == set(range(12))


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("fastapi")
    from SAM2SSlicerLib.backends import LocalServer

    local = LocalServer()
    url, token = local.ensureRunning()
    yield url, token
    local.stop()


def test_a_server_session_is_a_tracker_with_the_same_stream(server, clip):
    from sam2s.serving.client import Client, RemoteSession

    source, frames = clip
    client = Client(*server)
    remote = client.create_session({"upload": client.upload_frames(frames)}, {"engine": "flow"})
    try:
        assert isinstance(remote, Tracker) and isinstance(remote, RemoteSession)
        _prompted(remote, source)
        assert remote.obj_ids == [1, 2]
        plan = TrackingPlan(tuple(plan_passes([4], 0, 11)))
        streamed = list(remote.run(plan))
        local = [(f.frame_idx, f.obj_ids, f.masks()) for f in _prompted(FlowTracker(frames), source).run(plan)]
        assert [(f.frame_idx, f.obj_ids) for f in streamed] == [(t, ids) for t, ids, _ in local]
        for tracked, (_, _, masks) in zip(streamed, local):
            for k in (1, 2):
                np.testing.assert_array_equal(tracked.masks()[k], masks[k])
        one = [t for t, _, _ in remote.propagate(6, 8)]  # a pass of the contract, through a job
        assert one == [6, 7, 8]
        remote.remove_object(2)
        assert remote.obj_ids == [1]
    finally:
        released = []
        remote.on_close = lambda: released.append(True)
        remote.close()
        remote.close()
    assert released == [True]


def _track(argv: list[str], env_token: str | None = None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, PYTHONPATH=str(ROOT / "SAM2SSlicer"))
    if env_token:
        env["SAM2S_SERVER_TOKEN"] = env_token
    return subprocess.run([sys.executable, "-m", "sam2sapp", "track", *argv], capture_output=True, text=True,
                          env=env, timeout=900)  # fmt: skip


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.skipif(not (REAL / "frames").is_dir(), reason="the real clip (../shared/data/endoscapes_v4) is absent")
def test_track_with_server_writes_what_track_in_process_writes_on_the_real_clip(server, tmp_path):
    """Acceptance 2 of issue 22: the same label PNGs (byte for byte) and equal .seg.nrrd segments,
    with a SAM 2.1 tiny model of random weights at 64 px in fp32 (the same checkpoint file)."""
    import slicerio

    checkpoint = tmp_path / "tiny.pt"
    torch.save({"model": random_model("sam2.1_hiera_t", 64).state_dict()}, checkpoint)
    model = ["--checkpoint", str(checkpoint), "--image-size", "64", "--precision", "fp32", "--end", "40", "--quiet"]
    outputs = {}
    for name, extra in (("here", []), ("server", ["--server", server[0]])):
        out = tmp_path / name
        out.mkdir()
        argv = [str(REAL / "frames"), "--prompts", str(REAL / "prompts.json"), "--png-dir", str(out / "png")]
        r = _track([*argv, "--output", str(out / "o.seg.nrrd"), *model, *extra], server[1])
        assert r.returncode == 0, r.stderr
        outputs[name] = out
    here, there = outputs["here"], outputs["server"]
    names = sorted(p.name for p in (here / "png").glob("*.png"))
    assert names == sorted(p.name for p in (there / "png").glob("*.png")) and len(names) == 127
    for name in names:
        assert (here / "png" / name).read_bytes() == (there / "png" / name).read_bytes(), name
    a, b = (slicerio.read_segmentation(str(o / "o.seg.nrrd")) for o in (here, there))
    assert [s["name"] for s in a["segments"]] == [s["name"] for s in b["segments"]] == ["gallbladder", "cystic artery"]
    np.testing.assert_array_equal(a["voxels"], b["voxels"])
    assert any((np.asarray(Image.open(here / "png" / n)) > 0).any() for n in names[1:40])  # tracked, not empty


def test_model_spec_is_the_one_rule_and_derives_the_options():
    import argparse

    from sam2s.modelspec import add_model_arguments

    assert ModelSpec().validate() == ModelSpec()
    with pytest.raises(ValueError, match="^image_size: image size 100"):
        ModelSpec(image_size=100).validate()
    with pytest.raises(ValueError, match="^config: Unknown model config"):
        ModelSpec(config="sam3").validate()
    parser = argparse.ArgumentParser()
    add_model_arguments(parser, ModelSpec(device="cpu"))
    args = parser.parse_args(["--model", "sam2.1_hiera_s", "--image-size", "512", "--memory", "divemem"])
    spec = ModelSpec.from_arguments(args, ModelSpec(device="cpu"))
    assert spec == ModelSpec(config="sam2.1_hiera_s", image_size=512, memory="divemem", device="cpu")
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown model settings colour"):
        ModelSpec.from_dict({**spec.to_dict(), "colour": 1})
    flow = ModelSpec(engine="flow").tracker(np.zeros((2, 8, 8, 3), np.uint8))
    assert isinstance(flow, FlowTracker)


def test_a_cancelled_server_run_ends_cancelled(server):
    """A cancel may end a server job without another poll (the DELETE's answer is final): the run's
    status is then the job's ("cancelled"), as the Slicer job and the web app's Cancel read it."""
    from sam2s.serving.client import Client

    source = SyntheticClip(200, 96, 128, 1, seed=5)
    frames = np.stack([source.get(t) for t in range(200)])
    client = Client(*server)
    remote = client.create_session({"upload": client.upload_frames(frames)}, {"engine": "flow"})
    try:
        remote.add_mask(0, 1, source.mask(0, 0))
        run = remote.run(TrackingPlan(((0, 199, False),)))
        received = []
        while not received:
            received += run.ready()
        run.cancel()
        while not run.finished:
            received += run.ready()
        assert run.status == "cancelled" and 1 <= len(received) < 200
    finally:
        remote.close()
