"""Peak resident memory and time per frame of a tracking session versus video length.

Each measurement runs in a fresh Python process (so its peak RSS is its own): build the tiny
model with random weights, open a generated clip (frames synthesised on demand, so the video
itself costs no RAM), prompt 2 objects with their ground-truth masks on frame 0 and propagate to
the end. Prints one table, measured in one run, e.g.::

    python benchmarks/bench_memory.py --frames 500 5000 --memory sam2 divemem

``--json`` prints the rows as JSON instead (used by the test suite).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(frames: int, memory: str, image_size: int, config: str, threads: int, iou_threshold: float) -> dict:
    """Track ``frames`` generated frames in this process; returns the measured numbers."""
    sys.path.insert(0, str(ROOT / "SAM2SSlicer"))
    import sam2s
    import torch
    from SAM2SSlicerLib.synthetic import SyntheticClip

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = sam2s.build_model(config, image_size=image_size)
    # Random weights; make the object-score head say "present" so that masks are non-empty and
    # DiveMem's candidates (object present) exist, as with real weights on a visible object.
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(2.0)
    clip = SyntheticClip(frames, height=120, width=160, num_objects=2, seed=1)
    params = {"iou_threshold": iou_threshold} if memory == "divemem" else {}
    tracker = sam2s.VideoTracker(model, clip, memory=memory, **params)
    for k in range(2):
        tracker.add_mask(0, k + 1, clip.mask(0, k))
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    long_term = 0
    n = 0
    for _ in tracker.propagate():
        n += 1
        if memory == "divemem" and n > 1:
            long_term = max(long_term, len(tracker.attended_memory(1)["long_term"]))
    elapsed = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "frames": n,
        "memory": memory,
        "image_size": image_size,
        "peak_rss_mib": peak_kb / 1024,
        "rss_after_prompts_mib": rss_start / 1024,
        "ms_per_frame": 1000 * elapsed / max(n - 1, 1),
        "max_long_term": long_term,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[500, 5000])
    p.add_argument("--memory", nargs="+", default=["sam2", "divemem"])
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--config", default="sam2.1_hiera_t")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--divemem-iou-threshold",
        type=float,
        default=0.0,
        help="DiveMem candidate threshold; 0 makes every frame a candidate: its worst case for time "
        "(random weights rarely predict IoU > 0.95, the default of real use)",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(run_one(a.frames[0], a.memory[0], a.image_size, a.config, a.threads, a.divemem_iou_threshold)))
        return
    rows = []
    for memory in a.memory:
        for frames in a.frames:
            cmd = [sys.executable, __file__, "--child", "--frames", str(frames), "--memory", memory]
            cmd += ["--image-size", str(a.image_size), "--config", a.config, "--threads", str(a.threads)]
            cmd += ["--divemem-iou-threshold", str(a.divemem_iou_threshold)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    if a.json:
        print(json.dumps(rows))
        return
    base = {r["memory"]: r for r in rows if r["frames"] == min(a.frames)}
    ref_ms = {r["frames"]: r["ms_per_frame"] for r in rows if r["memory"] == "sam2"}
    print(
        f"{'memory':8} {'frames':>7} {'peak RSS MiB':>13} {'vs shortest':>12} {'ms/frame':>9} {'vs sam2':>8} {'long-term':>9}"
    )
    for r in rows:
        growth = r["peak_rss_mib"] / base[r["memory"]]["peak_rss_mib"] - 1
        rel = f"{r['ms_per_frame'] / ref_ms[r['frames']] - 1:+.1%}" if r["frames"] in ref_ms else "-"
        print(
            f"{r['memory']:8} {r['frames']:7d} {r['peak_rss_mib']:13.1f} {growth:+12.1%} {r['ms_per_frame']:9.1f} {rel:>8}"
            f" {r['max_long_term']:>9d}"
        )


if __name__ == "__main__":
    main()
