"""The ``sam2s`` command line: track, batch, eval, models, download, demo.

``sam2s track`` streams the video through the tracker into one sink per output (``track``,
``streaming``), with the same tracking stream (``sam2s.Tracker.run``) and the same files as the
Slicer module.

Exit codes: 0 success; 2 bad input, found before any long work (video, prompts, model,
checkpoint, device, output paths, outputs another run is writing, not enough memory); 1 a failure
after the work started, e.g. a full disk while writing (outputs written completely are kept, the
others keep their old content), a tracking server that stopped answering, memory that ran out, or
a closed standard output (``sam2s models | head``: quietly); 130 interrupted (Ctrl+C or SIGTERM).
Each of these is one line ``error: ...`` on stderr, without a traceback. Outputs never replace an
input or an existing file or folder without ``--overwrite``, and are written to temporary names
first (``SAM2SSlicerLib.outputs``), so nothing the user had is deleted or half-overwritten.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from sam2s import checkpoints
from sam2s.modelspec import ModelSpec, add_model_arguments
from sam2s.serving.options import INSTALL_SERVER, add_server_arguments

from .track import (
    LABEL_PNGS,
    OVERLAY_SUFFIXES,
    CliError,
    TrackingFailed,
    TrackRequest,
    check_provenance,
    print_summary,
    run_tracking,
    say,
)

TRACK_MODEL = ModelSpec(device="cpu")
"""``sam2s track``'s model defaults (the CPU unless ``--device`` says otherwise)."""

__all__ = ["LABEL_PNGS", "OVERLAY_SUFFIXES", "CliError", "TrackingFailed", "build_parser", "main", "run_tracking"]


# ---------------------------------------------------------------------------------- commands
def cmd_track(a: argparse.Namespace) -> int:
    request = TrackRequest(
        a.video,
        a.prompts,
        output=a.output,
        png_dir=a.png_dir,
        overlay=a.overlay,
        coco=a.coco,
        stats=a.stats,
        contact_sheet=a.contact_sheet,
        model=ModelSpec.from_arguments(a, TRACK_MODEL),
        auto_engine=a.engine is None,
        start=a.start,
        end=a.end,
        overwrite=a.overwrite,
        server=a.server,
        token=_server_token(a),
        progress=not a.quiet,
    )
    if a.check_provenance:
        differences = check_provenance(request, a.check_provenance)
        for line in differences:
            print(line)
        if not differences:
            print(f"{a.check_provenance}: made from these prompts with this model")
        return 1 if differences else 0
    print_summary(run_tracking(request))
    return 0


def _server_token(a: argparse.Namespace) -> str | None:
    """``sam2s track``'s server token: ``--token-file``, else ``--token``, else ``$SAM2S_SERVER_TOKEN``."""
    from sam2s.serving.access import TokenFileError, server_token

    try:
        return server_token(a.token_file, a.token)
    except TokenFileError as err:
        raise CliError(str(err)) from None


def cmd_eval(a: argparse.Namespace) -> int:
    from .metrics import MetricsDependencyError, evaluate, import_monai, plot_per_frame

    if a.nsd_tolerance <= 0:
        raise CliError(f"--nsd-tolerance must be > 0 pixels, got {a.nsd_tolerance}.")
    try:
        import_monai()
        monai = True
    except MetricsDependencyError as err:
        monai = False
        say(f"note: {err}. Printing J and F only.")
    try:
        res = evaluate(a.pred_dir, a.gt_dir, exclude=a.exclude or (), monai=monai, nsd_tolerance=a.nsd_tolerance)
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
            say(
                f"warning: object {obj_id}: no prediction file for {len(r['missing'])} of its annotated frames "
                f"({_names(r['missing'])}); they count as empty masks."
            )
    if a.plot:
        try:
            say(f"wrote {plot_per_frame(res, a.plot)}")
        except MetricsDependencyError as err:
            raise CliError(str(err)) from None
        except OSError as err:
            raise CliError(f"--plot {a.plot}: {err}") from None
    if a.json:
        print(json.dumps(res, indent=1, default=float))
        return 0

    def num(x, width: int = 7, digits: int = 3) -> str:
        return f"{x:{width}.{digits}f}" if x is not None else f"{'-':>{width}}"

    extra = f" {'Dice':>7} {'HD95':>7} {'NSD':>7}" if monai else ""
    print(f"{'object':>6} {'J':>7} {'F':>7} {'J&F':>7}{extra} {'missing':>8}")
    for obj_id, r in res["objects"].items():
        extra = f" {num(r['Dice'])} {num(r['HD95'], digits=2)} {num(r['NSD'])}" if monai else ""
        print(f"{obj_id:>6} {r['J']:7.3f} {r['F']:7.3f} {r['J&F']:7.3f}{extra} {len(r.get('missing', ())):>8}")
    extra = f" {num(res['Dice'])} {num(res['HD95'], digits=2)} {num(res['NSD'])}" if monai else ""
    print(f"{'mean':>6} {res['J']:7.3f} {res['F']:7.3f} {res['J&F']:7.3f}{extra}  ({len(frames)} annotated frames)")
    if monai:
        print(
            f"Dice, HD95 (pixels) and NSD (tolerance {res['nsd_tolerance']:g} px) by MONAI, over the frames where "
            "the object or its prediction is present; HD95 where both are."
        )
    return 0


