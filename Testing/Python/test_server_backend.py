"""The Slicer logic tracking through a real tracking-server subprocess (``backends.ServerBackend``):
the same masks as in this process, kill -9 of the server mid-propagation, cancel, an expired
session, and a main thread that holds the GIL as Slicer's does (PythonQt without thread support).
"""

from __future__ import annotations

import ctypes
import json
import time

import numpy as np
import pytest
import torch
from conftest import random_model

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("slicer")

from SAM2SSlicerLib import ModelSettings  # noqa: E402
from SAM2SSlicerLib.backends import InProcessBackend, LocalServer, ServerBackend  # noqa: E402
from SAM2SSlicerLib.headless import createTrackingLogic  # noqa: E402
from SAM2SSlicerLib.runner import JobRunner  # noqa: E402

FRAMES = 16  # of the real clip, at half width (427 x 240)
IMAGE_SIZE = 128


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Random weights saved as a checkpoint: both sides build the same model from it."""
    path = tmp_path_factory.mktemp("weights") / "random_tiny.pt"
    torch.save({"model": random_model("sam2.1_hiera_t", IMAGE_SIZE).state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def server():
    """One local server for the module's tests (as the Slicer module starts it)."""
    local = LocalServer()
    yield local
    local.stop()


def _logic(backend, checkpoint, precision="auto"):
    logic = createTrackingLogic(backend=backend, chunkSize=4)
    settings = ModelSettings(checkpoint=str(checkpoint), imageSize=IMAGE_SIZE, device="cpu", precision=precision)
    logic.setModelSettings(settings)
    return logic


def _prompted(logic, shared_data):
    """The real clip's first frames at half width, two objects prompted as in prompts.json."""
    logic.importVideo(str(shared_data / "video.mp4"), lastFrame=FRAMES - 1, maxWidth=427)
    logic.createSegmentation()
    prompts = json.loads((shared_data / "prompts.json").read_text())["objects"]
    ids = {}
    for obj in prompts:
        ids[obj["id"]] = logic.addSegment(obj["name"], objectId=obj["id"])
        prompt = obj["prompts"][0]
        if "points" in prompt:
            for (x, y), label in zip(prompt["points"], prompt["labels"]):
                logic.addPointPrompt(ids[obj["id"]], 0, x / 2, y / 2, positive=bool(label))
        else:
            logic.setBoxPrompt(ids[obj["id"]], 0, [v / 2 for v in prompt["box"]])
    return ids


def _masks(logic, ids) -> dict[int, np.ndarray]:
    return {o: logic.segmentMask(s) for o, s in ids.items()}


def _session_flow(logic, ids):
    """Forward from frame 0, a correction on frame 8 and forward again, then backward from the end."""
    logic.track(direction="forward")
    logic.addPointPrompt(ids[1], 8, 20.0, 200.0, positive=False)
    logic.track(startFrame=8, direction="forward")
    logic.track(startFrame=FRAMES - 1, direction="backward")
    return _masks(logic, ids)


@pytest.mark.slow  # make test, not make test-fast
def test_server_tracking_equals_in_process(shared_data, checkpoint, server):
    local = _logic(InProcessBackend(), checkpoint)
    remote = _logic(ServerBackend(localServer=server), checkpoint)
    local_ids, remote_ids = _prompted(local, shared_data), _prompted(remote, shared_data)
    expected = _session_flow(local, local_ids)
    got = _session_flow(remote, remote_ids)
    for objectId in expected:
        for frame in range(FRAMES):
            np.testing.assert_array_equal(
                got[objectId][frame], expected[objectId][frame], f"object {objectId}, frame {frame}"
            )
    assert all(0 < m.mean() < 1 for m in expected.values())  # informative masks, or equality proves little
    # the model's confidence per propagated frame comes back from the server with each frame
    for objectId in expected:
        mine, theirs = local.segmentConfidences[local_ids[objectId]], remote.segmentConfidences[remote_ids[objectId]]
        propagated = set(range(1, FRAMES))  # frame 0 holds the prompts (their answers carry no confidence)
        assert propagated <= set(mine) and propagated <= set(theirs)
        for frame in propagated:
            np.testing.assert_allclose(theirs[frame], mine[frame], rtol=1e-6, atol=1e-6)
    remote.close()


