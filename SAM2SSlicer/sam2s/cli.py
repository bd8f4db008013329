"""The ``sam2s`` command line: track, eval, models, download, demo.

``sam2s track`` runs the very same headless Slicer logic as the Slicer module (``SAM2SSlicerLib``,
on a ``slicer-core`` MRML scene) and writes the same files.

Exit codes: 0 success; 2 bad input, found before any long work (video, prompts, model,
checkpoint, device, output paths, not enough memory); 1 a failure after the work started, e.g.
a full disk while writing (outputs written completely are kept, the others keep their old
content); 130 interrupted (Ctrl+C or SIGTERM). Outputs never replace an input or an existing
file or folder without ``--overwrite``, and are written to temporary names first
(``SAM2SSlicerLib.outputs``), so nothing the user had is deleted or half-overwritten.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import checkpoints
from .config import CONFIGS

ROOT = Path(__file__).resolve().parents[2]
DEMO_DATA = ROOT.parent / "shared" / "data" / "endoscapes_v4"

LABEL_PNGS = "label PNGs (00000.png, 00001.png ...)"
"""What ``--png-dir`` holds: ``{frame:05d}.png`` (``SAM2SSlicerLib.export.labelPngPattern()``); with
``--overwrite`` only files of that pattern are replaced in an existing folder."""
OVERLAY_SUFFIXES = (".mp4", ".mkv", ".mov")
"""Containers the overlay video (H.264) can be written to."""


class CliError(Exception):
    """A user error: printed without a traceback, exit code 2."""


# ----------------------------------------------------------------------------------- helpers
def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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


def _check_model_options(model: str, image_size: int, device: str) -> None:
    """Model name, image size and device string, before anything is read (CliError)."""
    import torch

    from .config import get_config

    if model not in CONFIGS:
        raise CliError(f"Unknown --model {model!r}; choose one of {', '.join(CONFIGS)}.")
    try:
        get_config(model, image_size)
    except ValueError as err:
        raise CliError(f"--image-size {image_size}: {err}") from None
    try:
        torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise CliError(f"Unknown --device {device!r}; use cpu, cuda, cuda:N or mps.") from None


def _build_model(model: str, checkpoint: str, device: str, image_size: int):
    """The SAM 2 model, or CliError for a checkpoint of another config, a truncated or unsafe
    file, or a device this machine does not have."""
    from .build import build_model
    from .checkpoints import CheckpointError

    try:
        return build_model(model, checkpoint=checkpoint, device=device, image_size=image_size)
    except (CheckpointError, FileNotFoundError, ValueError, RuntimeError) as err:
        raise CliError(str(err)) from None


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
    overwrite: bool = False,
) -> dict:
    """Track the objects of a prompts file through a video with the headless Slicer logic and
    write ``output`` (.seg.nrrd), optionally label PNGs and an overlay video.

    Everything is checked before the long work, in this order: model options, the video's
    header, the prompts file, the output paths (``SAM2SSlicerLib.outputs.OutputSet``), the
    checkpoint and device (the model is built), the memory the video needs. Then the video is
    imported, tracked and the outputs are written, each atomically.

    Args:
        video: video file or image folder. prompts_path: prompts JSON (see README).
        output: the ``.seg.nrrd`` to write. png_dir: a folder for label PNGs (``00000.png`` ...).
        overlay: an overlay video (``.mp4``, ``.mkv`` or ``.mov``).
        start, end: inclusive frame range (default: whole video); tracking runs forward and backward
            from the earliest prompted frame.
        model_object: an already built ``sam2s`` model to use instead of building one (tests).
        overwrite: replace existing output files, and the label PNGs of an existing ``png_dir``
            (other files there stay). Without it existing outputs are refused.

    Returns:
        ``{"engine": ..., "objects": [per-object summary], "frames": T, "outputs": {...}, "logic": logic}``.

    Raises:
        CliError: bad input (video, prompts, range, model, checkpoint, device, output paths, memory).
        SAM2SSlicerLib.outputs.OutputWriteError: an output could not be written (e.g. disk full);
            ``.written`` lists the outputs written completely.
        Other exceptions: runtime failures.
    """
    from SAM2SSlicerLib.export import labelPngPattern
    from SAM2SSlicerLib.outputs import OutputError, OutputSet, OutputWriteError, atomicFile

    from .frames import FrameSourceError, open_frames
    from .prompts import PromptsFileError, load_prompts

    _check_model_options(model, image_size, device)
    try:
        source = open_frames(video)
    except (FrameSourceError, FileNotFoundError, ValueError, TypeError, OSError) as err:
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

    if overlay is not None and min(size) < 2:
        raise CliError(f"--overlay: the frames are {size[1]}x{size[0]} pixels; an H.264 video needs at least 2x2.")
    masks = [p.mask_path for o in objects for p in o.prompts if p.mask_path is not None]
    outputs = OutputSet([video, prompts_path, *masks], overwrite=overwrite)
    seg_path = outputs.addFile(output, "--output", (".seg.nrrd",))
    png_path = None if png_dir is None else outputs.addFolder(png_dir, "--png-dir", labelPngPattern(), LABEL_PNGS)
    overlay_path = None if overlay is None else outputs.addFile(overlay, "--overlay", OVERLAY_SUFFIXES)
    try:
        for note in outputs.check():
            _say(f"note: {note}")
    except OutputError as err:
        raise CliError(str(err)) from None

    if model_object is not None:
        engine_name = "sam2"
    else:
        engine_name, checkpoint = choose_engine(engine, model, checkpoint)
        if engine_name == "sam2":
            model_object = _build_model(model, checkpoint, device, image_size)
        elif device != "cpu":
            _say(f"note: --device {device} is not used by the flow engine (it runs on the CPU).")

    from SAM2SSlicerLib import export
    from SAM2SSlicerLib.headless import createTrackingLogic
    from SAM2SSlicerLib.settings import ModelSettings
    from SAM2SSlicerLib.videoimport import NotEnoughMemoryError

    logic = createTrackingLogic()
    try:
        logic.importVideo(str(video), labelmaps=len(objects) + 2)
    except NotEnoughMemoryError as err:
        raise CliError(
            f"{err} On the command line, shorten or downscale the video first, e.g. "
            "`ffmpeg -i IN.mp4 -vf scale=854:-2 OUT.mp4` (then give the prompts in the new pixels)."
        ) from None
    except (FrameSourceError, ValueError, OSError) as err:
        raise CliError(f"Cannot read video {video}: {err}") from None
    from .visualize import color_for

    logic.createSegmentation(Path(str(video)).stem + " masklets")
    segment_ids: dict[int, str] = {}
    # One colour per object in every output: the prompts file's, else the overlay palette's.
    colors = {o.id: o.color or tuple(c / 255 for c in color_for(o.id)) for o in objects}
    for obj in objects:
        sid = logic.addSegment(obj.name, colors[obj.id], objectId=obj.id)
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
    _track(logic, list(segment_ids.values()), first, last, engine_name, progress)

    written: dict[str, str] = {}

    def write(what: str, path: Path, writer) -> None:
        try:
            writer()
        except OSError as err:
            raise OutputWriteError(path, err, [Path(p) for p in written.values()]) from err
        written[what] = str(path)

    write("segmentation", seg_path, lambda: logic.exportSegmentation(str(seg_path)))
    if png_path is not None:
        write("png_dir", png_path, lambda: logic.exportLabelPngs(str(png_path), overwrite=overwrite))
    if overlay_path is not None:
        from .visualize import overlay as blend
        from .visualize import write_video

        def write_overlay() -> None:
            labels = export.labelFrames(logic.segmentationNode, logic.videoNode, list(segment_ids.values()))
            with atomicFile(overlay_path) as tmp:
                write_video(tmp, (blend(source.get(t), labels[t], colors) for t in range(num_frames)), source.fps or 10)

        write("overlay", overlay_path, write_overlay)
    names = {o.id: o.name for o in objects}
    return {
        "engine": engine_name,
        "frames": num_frames,
        "objects": _summary(logic, segment_ids, names),
        "outputs": written,
        "logic": logic,
    }


def _track(logic, segment_ids: list[str], first: int, last: int, engine_name: str, progress: bool) -> None:
    """Track forward and backward from the earliest prompted frame with a progress bar; a prompt
    the engine refuses before tracking (e.g. the flow engine with no mask to start from) is a CliError."""
    from SAM2SSlicerLib.prompts import PromptError as StorePromptError
    from tqdm import tqdm

    from .tracker import PromptError

    bar = tqdm(total=last - first + 1, desc=f"tracking ({engine_name})", unit="frame", disable=not progress)

    def on_progress(done: int, total: int, frame: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        logic.track(segment_ids, firstFrame=first, lastFrame=last, direction="both", progressCallback=on_progress)
    except (PromptError, StorePromptError) as err:
        raise CliError(str(err)) from None
    finally:
        bar.close()


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
        overwrite=a.overwrite,
    )
    _print_summary(result)
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from .metrics import evaluate

    try:
        res = evaluate(a.pred_dir, a.gt_dir, exclude=a.exclude or ())
    except (FileNotFoundError, ValueError) as err:
        raise CliError(str(err)) from None
    frames, missing = res["frames"], res["missing"]
    if frames and len(missing) == len(frames):
        raise CliError(
            f"No prediction in {a.pred_dir} matches the {len(frames)} annotated frames of {a.gt_dir} "
            f"({_names(frames)}): predictions must be label PNGs named like the ground truth."
        )
    for obj_id, r in res["objects"].items():
        if r.get("missing"):
            _say(
                f"warning: object {obj_id}: no prediction file for {len(r['missing'])} of its annotated frames "
                f"({_names(r['missing'])}); they count as empty masks."
            )
    if a.json:
        print(json.dumps(res, indent=1, default=float))
        return 0
    print(f"{'object':>6} {'J':>7} {'F':>7} {'J&F':>7} {'missing':>8}")
    for obj_id, r in res["objects"].items():
        print(f"{obj_id:>6} {r['J']:7.3f} {r['F']:7.3f} {r['J&F']:7.3f} {len(r.get('missing', ())):>8}")
    print(f"{'mean':>6} {res['J']:7.3f} {res['F']:7.3f} {res['J&F']:7.3f}  ({len(frames)} annotated frames)")
    return 0


def _names(items: Sequence[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" ... ({len(items)} in all)" if len(items) > limit else "")


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
        path = checkpoints.download(info, cache_dir=a.cache_dir)
    except (ValueError, checkpoints.DownloadError, checkpoints.ChecksumError) as err:
        raise CliError(str(err)) from None
    except OSError as err:
        raise CliError(f"Cannot write the checkpoint into the cache folder ({err}); set --cache-dir.") from None
    print(path)
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(
        Path(a.output_dir),
        model=a.model,
        image_size=a.image_size,
        engine=a.engine,
        device=a.device,
        overwrite=a.overwrite,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sam2s", description="Track objects in surgical video with SAM 2 / SAM2S.")
    sub = p.add_subparsers(dest="command", required=True)
    overwrite_help = "replace existing outputs (in a label folder only its NNNNN.png files; other files stay)"

    t = sub.add_parser("track", help="track the objects of a prompts file through a video")
    t.add_argument("video", help="video file (mp4/avi/mov/mkv) or image folder")
    t.add_argument("--prompts", required=True, help="prompts JSON (see README)")
    t.add_argument("--output", required=True, help="output .seg.nrrd")
    t.add_argument("--png-dir", help="also write per-frame label PNGs (DAVIS style) into this new folder")
    t.add_argument("--overlay", help="also write an overlay video (.mp4, .mkv or .mov) here")
    t.add_argument("--overwrite", action="store_true", help=overwrite_help)
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
    e.add_argument("--exclude", nargs="*", help="frames not to evaluate, by number or file name (e.g. 0)")
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
    demo.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier demo there")
    demo.add_argument("--model", default="sam2.1_hiera_t")
    demo.add_argument("--image-size", type=int, default=512)
    demo.add_argument("--engine", choices=["sam2", "flow"])
    demo.add_argument("--device", default="cpu")
    demo.set_defaults(func=cmd_demo)
    return p


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM: unwind like Ctrl+C, so that temporary outputs are removed


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sam2s`` console script. Returns the exit code (see the module docstring)."""
    from SAM2SSlicerLib.outputs import OutputWriteError

    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except CliError as err:
        _say(f"error: {err}")
        return 2
    except OutputWriteError as err:
        kept = "; written completely: " + ", ".join(map(str, err.written)) if err.written else ""
        _say(f"error: {err.strerror}; it keeps its previous content{kept}.")
        return 1
    except KeyboardInterrupt:
        _say("interrupted: outputs not yet written keep their previous content; no partial file is left.")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
