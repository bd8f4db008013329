"""Speed of memory attention with and without the per-memory-frame key / value cache.

Two sessions on one model and one clip, one with ``VideoTracker.memory_kv_cache`` (default) and
one without (``None``: every frame's memory projections recomputed, as the reference does), are
advanced one frame at a time in turn (interleaved, so that the load of a shared machine hits both
alike). Prints per-frame wall time, the time spent in memory attention, and its share::

    python benchmarks/bench_memory_kv_cache.py --image-size 512 --frames 10

Weights are random (speed does not depend on them) unless ``--checkpoint`` is given.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SAM2SSlicer"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="sam2.1_hiera_t")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--frames-dir", default=None, help="folder of frames (default: a synthetic clip)")
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=2, help="tracked frames left out of the statistics")
    args = ap.parse_args()

    import numpy as np
    import sam2s
    import torch
    from sam2s.modeling.memory_attention import MemoryAttention
    from SAM2SSlicerLib.synthetic import SyntheticClip

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = sam2s.build_model(args.config, checkpoint=args.checkpoint, image_size=args.image_size)
    if args.checkpoint is None:
        with torch.no_grad():
            model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(2.0)
    synth = SyntheticClip(args.frames + 1, 240, 320, num_objects=args.objects, seed=1)
    if args.frames_dir:
        files = sorted(Path(args.frames_dir).iterdir())[: args.frames + 1]
        from PIL import Image

        clip = np.stack([np.asarray(Image.open(f).convert("RGB").resize((320, 240))) for f in files])
    else:
        clip = synth

    spent = {"t": 0.0}
    for name in ("forward", "forward_bank"):
        orig = getattr(MemoryAttention, name)

        def timed(self, *a, _orig=orig, **k):
            t0 = time.perf_counter()
            try:
                return _orig(self, *a, **k)
            finally:
                spent["t"] += time.perf_counter() - t0

        setattr(MemoryAttention, name, timed)

    sessions, gens = {}, {}
    for cached in (False, True):
        tr = sam2s.VideoTracker(model, clip)
        if not cached:
            tr.memory_kv_cache = None
        for k in range(args.objects):
            tr.add_mask(0, k + 1, synth.mask(0, k))
        sessions[cached], gens[cached] = tr, tr.propagate()
    rows = {False: [], True: []}
    outs = {False: [], True: []}
    for _ in range(args.frames + 1):
        for cached in (False, True):  # interleaved
            spent["t"] = 0.0
            t0 = time.perf_counter()
            _, _, logits = next(gens[cached])
            rows[cached].append((time.perf_counter() - t0, spent["t"]))
            outs[cached].append(logits)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(outs[False], outs[True]))
    print(
        f"{args.config} {args.image_size}px, {args.objects} objects, {args.frames} tracked frames, threads={torch.get_num_threads()}"
    )
    for cached in (False, True):
        r = rows[cached][1 + args.warmup :]  # frame 0 is the prompt's result
        tot = statistics.median(x for x, _ in r)
        att = statistics.median(y for _, y in r)
        share = sum(y for _, y in r) / sum(x for x, _ in r)
        label = "cache on " if cached else "cache off"
        print(f"{label}: frame {tot * 1e3:7.0f} ms (median), memory attention {att * 1e3:6.0f} ms, share {share:.0%}")
    on, off = rows[True][1 + args.warmup :], rows[False][1 + args.warmup :]
    print(
        f"speed-up per frame {sum(x for x, _ in off) / sum(x for x, _ in on):.2f}x, "
        f"memory attention {sum(y for _, y in off) / sum(y for _, y in on):.2f}x; "
        f"max |logit diff| {diff:.2e}; cache {len(sessions[True].memory_kv_cache)} frames, "
        f"{sessions[True].memory_kv_cache.nbytes / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    main()
