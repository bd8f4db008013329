"""Tracking through the local tracking server versus in this process (the headless Slicer logic).

Same random weights (a checkpoint file both sides load), same frames (the real clip's first frames
when ../shared/data/endoscapes_v4 is there, else a generated clip), two objects, a forward
propagation; the two sides are timed alternately (in-process, server, server, in-process ...) in
one run, so that the machine's load affects both alike. The server side is driven as the Slicer
module drives it: ``TrackingJob.start`` then ``JobRunner.tick`` every 100 ms (a poll of the server
and a bulk write into MRML). Prints seconds per frame of both and their ratio.

    python benchmarks/bench_server.py --image-size 512 --frames 12 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SAM2SSlicer"))
sys.path.insert(0, str(ROOT / "benchmarks"))  # meta_reference (also when run through runpy)

from meta_reference import SHARED_DATA, random_model  # noqa: E402
from SAM2SSlicerLib import ModelSettings  # noqa: E402
from SAM2SSlicerLib.backends import InProcessBackend, LocalServer, ServerBackend  # noqa: E402
from SAM2SSlicerLib.headless import createTrackingLogic  # noqa: E402
from SAM2SSlicerLib.runner import JobRunner  # noqa: E402
from SAM2SSlicerLib.synthetic import SyntheticClip  # noqa: E402


def frames_and_prompts(n: int) -> tuple[np.ndarray | str, list[tuple[str, tuple]]]:
    """The clip (a video path or an array) and two prompts: a point and a box on frame 0."""
    if (SHARED_DATA / "video.mp4").is_file():
        return str(SHARED_DATA / "video.mp4"), [("point", (451.0, 137.0)), ("box", (543.0, 230.0, 587.0, 273.0))]
    clip = SyntheticClip(n, 240, 320, num_objects=2, seed=0)
    frames = np.stack([clip.get(i) for i in range(n)])
    ys, xs = np.nonzero(clip.mask(0, 0))
    y2, x2 = np.nonzero(clip.mask(0, 1))
    return frames, [("point", (float(xs.mean()), float(ys.mean()))), ("box", (x2.min(), y2.min(), x2.max(), y2.max()))]


def one_run(backend, checkpoint: Path, image_size: int, n: int) -> float:
    """Seconds per tracked frame of a forward propagation over ``n`` frames (model loaded before)."""
    source, prompts = frames_and_prompts(n)
    logic = createTrackingLogic(backend=backend, chunkSize=8)
    logic.setModelSettings(ModelSettings(checkpoint=str(checkpoint), imageSize=image_size, device="cpu"))
    logic.importVideo(source, lastFrame=n - 1)
    logic.createSegmentation()
    for objectId, (kind, value) in enumerate(prompts, start=1):
        segment = logic.addSegment(f"object {objectId}", objectId=objectId)
        if kind == "point":
            logic.addPointPrompt(segment, 0, *value)
        else:
            logic.setBoxPrompt(segment, 0, [float(v) for v in value])
    logic.track(lastFrame=0)  # loads the model and encodes frame 0: not timed
    job = logic.createTrackingJob(startFrame=0, direction="forward")
    start = time.perf_counter()
    if isinstance(backend, InProcessBackend):
        job.run(onFrame=logic.applyTrackingResults)
        logic.applyTrackingResults(job, flush=True)
    else:
        runner = JobRunner(logic)
        runner.start(job)
        while runner.isRunning():
            time.sleep(0.1)
            runner.tick()
    seconds = (time.perf_counter() - start) / len(job.trackedFrames)
    assert job.status == "done", job.error
    logic.close()
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads of this process")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "random_tiny.pt"
        torch.save({"model": random_model("sam2.1_hiera_t", a.image_size).state_dict()}, checkpoint)
        server = LocalServer()
        times: dict[str, list[float]] = {"in-process": [], "server": []}
        try:
            for r in range(a.rounds):  # alternated (A B, B A, ...): load and order hit both sides alike
                order = ["in-process", "server"] if r % 2 == 0 else ["server", "in-process"]
                for side in order:
                    backend = InProcessBackend() if side == "in-process" else ServerBackend(localServer=server)
                    times[side].append(one_run(backend, checkpoint, a.image_size, a.frames))
                inproc, served = times["in-process"][-1], times["server"][-1]
                print(f"round {r + 1}: in-process {inproc:.3f} s/frame, server {served:.3f} s/frame")
        finally:
            server.stop()
    inproc, served = statistics.median(times["in-process"]), statistics.median(times["server"])
    print(
        f"sam2.1_hiera_t, {a.image_size} px, 2 objects, {a.frames} frames, {a.rounds} alternated rounds (medians): "
        f"in-process {inproc:.3f} s/frame, server {served:.3f} s/frame, server / in-process = {served / inproc:.3f}"
    )


if __name__ == "__main__":
    main()
