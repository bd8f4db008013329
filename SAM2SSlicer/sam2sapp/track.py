"""``sam2s track``'s work: check everything, then stream the video through the tracker into the outputs.

``run_tracking`` takes one :class:`TrackRequest`; the command line (``cli``), the batch
(``batch``) and the demo (``demo``) call it. The tracker is built from the request's
``sam2s.spec.ModelSpec`` (or is a session of a tracking server, ``--server``), and its one stream
(``sam2s.Tracker.run``) feeds one sink per output (``streaming``). Bad input is a
:class:`CliError` (exit code 2), raised before any long work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from sam2s.modelspec import ModelSpec, spec_error_for_options

LABEL_PNGS = "label PNGs (00000.png, 00001.png ...) and provenance.json"
"""What ``--png-dir`` holds: ``{frame:05d}.png`` (``SAM2SSlicerLib.export.labelPngPattern()``); with
``--overwrite`` only files of that pattern are replaced in an existing folder."""
OVERLAY_SUFFIXES = (".mp4", ".mkv", ".mov")
"""Containers the overlay video (H.264) can be written to."""


class CliError(Exception):
    """A user error: printed without a traceback, exit code 2."""


class TrackingFailed(Exception):
    """Tracking or writing failed after the work started (the tracking server stopped answering,
    memory ran out): printed as one line without a traceback, exit code 1; no output was written
    or replaced by the failed step."""


# ----------------------------------------------------------------------------------- helpers
def say(msg: str) -> None:
    """Print a message for the user on stderr (not the results, which go to stdout)."""
    print(msg, file=sys.stderr, flush=True)


def choose_engine(spec: ModelSpec, auto: bool) -> ModelSpec:
    """``spec.settle(auto)`` (``sam2s.spec.ModelSpec.settle``: a local checkpoint, or the flow
    engine when ``auto`` and there is none, announced on stderr); a missing checkpoint is a CliError."""
    try:
        settled = spec.settle(auto)
    except FileNotFoundError as err:
        raise CliError(str(err)) from None
    if settled.engine != spec.engine:
        say(
            f"No SAM 2 checkpoint for {spec.config} (pass --checkpoint or run `sam2s download {spec.config}`): "
            "falling back to the weight-free 'flow' engine (optical flow + GrabCut), which is less accurate."
        )
    return settled


@dataclasses.dataclass(frozen=True)
class TrackRequest:
    """One ``sam2s track`` run: the inputs, the outputs (at least one) and the model.

    Attributes:
        video: video file, DICOM video or image folder. prompts: the prompts JSON (README).
        output: the ``.seg.nrrd`` to write. png_dir: a folder for label PNGs (``00000.png`` ...).
        overlay: an overlay video (``.mp4``, ``.mkv`` or ``.mov``). coco: a COCO instance ``.json``
            (``coco``: RLE per object and frame, ``track_id`` = object id; needs pycocotools).
        stats: a folder for the masklet statistics (``stats``: ``stats.csv``, ``review.csv``,
            ``area.png``, ``presence.png``); needs matplotlib.
        contact_sheet: a ``.png`` of 12 frames spread over the video with their masks blended in.
        model: the ``sam2s.spec.ModelSpec`` (a server uses its own files for ``checkpoint``: a
            path there, or None for its cache). auto_engine: ``model.engine`` ``sam2`` falls back to
            ``flow`` when no checkpoint is available (the command line without ``--engine``).
        start, end: inclusive frame range (default: the whole video); tracking runs forward, then
            backward, from the earliest prompted frame in it (``sam2s.session.plan_passes``).
        overwrite: replace existing outputs, and the label PNGs of an existing ``png_dir`` (other
            files stay). Without it existing outputs are refused.
        server, token: track in the ``sam2s serve`` server at this URL (e.g. a GPU machine); the
            frames are uploaded to it in chunks as they are decoded.
        progress: show a progress bar on stderr.
    """

    video: str | Path
    prompts: str | Path
    output: str | Path | None = None
    png_dir: str | Path | None = None
    overlay: str | Path | None = None
    coco: str | Path | None = None
    stats: str | Path | None = None
    contact_sheet: str | Path | None = None
    model: ModelSpec = ModelSpec(device="cpu")
    auto_engine: bool = False
    start: int | None = None
    end: int | None = None
    overwrite: bool = False
    server: str | None = None
    token: str | None = None
    progress: bool = True


def run_tracking(request: TrackRequest, model_object=None) -> dict:
    """Track the objects of ``request.prompts`` through its video and write its outputs.

    Everything is checked before the long work, in this order: the outputs asked for and their
    extras, the model spec, the video's header, the prompts file and the frame range, the output
    paths (``outputs.OutputSet``: refused, or locked for this run), then the tracker is made (the
    model built, or the server reached and the frames uploaded). Then one stream of frames goes
    through the tracker into one sink per output (``streaming.track_to_outputs``), each written
    atomically.

    Args:
        model_object: an already built ``sam2s`` model to use instead of building one (tests).

    Returns:
        ``{"engine", "frames" (T), "objects" (per-object summary), "outputs" ({key: path}),
        "prompted_frames" (sorted frame indices with a prompt), "provenance"
        (``provenance.Provenance``, recorded in every output)}``.

    Raises:
        CliError: bad input (no output, video, prompts, range, model, checkpoint, device,
            precision, output paths, server).
        TrackingFailed: the tracking server stopped answering or failed; nothing more was written.
        outputs.OutputWriteError: an output could not be written (e.g. disk full); ``.written``
            lists the outputs written completely.
    """
    from sam2s.frames import FrameSourceError
    from SAM2SSlicerLib.dicomvideo import openVideo
    from SAM2SSlicerLib.outputs import OutputError, OutputSet

    from .promptsfile import PromptsFileError, load_prompts

    r = request
    _check_extras(r)
    try:
        spec = r.model.validate()
    except ValueError as err:
        raise CliError(spec_error_for_options(err)) from None
    try:
        source = openVideo(r.video)  # DICOM (SAM2SSlicerLib.dicomvideo) or sam2s.frames.open_frames
    except (FrameSourceError, FileNotFoundError, ValueError, TypeError, OSError) as err:
        raise CliError(f"Cannot read video {r.video}: {err}") from None
    num_frames, size = len(source), (source.height, source.width)
    try:
        objects = load_prompts(r.prompts, num_frames=num_frames, frame_size=size)
    except (PromptsFileError, FileNotFoundError) as err:
        raise CliError(str(err)) from None
    first = 0 if r.start is None else r.start
    last = num_frames - 1 if r.end is None else r.end
    if not 0 <= first <= last < num_frames:
        raise CliError(f"--start/--end {first}..{last} must lie within the video's frames 0..{num_frames - 1}.")
    if r.overlay is not None and min(size) < 2:
        raise CliError(f"--overlay: the frames are {size[1]}x{size[0]} pixels; an H.264 video needs at least 2x2.")
    masks = [p.mask_path for o in objects for p in o.prompts if p.mask_path is not None]
    outputs = OutputSet([r.video, r.prompts, *masks], overwrite=r.overwrite)
    sinks = _sinks(r, outputs)
    try:
        try:
            for note in outputs.check():
                say(f"note: {note}")
        except OutputError as err:
            raise CliError(str(err)) from None
        tracker, spec = _tracker(r, spec, source, model_object)
        try:
            return _stream(r, spec, tracker, source, objects, first, last, sinks)
        finally:
            tracker.close()  # a server's session (nothing to do in this process)
    finally:
        outputs.release()  # the outputs' locks (see outputs.OutputSet.check)


def check_provenance(request: TrackRequest, output: str | Path) -> list[str]:
    """Whether ``output`` (a ``.seg.nrrd``, COCO ``.json``, label or statistics folder, batch
    ``result.json``) was made from ``request.prompts`` (by SHA-256) with ``request.model``: its
    checkpoint (the file given or cached, by SHA-256), config, image size and memory policy; its
    precision unless ``auto``; its engine when given (not ``auto_engine``); the frame range when
    ``start`` / ``end`` are given. Nothing is tracked.

    Returns:
        One line per difference ([]: it matches).

    Raises:
        CliError: the model options are invalid, the checkpoint is missing, or ``output`` has no
            readable provenance (written by an older version or another tool).
    """
    from SAM2SSlicerLib.provenance import ProvenanceError, checkProvenance

    try:
        spec = request.model.validate()
    except ValueError as err:
        raise CliError(spec_error_for_options(err)) from None
    try:
        settled = spec.settle(request.auto_engine)
    except FileNotFoundError as err:
        raise CliError(str(err)) from None
    settings: dict = {} if request.auto_engine else {"engine": settled.engine}
    if settled.engine == "sam2":
        settings.update(config=settled.config, imageSize=settled.image_size, memory=settled.memory)
        if settled.precision != "auto":
            settings["precision"] = settled.precision
    if request.start is not None:
        settings["firstFrame"] = request.start
    if request.end is not None:
        settings["lastFrame"] = request.end
    checkpoint = settled.checkpoint if settled.engine == "sam2" else None
    try:
        return checkProvenance(output, checkpoint=checkpoint, promptsPath=request.prompts, **settings)
    except (ProvenanceError, OSError) as err:
        raise CliError(f"--check-provenance: {err}") from None


def _check_extras(r: TrackRequest) -> None:
    """At least one output, and the extras its writers need (CliError)."""
    wanted = (r.output, r.png_dir, r.overlay, r.coco, r.stats, r.contact_sheet)
    if all(path is None for path in wanted):
        raise CliError(
            "Nothing to write: give --output X.seg.nrrd, --png-dir DIR, --overlay OUT.mp4, --coco OUT.json and/or --stats DIR."
        )
    if r.coco is not None:
        from SAM2SSlicerLib.coco import CocoUnavailableError, requirePycocotools

        try:
            requirePycocotools()
        except CocoUnavailableError as err:
            raise CliError(f"--coco: {err}") from None
    if r.stats is not None:
        from SAM2SSlicerLib.stats import requireMatplotlib

        try:
            requireMatplotlib()
        except ImportError as err:
            raise CliError(f"--stats: {err}") from None
    if r.server and not r.token:
        raise CliError("--server needs --token (the token `sam2s serve` printed or was given).")


def _sinks(r: TrackRequest, outputs) -> list:
    """The sinks of the outputs asked for, each path declared in ``outputs`` (refused when bad)."""
    from SAM2SSlicerLib.export import labelPngPattern
    from SAM2SSlicerLib.provenance import folderPattern

    from . import streaming

    sinks = []
    if r.png_dir is not None:
        path = outputs.addFolder(r.png_dir, "--png-dir", folderPattern(labelPngPattern()), LABEL_PNGS)
        sinks.append(streaming.LabelPngSink(path, outputs))
    if r.output is not None:
        sinks.append(streaming.SegmentationSink(outputs.addFile(r.output, "--output", (".seg.nrrd",))))
    if r.overlay is not None:
        sinks.append(streaming.OverlaySink(outputs.addFile(r.overlay, "--overlay", OVERLAY_SUFFIXES)))
    if r.stats is not None:
        from SAM2SSlicerLib.stats import STATS_FILE_PATTERN, STATS_FILES

        what = f"statistics files ({', '.join(STATS_FILES)})"
        sinks.append(streaming.StatsSink(outputs.addFolder(r.stats, "--stats", STATS_FILE_PATTERN, what), outputs))
    if r.coco is not None:
        sinks.append(streaming.CocoSink(outputs.addFile(r.coco, "--coco", (".json",))))
    if r.contact_sheet is not None:
        path = outputs.addFile(r.contact_sheet, "--contact-sheet", (".png",))
        sinks.append(streaming.ContactSheetSink(path))
    return sinks


def _tracker(r: TrackRequest, spec: ModelSpec, source, model_object):
    """``(tracker, spec)``: a tracking server's session over the uploaded frames, or a tracker in
    this process (the model built from ``spec``: CliError for a checkpoint of another config, a
    truncated or unsafe file, a device this machine does not have)."""
    if r.server:
        return _server_session(r, spec, source), spec
    if model_object is not None:
        tracker = spec.replace(engine="sam2").tracker(source, model_object)
        return tracker, _resolved(spec.replace(engine="sam2"), tracker)
    spec = choose_engine(spec, r.auto_engine)
    if spec.engine == "flow" and spec.device not in ("cpu", "auto"):
        say(f"note: --device {spec.device} is not used by the flow engine (it runs on the CPU).")
    from sam2s.checkpoints import CheckpointError

    try:
        tracker = spec.tracker(source)
    except (CheckpointError, FileNotFoundError, ValueError, RuntimeError) as err:
        raise CliError(str(err)) from None
    return tracker, _resolved(spec, tracker)


def _resolved(spec: ModelSpec, tracker) -> ModelSpec:
    """``spec`` with the precision and device the model in this process runs at (for provenance)."""
    model = getattr(tracker, "model", None)  # a VideoTracker's; the flow engine runs on the CPU
    if model is None:
        return spec.replace(device="cpu")
    device = model.device
    return spec.replace(precision=model.precision, device=str(device) if device.index is not None else device.type)


def _server_session(r: TrackRequest, spec: ModelSpec, source):
    """A session of the server ``r.server`` over ``source``'s frames, uploaded chunk by chunk with
    a progress bar; CliError when it cannot be reached, refuses the token, the frames or the model."""
    from sam2s.serving.client import Client

    try:
        client = Client(r.server, r.token)
        info = client.version()  # reachable, token accepted, same protocol: before the upload
        with _progress_bar(len(source), "uploading", r.progress) as on_progress:
            upload = client.upload_frames(source, progress=lambda sent, total: on_progress(sent, total, sent - 1))
        model = {
            "engine": spec.engine,
            "config": spec.config,
            "checkpoint": spec.checkpoint,
            "image_size": spec.input_size,  # resolved here: older servers need a number
            "device": spec.device,
        }
        if "precisions" in info:  # servers older than the field refuse it
            model["precision"] = spec.precision
        memory_params = dict(spec.memory_params)
        return client.create_session({"upload": upload}, model, memory=spec.memory, memory_params=memory_params)
    except Exception as err:  # noqa: BLE001 - sam2s.serving.client errors carry the message and the fix
        raise CliError(f"--server {r.server}: {err}") from None


def _stream(r: TrackRequest, spec: ModelSpec, tracker, source, objects, first: int, last: int, sinks) -> dict:
    """Track and write (``streaming.track_to_outputs``) with a progress bar; a damaged frame is a
    CliError, a lost or failing server a TrackingFailed (the outputs not written keep their content)."""
    from sam2s.frames import FrameSourceError
    from sam2s.serving.client import ServerError
    from SAM2SSlicerLib.provenance import makeProvenance

    from .streaming import StreamInfo, objects_from_prompts, stream_plan, track_to_outputs
    from .visualize import color_for

    colors = {o.id: o.color or tuple(c / 255 for c in color_for(o.id)) for o in objects}
    stream_objects = objects_from_prompts(objects, colors)
    plan = stream_plan(stream_objects, first, last)
    record = makeProvenance(spec, promptsPath=r.prompts, firstFrame=first, lastFrame=last, passes=plan.passes)
    name = Path(str(r.video)).stem
    video = StreamInfo(len(source), source.height, source.width, source.fps, name, source, record)
    with _progress_bar(last - first + 1, f"tracking ({spec.engine})", r.progress) as on_progress:
        try:
            written, summary = track_to_outputs(tracker, video, stream_objects, first, last, sinks, on_progress)
        except FrameSourceError as err:  # a damaged frame found while streaming: the outputs are untouched
            raise CliError(f"Cannot read video {r.video}: {err}") from None
        except ServerError as err:
            raise TrackingFailed(
                f"the tracking server stopped answering or failed ({err}); nothing was written (the outputs keep "
                "their previous content): check the server and run the command again."
            ) from None
    return {
        "engine": spec.engine,
        "frames": len(source),
        "objects": summary,
        "outputs": written,
        "prompted_frames": sorted({t for o in stream_objects for t in o.prompts}),
        "provenance": record,
    }


@contextlib.contextmanager
def _progress_bar(total: int, desc: str, show: bool) -> Iterator[Callable[[int, int, int], None]]:
    """A tqdm bar over frames; yields the ``(done, total, frame)`` progress callback of the trackers.
    A prompt the engine refuses (``sam2s.session.PromptError``) becomes a CliError."""
    from sam2s.session import PromptError  # the engine's and the prompt store's (one class)
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="frame", disable=not show)

    def on_progress(done: int, total: int, frame: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield on_progress
    except PromptError as err:
        raise CliError(str(err)) from None
    finally:
        bar.close()


def print_summary(result: dict) -> None:
    """Print the per-object summary and the outputs of ``run_tracking``'s result (stdout)."""
    print(f"engine: {result['engine']}, {result['frames']} frames")
    print(f"{'id':>3}  {'name':24} {'frames present':>15} {'mean area (px)':>15}")
    for r in result["objects"]:
        print(
            f"{r['id']:>3}  {r['name'][:24]:24} {r['frames_present']:>9} / {r['frames']:<4} {r['mean_area_px']:>15.0f}"
        )
    for what, path in result["outputs"].items():
        print(f"{what}: {path}")
