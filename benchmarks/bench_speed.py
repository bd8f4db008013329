"""Tracking speed of sam2s versus Meta's reference (sam2==1.1.0), same weights, same frames, one run.

Two objects (a click and a box) on frame 0 of the real clip (or a generated clip when
``../shared/data/endoscapes_v4`` is absent), forward propagation over ``--frames`` frames, CPU fp32,
``--threads`` threads. Prints seconds per frame of each and the speed-up::

    python benchmarks/bench_speed.py --image-size 512 --frames 12
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SAM2SSlicer"))
sys.path.insert(0, str(ROOT / "Testing" / "Python"))

import sam2s  # noqa: E402
from reference import SHARED_DATA, build_reference  # noqa: E402 - Meta's reference (Testing/Python/reference.py)
from SAM2SSlicerLib.synthetic import SyntheticClip  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="sam2.1_hiera_t")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    folder = Path(tempfile.mkdtemp())
    if (SHARED_DATA / "frames").is_dir():
        for i in range(a.frames):
            shutil.copy(SHARED_DATA / "frames" / f"{i:05d}.jpg", folder)
        point, box = [[451, 137]], [543, 230, 587, 273]
    else:
        clip = SyntheticClip(a.frames, 480, 854)
        for i in range(a.frames):
            Image.fromarray(clip.get(i)).save(folder / f"{i:05d}.jpg", quality=95)
        ys, xs = np.nonzero(clip.mask(0, 1))
        point, box = [[float(xs.mean()), float(ys.mean())]], [xs.min(), ys.min(), xs.max(), ys.max()]
    ref = build_reference(a.config, a.image_size)
    ours = sam2s.build_model(a.config, image_size=a.image_size)
    sam2s.load_checkpoint(ours, ref.state_dict())

    with torch.inference_mode():
        state = ref.init_state(str(folder), offload_video_to_cpu=True)
        ref.add_new_points_or_box(state, 0, 1, points=point, labels=[1])
        ref.add_new_points_or_box(state, 0, 2, box=box)
        t0 = time.perf_counter()
        n_ref = sum(1 for _ in ref.propagate_in_video(state))
        t_ref = (time.perf_counter() - t0) / n_ref
    tracker = sam2s.VideoTracker(ours, folder)
    tracker.add_points(0, 1, point, [1])
    tracker.add_box(0, 2, box)
    t0 = time.perf_counter()
    n_ours = sum(1 for _ in tracker.propagate())
    t_ours = (time.perf_counter() - t0) / n_ours
    shutil.rmtree(folder)
    print(f"{a.config} at {a.image_size} px, 2 objects, {n_ours} frames, {a.threads} threads, CPU fp32")
    print(f"{'':12}{'s/frame':>9}")
    print(f"{'reference':12}{t_ref:9.3f}")
    print(f"{'sam2s':12}{t_ours:9.3f}")
    print(f"speed-up: {t_ref / t_ours:.2f}x")


if __name__ == "__main__":
    main()
