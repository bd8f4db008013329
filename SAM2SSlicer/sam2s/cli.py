"""The ``sam2s`` command line: track, eval, models, download, demo.

``sam2s track`` runs the very same headless Slicer logic as the Slicer module (``SAM2SSlicerLib``,
on a ``slicer-core`` MRML scene) and writes the same files. Exit codes: 0 success, 1 runtime
failure, 2 bad input (unreadable video, invalid prompts file, unknown model, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import checkpoints
from .config import CONFIGS

ROOT = Path(__file__).resolve().parents[2]
DEMO_DATA = ROOT.parent / "shared" / "data" / "endoscapes_v4"


class CliError(Exception):
    """A user error: printed without a traceback, exit code 2."""


# ----------------------------------------------------------------------------------- helpers
def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _atomic_target(path: Path) -> Path:
    """A temporary sibling of ``path`` to write to before ``os.replace`` (same file system)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.partial-", suffix="".join(path.suffixes), dir=path.parent)
    os.close(fd)
    os.remove(tmp)
    return Path(tmp)


def choose_engine(engine: str | None, model: str, checkpoint: str | None) -> tuple[str, str | None]:
    """``(engine, checkpoint path or None)``: ``sam2`` when a checkpoint is given or cached for
    ``model``, else ``flow`` (announced on stderr). An explicit ``--engine sam2`` without any
    checkpoint is an error."""
    if engine == "flow":
        return "flow", None
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise CliError(f"--checkpoint {checkpoint}: no such file.")
        return "sam2", str(path)
    try:
        return "sam2", str(checkpoints.resolve_checkpoint(model, allow_download=False))
    except FileNotFoundError:
        if engine == "sam2":
            raise CliError(
                f"No checkpoint for {model}: pass --checkpoint PATH or run `sam2s download {model}` first."
            ) from None
    _say(
        f"No SAM 2 checkpoint for {model} (pass --checkpoint or run `sam2s download {model}`): "
        "falling back to the weight-free 'flow' engine (optical flow + GrabCut), which is less accurate."
    )
    return "flow", None


def _summary(logic, segment_ids: dict[int, str], names: dict[int, str]) -> list[dict]:
    rows = []
    for obj_id, sid in segment_ids.items():
        mask = logic.segmentMask(sid)
        areas = mask.reshape(mask.shape[0], -1).sum(axis=1)
        present = areas > 0
        rows.append(
            {
                "id": obj_id,
                "name": names[obj_id],
                "frames_present": int(present.sum()),
                "frames": int(mask.shape[0]),
                "mean_area_px": float(areas[present].mean()) if present.any() else 0.0,
            }
        )
    return rows