def _tick_until(runner, condition, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        runner.tick()
        time.sleep(0.02)


@pytest.mark.slow
def test_kill_9_mid_propagation_keeps_frames_and_the_next_track_restarts(shared_data, checkpoint):
    reference = _logic(InProcessBackend(), checkpoint)
    refIds = _prompted(reference, shared_data)
    reference.track(direction="forward")
    expected = _masks(reference, refIds)

    local = LocalServer()
    try:
        logic = _logic(ServerBackend(localServer=local), checkpoint)
        ids = _prompted(logic, shared_data)
        runner = JobRunner(logic)
        job = logic.createTrackingJob(direction="forward")
        runner.start(job)
        _tick_until(runner, lambda: len(job.trackedFrames) >= 3 or job.finished.is_set())
        local.process.kill()  # kill -9
        local.process.wait()
        _tick_until(runner, lambda: not runner.isRunning())
        kept = list(job.trackedFrames)
        assert job.status == "failed" and 3 <= len(kept) < FRAMES
        assert "stopped answering" in str(job.error) and f"{len(kept)} finished frames" in str(job.error)
        got = _masks(logic, ids)
        for objectId in expected:
            for frame in kept:  # written before the server died
                np.testing.assert_array_equal(got[objectId][frame], expected[objectId][frame])
            assert not got[objectId][max(kept) + 1 :].any()  # nothing else
        logic.track(direction="forward")  # a fresh server, the prompts sent again from MRML
        assert local.starts == 2
        got = _masks(logic, ids)
        for objectId in expected:
            np.testing.assert_array_equal(got[objectId], expected[objectId])
        logic.close()
    finally:
        local.stop()


@pytest.mark.slow  # a server or launcher process: make test-fast leaves it to make test
def test_cancel_keeps_finished_frames(shared_data, checkpoint, server):
    logic = _logic(ServerBackend(localServer=server), checkpoint)
    ids = _prompted(logic, shared_data)
    runner = JobRunner(logic)
    job = logic.createTrackingJob(direction="forward")
    runner.start(job)
    _tick_until(runner, lambda: len(job.trackedFrames) >= 2 or job.finished.is_set())
    runner.cancel()
    _tick_until(runner, lambda: not runner.isRunning())
    kept = list(job.trackedFrames)
    assert kept == list(range(len(kept))) and job.writtenFrames == len(kept)
    assert job.cancelled or len(kept) == FRAMES
    masks = _masks(logic, ids)
    assert all(masks[o][kept].reshape(len(kept), -1).any(axis=1).all() for o in masks)  # written
    assert not any(masks[o][len(kept) :].any() for o in masks)  # the rest untouched
    logic.close()


@pytest.mark.slow
def test_an_expired_session_is_made_again_from_the_scene(shared_data, checkpoint):
    local = LocalServer(extraArgs=["--idle-timeout", "3"])  # a loaded machine may pause a poll for a second
    try:
        logic = _logic(ServerBackend(localServer=local), checkpoint)
        ids = _prompted(logic, shared_data)
        logic.track(direction="forward", lastFrame=3)
        time.sleep(5)  # the server forgets the idle session
        job = logic.track(direction="forward", startFrame=3)
        assert job.status == "done" and any("made again" in w for w in job.warnings)
        reference = _logic(InProcessBackend(), checkpoint)
        refIds = _prompted(reference, shared_data)
        reference.track(direction="forward", lastFrame=3)
        reference.resetSession()  # a session made again has the prompts, not the memory of tracked frames
        reference.track(direction="forward", startFrame=3)
        got, expected = _masks(logic, ids), _masks(reference, refIds)
        for objectId in expected:
            np.testing.assert_array_equal(got[objectId], expected[objectId])
        logic.close()
    finally:
        local.stop()


@pytest.mark.slow
@pytest.mark.heavy
def test_tracking_keeps_its_speed_while_the_main_thread_holds_the_gil(shared_data, checkpoint, server, capsys):
    """Slicer's main thread holds the GIL while Qt idles (PythonQt without thread support): here it
    holds it for 100 ms (a ctypes.PyDLL usleep keeps the GIL), then runs one tick (a poll of the
    server and a bulk write). The server keeps >= 80% of its unobstructed frames per second (best of
    two interleaved runs each) and each tick (a poll and its write) returns in < 50 ms; the old design (the engine in a
    Python thread) is measured beside it."""
    usleep = ctypes.PyDLL(None).usleep  # PyDLL: the GIL stays held during the call

    def run(backend, obstructed: bool) -> tuple[float, float]:
        # fp32, as when this bound was set: in bf16 the 16 frames take ~1.3 s, and the last 100 ms
        # GIL hold before the final tick alone is ~8% of that (measured 73% in bf16 on a busy CI run)
        logic = _logic(backend, checkpoint, precision="fp32")
        _prompted(logic, shared_data)
        logic.track(lastFrame=0)  # the model is loaded and frame 0 encoded: not timed
        job = logic.createTrackingJob(direction="forward")
        polls = []
        start = time.monotonic()
        if isinstance(backend, InProcessBackend):  # the old design: the engine in a Python thread
            import threading

            worker = threading.Thread(target=job.run)
            worker.start()
            while not job.finished.is_set() and time.monotonic() - start < 6:  # starved: measured for 6 s
                usleep(100_000) if obstructed else time.sleep(0.1)
                logic.applyTrackingResults(job)
            fps = len(job.trackedFrames) / (time.monotonic() - start)
            job.requestCancel()
            worker.join()  # the main thread waits without the GIL now: the worker stops soon
            logic.close()
            return fps, 0.0
        else:
            runner = JobRunner(logic)
            runner.start(job)
            while runner.isRunning():
                usleep(100_000) if obstructed else time.sleep(0.1)
                t = time.perf_counter()
                runner.tick()  # one step of the job (a poll) and the write of what it brought
                polls.append(time.perf_counter() - t)
        fps = len(job.trackedFrames) / (time.monotonic() - start)
        logic.applyTrackingResults(job, flush=True)
        logic.close()
        return fps, max(polls, default=0.0)

    # interleaved A B A B, best of two each: one 1.5 s run swings by 10-20% on these shared 2 cores
    runs = {False: [], True: []}
    for obstructed in (False, True, False, True):
        runs[obstructed].append(run(ServerBackend(localServer=server), obstructed=obstructed))
    server_free = max(fps for fps, _ in runs[False])
    server_held = max(fps for fps, _ in runs[True])
    worst_poll = max(poll for _, poll in runs[True])
    thread_free, _ = run(InProcessBackend(), obstructed=False)
    thread_held, _ = run(InProcessBackend(), obstructed=True)
    with capsys.disabled():
        print(
            f"\nframes/s, main thread free vs holding the GIL: server {server_free:.2f} vs {server_held:.2f} "
            f"({server_held / server_free:.0%}); engine in a thread {thread_free:.2f} vs {thread_held:.2f} "
            f"({thread_held / thread_free:.0%}); slowest poll {worst_poll * 1000:.1f} ms"
        )
    assert server_held >= 0.8 * server_free
    assert worst_poll < 0.05


REMOTE_CLIENT = r"""
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):  # what a Slicer without PyTorch lacks
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "fastapi", "uvicorn", "starlette"):
            raise ImportError("blocked: " + name)

sys.meta_path.insert(0, Block())
import numpy as np
from SAM2SSlicerLib import ModelSettings, headless
from SAM2SSlicerLib.controller import JsonSettingsStore, SAM2SController
from SAM2SSlicerLib.dependencies import requirementsFor
from SAM2SSlicerLib.synthetic import SyntheticClip

url, token, checkpoint, store = sys.argv[1:5]
controller = SAM2SController(headless.createTrackingLogic(), JsonSettingsStore(store))
controller.setCompute("server", url, token)
controller.setModelSettings(ModelSettings(checkpoint=checkpoint, imageSize=128, device="cpu"))
clip = SyntheticClip(num_frames=6, height=48, width=64, num_objects=1, seed=4)
editor = controller.logic.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
controller.importVideo(np.stack([clip.get(i) for i in range(6)]))
controller.createSegmentation(editor)
controller.effectActivated(editor)
ys, xs = np.nonzero(clip.mask(0, 0))
controller.click((float(xs.mean()), float(ys.mean()), 0), False, editor)
while controller.runner.isRunning():  # the click's preview (the server session is made first)
    controller.runner.tick()
job = controller.propagate("forward", 0, editor)
while controller.runner.isRunning():
    controller.runner.tick()
mask = controller.logic.segmentMask(editor.GetSelectedSegmentID())
print(json.dumps({
    "status": job.status, "frames": job.trackedFrames, "masked": int(mask.any(axis=(1, 2)).sum()),
    "loaded": sorted(m for m in ("torch", "fastapi", "uvicorn") if m in sys.modules),
    "requirements": requirementsFor("remote"),
}))
controller.logic.close()
"""


@pytest.mark.slow  # a server or launcher process: make test-fast leaves it to make test
def test_remote_tracking_keeps_slicers_process_free_of_pytorch(server, checkpoint, tmp_path):
    """The first-use choice "a server": the whole panel flow (import, New, click, propagate) runs in a
    process where torch, FastAPI and uvicorn cannot be imported, and nothing asks for them."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    url, token = server.ensureRunning()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "SAM2SSlicer") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", REMOTE_CLIENT, url, token, str(checkpoint), str(tmp_path / "settings.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "done" and result["frames"] == list(range(6)) and result["masked"] >= 1
    assert result["loaded"] == []
    assert not any(
        r.split(">")[0].split("<")[0].strip() in ("fastapi", "uvicorn", "torch") for r in result["requirements"]
    )


@pytest.mark.slow  # a server or launcher process: make test-fast leaves it to make test
def test_closing_the_scene_during_a_propagation_stops_it_quietly(tmp_path):
    """N10 of issue 23: Close Scene while a propagation runs in the local server stops it; the job
    is marked ``closedWithScene`` and the user sees a status line, not "Tracking stopped: <error>"."""
    from SAM2SSlicerLib.controller import JsonSettingsStore, SAM2SController
    from SAM2SSlicerLib.synthetic import SyntheticClip

    clip = SyntheticClip(300, 240, 320, 1, seed=2)
    local = LocalServer()
    try:
        logic = createTrackingLogic(backend=ServerBackend(localServer=local))
        logic.setModelSettings(ModelSettings(engine="flow", device="cpu"))
        controller = SAM2SController(logic, JsonSettingsStore(tmp_path / "settings.json"))
        messages = []
        controller.statusListeners.append(messages.append)
        editor = logic.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        controller.importVideo(np.stack([clip.get(t) for t in range(300)]))
        controller.createSegmentation(editor)
        segmentId = editor.GetSelectedSegmentID()
        logic.setMaskPrompt(segmentId, 0, clip.mask(0, 0))
        job = controller.propagate("forward", 0, editor, scope="selected")
        assert job is not None
        while not job.trackedFrames:
            controller.runner.tick()
            time.sleep(0.02)
        controller.sceneAboutToClose()  # the module's StartCloseEvent observer
        deadline = time.monotonic() + 60
        while controller.runner.isRunning() and time.monotonic() < deadline:
            controller.runner.tick()
            time.sleep(0.02)
        assert not controller.runner.isRunning() and job.closedWithScene
        assert len(job.trackedFrames) < 300 and logic.segmentationNode is None
        assert messages[-1] == "Tracking stopped: the scene was closed." and not any(
            "Tracking stopped: " in m and "closed" not in m for m in messages
        )
        logic.close()
    finally:
        local.stop()