def _names(items: Sequence[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def cmd_models(a: argparse.Namespace) -> int:
    """``sam2s models``: the registry's checkpoints and whether they are cached, then each model
    config's published accuracy and its measured speed on this computer (``sam2s.modelcost``; with
    ``--measure`` the configs not measured yet at ``--image-size`` / ``--precision`` are timed
    first, a few seconds each)."""
    from sam2s import modelcost
    from sam2s.config import CONFIGS

    if a.measure:
        from sam2s import speedcheck

    print(f"cache: {checkpoints.cache_dir()}")
    print(f"{'name':20} {'file':26} {'size':>7} {'trained':>8}  {'licence':30} cached")
    for info, path in checkpoints.cache_status():
        size = f"{info.size_bytes / 1e6:.0f} MB" if info.size_bytes else "?"
        cached = path or ("- (bring your own file)" if info.bring_your_own else "-")
        print(f"{info.name:20} {info.filename:26} {size:>7} {info.image_size:>5} px  {info.licence:30} {cached}")
    precision = a.precision

    def size(config: str) -> int:  # --image-size, else the model's training size
        return ModelSpec(config=config, image_size=a.image_size).input_size

    if a.measure:
        for config in CONFIGS:
            if modelcost.measured_seconds(config, size(config), precision) is None:
                print(f"measuring {config} at {size(config)} px ({precision})...", flush=True)
                speedcheck.measure(config, size(config), precision)
    print(f"\n{'model':16} {'published accuracy':48} speed on this computer")
    for config in CONFIGS:
        print(
            f"{config:16} {modelcost.accuracy_text(config):48} {modelcost.cost_text(config, size(config), precision)}"
        )
    if not a.measure:
        print("(sam2s models --measure times the models not measured yet; tracking with a model measures it too)")
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


def cmd_serve(a: argparse.Namespace) -> int:
    """``sam2s serve``: the engine's tracking server (``sam2s.serving.server.run``, FastAPI + uvicorn; its
    options: ``sam2s.serving.options``); 0 after SIGTERM or Ctrl+C, 2 for a refused configuration."""
    try:
        from sam2s.serving.server import run
    except ImportError as err:
        raise CliError(f"The tracking server needs FastAPI and uvicorn ({err}): {INSTALL_SERVER}.") from None
    return run(a)


def cmd_batch(a: argparse.Namespace) -> int:
    """``sam2s batch MANIFEST``: many videos on Ray (``sam2sapp.batch``); 0 all done or skipped,
    1 some failed, 2 bad manifest, options or --report path, or no Ray."""
    from .batch import OPTIONS, run_batch

    return run_batch(
        a.manifest,
        {k: getattr(a, "config" if k == "model" else k) for k in OPTIONS},  # None: the cell, else DEFAULTS
        address=a.address,
        num_cpus=a.num_cpus,
        cpus_per_task=a.cpus_per_task,
        retries=a.retries,
        report=a.report,
        progress=not a.quiet,
        overwrite=a.overwrite,
    )


def cmd_web(a: argparse.Namespace) -> int:
    try:
        from .web import app as web_app
    except ImportError as err:
        from sam2s.extras import install_hint

        hint = install_hint("web", '"trame-slicer[standalone]==2.0.0" "slicer-core>=5.11.0.6,<5.12"')
        raise CliError(f"`sam2s web` needs the web extra: {hint} ({err}).") from None
    try:
        return web_app.run(a)
    except ValueError as err:
        raise CliError(str(err)) from None


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(
        Path(a.output_dir),
        data=Path(a.data) if a.data else None,
        model=a.model,
        image_size=a.image_size,
        engine=a.engine,
        device=a.device,
        overwrite=a.overwrite,
    )


OVERWRITE_HELP = "replace existing outputs (in a label folder only its NNNNN.png files; other files stay)"


def build_parser() -> argparse.ArgumentParser:
    """The ``sam2s`` parser: one subcommand each (``args.func`` runs it with the parsed arguments)."""
    p = argparse.ArgumentParser(prog="sam2s", description="Track objects in surgical video with SAM 2 / SAM2S.")
    sub = p.add_subparsers(dest="command", required=True)
    _add_track_parser(sub)
    _add_batch_parser(sub)
    _add_eval_parser(sub)
    models = sub.add_parser("models", help="list the checkpoints, the models' accuracy and their speed here")
    models.add_argument("--measure", action="store_true", help="time the models not measured yet (seconds each)")
    models.add_argument(
        "--image-size", type=int, help="image size of the speed shown (default: each model's training size)"
    )
    models.add_argument("--precision", default="auto", help="precision of the speed shown (default auto)")
    models.set_defaults(func=cmd_models)
    d = sub.add_parser("download", help="download a checkpoint into the cache (SHA-256 verified)")
    d.add_argument("name", help="model config name, e.g. sam2.1_hiera_t")
    d.add_argument("--cache-dir", help="default $SAM2S_CACHE_DIR or the platform cache")
    d.set_defaults(func=cmd_download)
    serve = sub.add_parser(
        "serve",
        help="run a tracking server (FastAPI) for the Slicer module or remote clients; see `sam2s serve --help`",
    )
    add_server_arguments(serve)  # the options of python -m sam2s.serving.server, defined once (no FastAPI needed)
    serve.set_defaults(func=cmd_serve)
    web = sub.add_parser("web", help='the tracker in a web browser (trame-slicer; pip install -e ".[web]")')
    _add_web_arguments(web)
    web.set_defaults(func=cmd_web)
    _add_demo_parser(sub)
    return p


def _add_track_parser(sub) -> None:
    """``sam2s track``: the video, the prompts, the outputs, the model (``add_model_arguments``), the server."""
    t = sub.add_parser("track", help="track the objects of a prompts file through a video")
    t.add_argument(
        "video",
        help='video file (mp4/avi/mov/mkv), DICOM video or multi-frame file (pip install -e ".[dicom]") or image folder',
    )
    t.add_argument("--prompts", required=True, help="prompts JSON (see README)")
    t.add_argument(
        "--output",
        help="write the masks as a Slicer .seg.nrrd (at least one of --output, --png-dir, --overlay, --coco)",
    )
    t.add_argument("--png-dir", help="also write per-frame label PNGs (DAVIS style) into this new folder")
    t.add_argument("--overlay", help="also write an overlay video (.mp4, .mkv or .mov) here")
    t.add_argument(
        "--coco",
        help="also write a COCO instance .json (RLE per object and frame, track_id = object id; "
        'needs pip install -e ".[coco]")',
    )
    t.add_argument(
        "--stats",
        metavar="DIR",
        help="also write masklet statistics into this folder: stats.csv (area, centroid, bbox, predicted IoU and "
        'object score per frame and object), review.csv, area.png, presence.png (needs pip install -e ".[plots]")',
    )
    t.add_argument(
        "--contact-sheet", metavar="OUT.png", help="also write a PNG of 12 frames spread over the video with the masks"
    )
    t.add_argument(
        "--check-provenance",
        metavar="OUT",
        help="track nothing: say whether OUT (.seg.nrrd, COCO .json, label or stats folder, batch result.json) was "
        "made from --prompts with this model (checkpoint and prompts by SHA-256); exit 0 if so, else 1",
    )
    t.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    add_model_arguments(t, TRACK_MODEL)  # sam2s.spec: one definition of the model options
    _add_frame_range(t)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--server", help="track in this `sam2s serve` server (URL), e.g. on a GPU machine")
    t.add_argument(
        "--token",
        help="the server's token (default $SAM2S_SERVER_TOKEN); visible to other users in `ps`: prefer --token-file",
    )
    t.add_argument("--token-file", metavar="FILE", help="read the server's token from this file (chmod 600)")
    t.set_defaults(func=cmd_track)


def _add_frame_range(parser: argparse.ArgumentParser) -> None:
    """``--start`` / ``--end``, of ``sam2s track`` and ``sam2s batch``."""
    parser.add_argument("--start", type=int, help="first frame to track (default 0)")
    parser.add_argument("--end", type=int, help="last frame to track (default: the last)")


BATCH_DEVICE_HELP = "cpu or cuda (default: cuda when the cluster has GPUs and the engine is sam2)"


def _add_batch_parser(sub) -> None:
    """``sam2s batch``: the manifest, Ray, the report, and the manifest's options (None: the cell's, else
    ``batch.DEFAULTS``); the model options are ``add_model_arguments``' (``--model`` into ``config``)."""
    m = ModelSpec()  # batch.DEFAULTS' model values (not imported here: the manifest module loads slowly)
    b = sub.add_parser(
        "batch",
        help="track the videos of a manifest (CSV / JSON) on Ray, one task per video, resumable",
        description="Each row: video, prompts, output_dir and optional columns engine, model, checkpoint, "
        "image_size, precision, memory, device, start, end, png, overlay (empty: the options below; defaults, "
        f"ModelSpec's: model {m.config}, image_size as the checkpoint was trained, precision {m.precision}, "
        f"memory {m.memory}). "
        "Relative paths are relative to the manifest, a checkpoint is the same path on every machine. "
        "Finished rows (valid result.json) are skipped.",
        conflict_handler="resolve",  # --device: the batch's own help replaces add_model_arguments'
    )
    b.add_argument("manifest", help="the manifest (.csv with a header line, or .json: a list of objects)")
    b.add_argument(
        "--address", help="connect to this Ray cluster (HEAD:6379 after `ray start --head`); default: a local Ray"
    )
    b.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    b.add_argument("--cpus-per-task", type=float, default=1.0, help="Ray CPUs per video (default %(default)s)")
    b.add_argument("--retries", type=int, default=2, help="retries of a video whose worker process died (default 2)")
    b.add_argument(
        "--report",
        help="the JSON report, a .json file (default batch-report.json next to the manifest); never an input or inside "
        "a row's folders; an existing file is replaced only when it is a batch report (re-running resumes) or with "
        "--overwrite",
    )
    b.add_argument("--overwrite", action="store_true", help="replace an existing --report that is not a batch report")
    add_model_arguments(b, None)  # every default None: the manifest's cell, else batch.DEFAULTS
    b.add_argument("--device", help=BATCH_DEVICE_HELP)  # Ray places the task: no cuda:N, auto or mps
    _add_frame_range(b)
    b.add_argument("--png", action=argparse.BooleanOptionalAction, default=None, help="label PNGs (default: yes)")
    b.add_argument("--overlay", action=argparse.BooleanOptionalAction, default=None, help="overlay.mp4 (default: no)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_batch)


def _add_eval_parser(sub) -> None:
    """``sam2s eval``: J&F (and with MONAI Dice, HD95, NSD) of predicted label PNGs."""
    e = sub.add_parser("eval", help="DAVIS 2017 J&F of predicted label PNGs against ground truth")
    e.add_argument("pred_dir")
    e.add_argument("gt_dir")
    e.add_argument("--exclude", nargs="*", help="frames not to evaluate, by number or file name (e.g. 0)")
    e.add_argument("--json", action="store_true", help="print every figure (per object and per frame) as JSON")
    e.add_argument(
        "--nsd-tolerance",
        type=float,
        default=2.0,
        metavar="PX",
        help="tolerance of the normalised surface Dice in pixels (default 2); Dice, HD95 and NSD need MONAI: "
        'pip install -e ".[metrics]"',
    )
    e.add_argument("--plot", metavar="OUT.png", help="write a PNG of J&F per frame, one line per object")
    e.set_defaults(func=cmd_eval)


def _add_demo_parser(sub) -> None:
    """``sam2s demo``: track the demo clip (or ``--data``) and write every output."""
    demo = sub.add_parser("demo", help="track the demo clip and write all outputs")
    demo.add_argument("--output-dir", default="demo_output")
    demo.add_argument(
        "--data",
        default=os.environ.get("SAM2S_DEMO_DATA") or None,
        help="a clip folder with video.mp4, prompts.json and masks/ (ground-truth label PNGs); default "
        "$SAM2S_DEMO_DATA, else a clip the demo generates",
    )
    demo.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier demo there")
    demo.add_argument("--model", default="sam2.1_hiera_t")
    demo.add_argument("--image-size", type=int, default=512)
    demo.add_argument("--engine", choices=["sam2", "flow"])
    demo.add_argument("--device", default="cpu")
    demo.set_defaults(func=cmd_demo)


def _add_web_arguments(parser: argparse.ArgumentParser) -> None:
    """``sam2s web``'s options; without the web extra, its help says how to install it."""
    try:
        from .web.app import addWebArguments
    except ImportError:  # trame is imported lazily by the app, so this is not expected
        return
    addWebArguments(parser)


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
        say(f"error: {err}")
        return 2
    except OutputWriteError as err:
        kept = "; written completely: " + ", ".join(map(str, err.written)) if err.written else ""
        say(f"error: {err.strerror}; it keeps its previous content{kept}.")
        return 1
    except TrackingFailed as err:
        say(f"error: {err}")
        return 1
    except MemoryError as err:  # what the memory checks before the work did not foresee
        say(
            f"error: out of memory ({err or 'an allocation failed'}); outputs not yet written keep their previous "
            "content: free memory, or track a shorter range (--start / --end) or a downscaled video."
        )
        return 1
    except BrokenPipeError:  # the reader of stdout left, e.g. `sam2s models | head -2`: stop quietly
        _silence_stdout()
        return 1  # as Python's documentation of SIGPIPE advises (signal module, "Note on SIGPIPE")
    except KeyboardInterrupt:
        say("interrupted: outputs not yet written keep their previous content; no partial file is left.")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _silence_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's final flush of a closed pipe
    raises nothing more."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