def run_tracking(
    video: str | Path,
    prompts_path: str | Path,
    output: str | Path,
    png_dir: str | Path | None = None,
    overlay: str | Path | None = None,
    model: str = "sam2.1_hiera_t",
    checkpoint: str | None = None,
    engine: str | None = None,
    memory: str = "sam2",
    image_size: int = 1024,
    device: str = "cpu",
    start: int | None = None,
    end: int | None = None,
    progress: bool = True,
    model_object=None,
) -> dict:
    """Track the objects of a prompts file through a video with the headless Slicer logic and
    write ``output`` (.seg.nrrd), optionally label PNGs and an overlay video (all atomically).

    Args:
        video: video file or image folder. prompts_path: prompts JSON (see README).
        start, end: inclusive frame range (default: whole video); tracking runs forward and backward
            from the earliest prompted frame.
        model_object: an already built ``sam2s`` model to use instead of building one (tests).

    Returns:
        ``{"engine": ..., "objects": [per-object summary], "frames": T, "outputs": {...}}``.

    Raises:
        CliError: bad input (video, prompts, range, model). Other exceptions: runtime failures.
    """
    from tqdm import tqdm

    from .frames import FrameSourceError, open_frames
    from .prompts import PromptsFileError, load_prompts

    output = Path(output)
    if not output.name.endswith(".seg.nrrd"):
        raise CliError(f"--output {output}: the file name must end in .seg.nrrd.")
    try:
        source = open_frames(video)
    except (FrameSourceError, FileNotFoundError, ValueError, TypeError) as err:
        raise CliError(f"Cannot read video {video}: {err}") from None
    num_frames, size = len(source), (source.height, source.width)
    try:
        objects = load_prompts(prompts_path, num_frames=num_frames, frame_size=size)
    except (PromptsFileError, FileNotFoundError) as err:
        raise CliError(str(err)) from None
    first = 0 if start is None else start
    last = num_frames - 1 if end is None else end
    if not 0 <= first <= last < num_frames:
        raise CliError(f"--start/--end {first}..{last} must lie within the video's frames 0..{num_frames - 1}.")
    if model not in CONFIGS:
        raise CliError(f"Unknown --model {model!r}; choose one of {', '.join(CONFIGS)}.")
    if model_object is not None:
        engine_name = "sam2"
    else:
        engine_name, checkpoint = choose_engine(engine, model, checkpoint)

    from SAM2SSlicerLib.headless import createTrackingLogic
    from SAM2SSlicerLib.settings import ModelSettings

    logic = createTrackingLogic()
    logic.importVideo(str(video))
    logic.createSegmentation(Path(str(video)).stem + " masklets")
    segment_ids: dict[int, str] = {}
    for obj in objects:
        sid = logic.addSegment(obj.name, obj.color, objectId=obj.id)
        segment_ids[obj.id] = sid
        for p in obj.prompts:
            if p.mask is not None:
                logic.setMaskPrompt(sid, p.frame, p.mask)
            if p.box is not None:
                logic.setBoxPrompt(sid, p.frame, [float(v) for v in p.box])
            if p.points is not None:
                for (x, y), label in zip(p.points, p.labels):
                    logic.addPointPrompt(sid, p.frame, float(x), float(y), positive=bool(label))
    settings = ModelSettings(
        configName=model,
        checkpoint=checkpoint or "",
        device=device,
        imageSize=image_size,
        memory=memory,
        engine=engine_name,
    )
    try:
        logic.setModelSettings(settings)
    except ValueError as err:
        raise CliError(str(err)) from None
    if model_object is not None:
        logic.setModel(model_object)
    bar = tqdm(total=last - first + 1, desc=f"tracking ({engine_name})", unit="frame", disable=not progress)

    def on_progress(done: int, total: int, frame: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        logic.track(
            list(segment_ids.values()), firstFrame=first, lastFrame=last, direction="both", progressCallback=on_progress
        )
    finally:
        bar.close()

    outputs = {"segmentation": str(output)}
    tmp = _atomic_target(output)
    try:
        logic.exportSegmentation(str(tmp))
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    if png_dir is not None:
        png_dir = Path(png_dir)
        tmp_dir = _atomic_target(png_dir)
        try:
            logic.exportLabelPngs(str(tmp_dir))
            if png_dir.exists():
                shutil.rmtree(png_dir)
            os.replace(tmp_dir, png_dir)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        outputs["png_dir"] = str(png_dir)
    if overlay is not None:
        from .visualize import overlay as blend
        from .visualize import write_video

        labels = _labels(logic, segment_ids)
        colors = {o.id: o.color for o in objects if o.color}
        write_video(overlay, (blend(source.get(t), labels[t], colors) for t in range(num_frames)), fps=source.fps or 10)
        outputs["overlay"] = str(overlay)
    names = {o.id: o.name for o in objects}
    return {
        "engine": engine_name,
        "frames": num_frames,
        "objects": _summary(logic, segment_ids, names),
        "outputs": outputs,
        "logic": logic,
    }


def _labels(logic, segment_ids: dict[int, str]) -> np.ndarray:
    """``(T, H, W)`` uint8 label volume from the segments (label = object id; later ids on top)."""
    labels = None
    for obj_id, sid in segment_ids.items():
        mask = logic.segmentMask(sid).astype(bool)
        if labels is None:
            labels = np.zeros(mask.shape, np.uint8)
        labels[mask] = obj_id
    return labels


def _print_summary(result: dict) -> None:
    print(f"engine: {result['engine']}, {result['frames']} frames")
    print(f"{'id':>3}  {'name':24} {'frames present':>15} {'mean area (px)':>15}")
    for r in result["objects"]:
        print(
            f"{r['id']:>3}  {r['name'][:24]:24} {r['frames_present']:>9} / {r['frames']:<4} {r['mean_area_px']:>15.0f}"
        )
    for what, path in result["outputs"].items():
        print(f"{what}: {path}")


# ---------------------------------------------------------------------------------- commands
def cmd_track(a: argparse.Namespace) -> int:
    result = run_tracking(
        a.video,
        a.prompts,
        a.output,
        a.png_dir,
        a.overlay,
        a.model,
        a.checkpoint,
        a.engine,
        a.memory,
        a.image_size,
        a.device,
        a.start,
        a.end,
        progress=not a.quiet,
    )
    _print_summary(result)
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from .metrics import evaluate

    try:
        res = evaluate(a.pred_dir, a.gt_dir, exclude=a.exclude or ())
    except (FileNotFoundError, ValueError) as err:
        raise CliError(str(err)) from None
    if a.json:
        print(json.dumps(res, indent=1, default=float))
        return 0
    print(f"{'object':>6} {'J':>7} {'F':>7} {'J&F':>7}")
    for obj_id, r in res["objects"].items():
        print(f"{obj_id:>6} {r['J']:7.3f} {r['F']:7.3f} {r['J&F']:7.3f}")
    print(f"{'mean':>6} {res['J']:7.3f} {res['F']:7.3f} {res['J&F']:7.3f}  ({len(res['frames'])} annotated frames)")
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    print(f"cache: {checkpoints.cache_dir()}")
    print(f"{'name':16} {'file':28} {'size':>8}  cached")
    for info, path in checkpoints.cache_status():
        size = f"{info.size_bytes / 1e6:.0f} MB" if info.size_bytes else "?"
        print(f"{info.name:16} {info.filename:28} {size:>8}  {path or '-'}")
    return 0


def cmd_download(a: argparse.Namespace) -> int:
    try:
        info = checkpoints.get_info(a.name)
    except ValueError as err:
        raise CliError(str(err)) from None
    path = checkpoints.download(info, cache_dir=a.cache_dir)
    print(path)
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(a.output_dir), model=a.model, image_size=a.image_size, engine=a.engine, device=a.device)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sam2s", description="Track objects in surgical video with SAM 2 / SAM2S.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("track", help="track the objects of a prompts file through a video")
    t.add_argument("video", help="video file (mp4/avi/mov/mkv) or image folder")
    t.add_argument("--prompts", required=True, help="prompts JSON (see README)")
    t.add_argument("--output", required=True, help="output .seg.nrrd")
    t.add_argument("--png-dir", help="also write per-frame label PNGs (DAVIS style) here")
    t.add_argument("--overlay", help="also write an overlay video (.mp4) here")
    t.add_argument("--model", default="sam2.1_hiera_t", help="model config (default %(default)s)")
    t.add_argument("--checkpoint", help="local SAM 2 / 2.1 checkpoint (.pt)")
    t.add_argument("--engine", choices=["sam2", "flow"], help="default: sam2 when a checkpoint is available, else flow")
    t.add_argument("--memory", choices=["sam2", "divemem"], default="sam2")
    t.add_argument("--image-size", type=int, default=1024, help="model input size, multiple of 32")
    t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    t.add_argument("--start", type=int, help="first frame to track (default 0)")
    t.add_argument("--end", type=int, help="last frame to track (default: the last)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_track)

    e = sub.add_parser("eval", help="DAVIS 2017 J&F of predicted label PNGs against ground truth")
    e.add_argument("pred_dir")
    e.add_argument("gt_dir")
    e.add_argument("--exclude", nargs="*", help="frames not to evaluate (e.g. the prompted frame 0)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)

    m = sub.add_parser("models", help="list the checkpoints and whether they are cached")
    m.set_defaults(func=cmd_models)

    d = sub.add_parser("download", help="download a checkpoint into the cache (SHA-256 verified)")
    d.add_argument("name", help="model config name, e.g. sam2.1_hiera_t")
    d.add_argument("--cache-dir", help="default $SAM2S_CACHE_DIR or the platform cache")
    d.set_defaults(func=cmd_download)

    demo = sub.add_parser("demo", help="track the demo clip and write all outputs")
    demo.add_argument("--output-dir", default="demo_output")
    demo.add_argument("--model", default="sam2.1_hiera_t")
    demo.add_argument("--image-size", type=int, default=512)
    demo.add_argument("--engine", choices=["sam2", "flow"])
    demo.add_argument("--device", default="cpu")
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sam2s`` console script. Returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as err:
        _say(f"error: {err}")
        return 2
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
