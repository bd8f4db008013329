"""Peak memory of streaming ``sam2s track`` against video length (500 vs 5,000 frames of 854x480).

Writes a synthetic clip (``SAM2SSlicerLib.synthetic.SyntheticClip``, 2 objects) once per length as
H.264 mp4 with PyAV into a temporary folder, with a mask prompt per object on frame 0, then runs
the real command line (``python -m sam2sapp track ...``, a fresh process each run) and
takes each run's peak RSS from ``os.wait4`` (``ru_maxrss`` of that child alone):

* ``--png-dir`` with the flow engine and with SAM 2 (``sam2.1_hiera_t`` with random weights saved
  as a checkpoint, ``--image-size 256``), for every length;
* ``--output X.seg.nrrd`` (flow engine) for the longest length, read back with ``slicerio``.

Prints a table (engine, frames, outputs, peak RSS MiB, seconds) and the RSS ratio longest /
shortest per engine; streaming keeps it near 1 (the check: within 10 %; the .seg.nrrd run under
1 GiB). ``--json`` prints the rows as JSON instead.

    python benchmarks/bench_stream_memory.py --frames 500 5000 [--engines flow sam2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SAM2SSlicer"))
sys.path.insert(0, str(ROOT / "Testing" / "Python"))

WIDTH, HEIGHT, OBJECTS = 854, 480, 2


def write_clip(folder: Path, frames: int) -> tuple[Path, Path]:
    """``folder/video.mp4`` (``frames`` synthetic frames) and ``folder/prompts.json`` (mask prompts on frame 0)."""
    import av
    import numpy as np
    from PIL import Image
    from SAM2SSlicerLib.synthetic import SyntheticClip

    folder.mkdir(parents=True, exist_ok=True)
    clip = SyntheticClip(frames, HEIGHT, WIDTH, OBJECTS, seed=0)
    video = folder / "video.mp4"
    with av.open(str(video), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for t in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(clip.get(t), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    objects = []
    for k in range(OBJECTS):
        Image.fromarray(clip.mask(0, k).astype(np.uint8) * 255).save(folder / f"mask{k + 1}.png")
        objects.append({"id": k + 1, "name": f"object {k + 1}", "prompts": [{"frame": 0, "mask": f"mask{k + 1}.png"}]})
    prompts = folder / "prompts.json"
    prompts.write_text(json.dumps({"objects": objects}))
    return video, prompts


def run_track(args: list[str]) -> tuple[float, float]:
    """Run ``sam2s track ARGS`` in a fresh process; ``(peak RSS MiB, seconds)``. Raises on failure."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "SAM2SSlicer"), os.environ.get("PYTHONPATH", "")]))
    begin = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "sam2sapp", "track", *args, "--quiet"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage (RUSAGE_CHILDREN sums all)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - begin
        if process.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"sam2s track {' '.join(args)} failed:\n{log.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[500, 5000])
    p.add_argument("--engines", nargs="+", choices=["flow", "sam2"], default=["flow", "sam2"])
    p.add_argument("--no-seg", action="store_true", help="skip the .seg.nrrd run")
    p.add_argument("--json", action="store_true")
    p.add_argument("--workdir", help="keep the clips and outputs here (default: a temporary folder)")
    a = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-stream-", dir=a.workdir) as tmp:
        tmp = Path(tmp)
        checkpoint = tmp / "random_tiny.pt"
        if "sam2" in a.engines:
            import torch
            from randomweights import random_model

            torch.save({"model": random_model("sam2.1_hiera_t", 256).state_dict()}, checkpoint)
        rows = []
        for frames in a.frames:
            video, prompts = write_clip(tmp / f"clip{frames}", frames)
            for engine in a.engines:
                extra = ["--engine", "flow"] if engine == "flow" else []
                if engine == "sam2":
                    extra = ["--engine", "sam2", "--checkpoint", str(checkpoint), "--image-size", "256"]
                png = tmp / f"png-{engine}-{frames}"
                rss, seconds = run_track([str(video), "--prompts", str(prompts), "--png-dir", str(png), *extra])
                assert len(list(png.glob("*.png"))) == frames
                rows.append({"engine": engine, "frames": frames, "outputs": "png", "rss_mib": rss, "seconds": seconds})
            if frames == max(a.frames) and not a.no_seg:
                import slicerio

                seg = tmp / f"out-{frames}.seg.nrrd"
                rss, seconds = run_track(
                    [str(video), "--prompts", str(prompts), "--output", str(seg), "--engine", "flow"]
                )
                data = slicerio.read_segmentation(str(seg))
                shape = tuple(data["voxels"].shape)
                names = [s["name"] for s in data["segments"]]
                del data
                leftovers = [n for n in os.listdir(seg.parent) if ".partial" in n]
                rows.append(
                    {
                        "engine": "flow",
                        "frames": frames,
                        "outputs": "seg.nrrd",
                        "rss_mib": rss,
                        "seconds": seconds,
                        "shape": shape,
                        "segments": names,
                        "temporaries_left": leftovers,
                    }
                )
    ratios = {}
    short, long = min(a.frames), max(a.frames)
    for engine in a.engines:
        by = {r["frames"]: r["rss_mib"] for r in rows if r["engine"] == engine and r["outputs"] == "png"}
        if short != long and short in by and long in by:
            ratios[engine] = by[long] / by[short]
    if a.json:
        print(json.dumps({"rows": rows, "rss_ratio": ratios}, indent=1, default=list))
        return 0
    print(f"{'engine':8} {'frames':>7} {'outputs':10} {'peak RSS MiB':>13} {'seconds':>9}")
    for r in rows:
        print(f"{r['engine']:8} {r['frames']:>7} {r['outputs']:10} {r['rss_mib']:>13.0f} {r['seconds']:>9.1f}")
        if "shape" in r:
            print(f"{'':8} read back with slicerio: voxels {r['shape']}, segments {r['segments']}")
    for engine, ratio in ratios.items():
        verdict = "ok" if abs(ratio - 1) <= 0.10 else "OVER 10 %"
        print(f"RSS ratio {long}/{short} ({engine}): {ratio:.3f} ({verdict})")
    for r in rows:
        if r["outputs"] == "seg.nrrd":
            print(f".seg.nrrd run: {r['rss_mib']:.0f} MiB ({'under' if r['rss_mib'] < 1024 else 'OVER'} 1 GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
