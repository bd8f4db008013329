"""``sam2s track``'s work: check everything, import the video, track, write the outputs safely.

``run_tracking`` runs the very same headless Slicer logic as the Slicer module (``SAM2STrackingLogic``
on a ``slicer-core`` MRML scene) and writes the same files; the command line (``cli``) and the
demo (``demo``) call it. Bad input is a :class:`CliError` (exit code 2), raised before any long work.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from sam2s import checkpoints
from sam2s.config import CONFIGS
from sam2s.spec import check_precision

LABEL_PNGS = "label PNGs (00000.png, 00001.png ...)"
"""What ``--png-dir`` holds: ``{frame:05d}.png`` (``SAM2SSlicerLib.export.labelPngPattern()``); with
``--overwrite`` only files of that pattern are replaced in an existing folder."""
OVERLAY_SUFFIXES = (".mp4", ".mkv", ".mov")
"""Containers the overlay video (H.264) can be written to."""
STREAMING_THRESHOLD_BYTES = 256 * 2**20
"""With ``streaming=None``, videos whose Slicer volume and labelmaps would take more than this many
bytes are tracked on the streaming path (``SAM2SSlicerLib.streaming``), shorter ones on the
Slicer-volume path (both give the same results)."""


VOLUME_WORK_BYTES_PER_PIXEL = 160
"""Working memory of the Slicer-volume path per pixel of one frame, besides its volumes: decoding,
the flow engine's optical flow and GrabCut or the sam2 engine's frame conversion, the PNG / NRRD /
COCO writers. Measured as the peak virtual size after the memory check less the volumes, on 1 to
40 frames of 3840x2160 with 1 and 2 objects and every output: 58 to 145 (flow), 89 (sam2)."""
OVERLAY_LABELMAPS = 5
"""Frame volumes (bytes per pixel and frame) the overlay video adds: its label volume (1) and
x264's look-ahead frames (measured 2.8 to 4.4 on 20 and 40 frames of 3840x2160)."""


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
    say(
        f"No SAM 2 checkpoint for {model} (pass --checkpoint or run `sam2s download {model}`): "
        "falling back to the weight-free 'flow' engine (optical flow + GrabCut), which is less accurate."
    )
    return "flow", None


def _check_model_options(model: str, image_size: int, device: str) -> None:
    """Model name, image size and device string, before anything is read (CliError)."""
    import torch
    from sam2s.config import get_config

    if model not in CONFIGS:
        raise CliError(f"Unknown --model {model!r}; choose one of {', '.join(CONFIGS)}.")
    try:
        get_config(model, image_size)
    except ValueError as err:
        raise CliError(f"--image-size: {err}.") from None
    try:
        torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise CliError(f"Unknown --device {device!r}; use cpu, cuda, cuda:N or mps.") from None


def _build_model(model: str, checkpoint: str, device: str, image_size: int, precision: str = "auto"):
    """The SAM 2 model, or CliError for a checkpoint of another config, a truncated or unsafe
    file, a device this machine does not have, or an unknown precision."""
    from sam2s.build import build_model
    from sam2s.checkpoints import CheckpointError

    try:
        return build_model(model, checkpoint=checkpoint, device=device, image_size=image_size, precision=precision)
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
    output: str | Path | None,
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
    server: str | None = None,
    token: str | None = None,
    precision: str = "auto",
    streaming: bool | None = None,
    coco: str | Path | None = None,
    stats: str | Path | None = None,
) -> dict:
    """Track the objects of a prompts file through a video and write ``output`` (.seg.nrrd), label
    PNGs, an overlay video and / or a COCO instance ``.json`` (at least one of them).

    Two paths give the same files: the Slicer-volume path imports the video into the headless Slicer
    logic (memory grows with the video: refused by ``videoimport.checkVideoMemory`` when it does
    not fit), the streaming path (``SAM2SSlicerLib.streaming``) decodes, tracks and writes frame
    by frame with a disk-backed labelmap (memory independent of the video's length).

    Everything is checked before the long work, in this order: model options, the video's
    header, the prompts file, the output paths (``SAM2SSlicerLib.outputs.OutputSet``), the
    checkpoint and device (the model is built), the memory the video needs. Then the video is
    imported, tracked and the outputs are written, each atomically.

    Args:
        video: video file or image folder. prompts_path: prompts JSON (see README).
        output: the ``.seg.nrrd`` to write, or None. png_dir: a folder for label PNGs (``00000.png`` ...).
        overlay: an overlay video (``.mp4``, ``.mkv`` or ``.mov``).
        coco: a COCO instance ``.json`` (``SAM2SSlicerLib.coco``: RLE per object and frame, ``track_id``
            = object id; needs pycocotools, checked first).
        stats: a folder for the masklet statistics (``SAM2SSlicerLib.stats``: ``stats.csv``,
            ``review.csv``, ``area.png``, ``presence.png``, of the label images as the PNGs; predicted
            IoU and object score only with the sam2 engine in this process); needs matplotlib.
        start, end: inclusive frame range (default: whole video); tracking runs forward and backward
            from the earliest prompted frame.
        model_object: an already built ``sam2s`` model to use instead of building one (tests).
        overwrite: replace existing output files, and the label PNGs of an existing ``png_dir``
            (other files there stay). Without it existing outputs are refused.
        server, token: track in the ``sam2s serve`` server at this URL (e.g. a GPU machine) instead
            of in this process; ``checkpoint`` is then a path on the server, or None for its cache.
        precision: ``"auto"`` (bf16 on CUDA and on CPUs with native bf16, else fp32), ``"fp32"``
            or ``"bf16"`` (``sam2s.build_model``); also sent to the server.
        streaming: True: the streaming path; False: the Slicer-volume path; None (default): streaming
            without ``server`` for videos above ``STREAMING_THRESHOLD_BYTES`` (volume and
            labelmaps) with at most ``streaming.MAX_STREAM_OBJECTS`` objects. ``server`` needs the
            Slicer-volume path.

    Returns:
        ``{"engine": ..., "objects": [per-object summary], "frames": T, "outputs": {...}, "logic": logic,
        "streaming": bool}``; ``logic`` is None on the streaming path.

    Raises:
        CliError: bad input (no output, video, prompts, range, model, checkpoint, device, precision,
            output paths, memory, ``streaming=True`` with ``server``).
        SAM2SSlicerLib.outputs.OutputWriteError: an output could not be written (e.g. disk full);
            ``.written`` lists the outputs written completely.
        Other exceptions: runtime failures.
    """
    from sam2s.frames import FrameSourceError

    from .dicomvideo import openVideo
    from .export import labelPngPattern
    from .outputs import OutputError, OutputSet, OutputWriteError, atomicFile
    from .promptsfile import PromptsFileError, load_prompts

    if output is None and png_dir is None and overlay is None and coco is None and stats is None:
        raise CliError(
            "Nothing to write: give --output X.seg.nrrd, --png-dir DIR, --overlay OUT.mp4, --coco OUT.json and/or --stats DIR."
        )
    if coco is not None:
        from .coco import CocoUnavailableError, requirePycocotools

        try:
            requirePycocotools()
        except CocoUnavailableError as err:
            raise CliError(f"--coco: {err}") from None
    if streaming and server:
        raise CliError("--server tracks on the Slicer-volume path, which does not stream; drop one of the two.")
    _check_model_options(model, image_size, device)
    try:
        check_precision(precision)
    except ValueError as err:
        raise CliError(f"--precision: {err}.") from None
    try:
        source = openVideo(video)  # DICOM (SAM2SSlicerLib.dicomvideo) or sam2s.frames.open_frames
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
    seg_path = None if output is None else outputs.addFile(output, "--output", (".seg.nrrd",))
    png_path = None if png_dir is None else outputs.addFolder(png_dir, "--png-dir", labelPngPattern(), LABEL_PNGS)
    overlay_path = None if overlay is None else outputs.addFile(overlay, "--overlay", OVERLAY_SUFFIXES)
    coco_path = None if coco is None else outputs.addFile(coco, "--coco", (".json",))
    stats_path = None
    if stats is not None:
        from .stats import STATS_FILE_PATTERN, STATS_FILES, requireMatplotlib

        try:
            requireMatplotlib()
        except ImportError as err:
            raise CliError(f"--stats: {err}") from None
        stats_path = outputs.addFolder(
            stats, "--stats", STATS_FILE_PATTERN, f"statistics files ({', '.join(STATS_FILES)})"
        )
    try:
        try:
            for note in outputs.check():
                say(f"note: {note}")
        except OutputError as err:
            raise CliError(str(err)) from None

        if model_object is not None:
            engine_name = "sam2"
        elif server:
            engine_name = engine or "sam2"  # the checkpoint is the server's (a path there, or its cache)
            if not token:
                raise CliError("--server needs --token (the token `sam2s serve` printed or was given).")
        else:
            engine_name, checkpoint = choose_engine(engine, model, checkpoint)
            if engine_name == "sam2":
                model_object = _build_model(model, checkpoint, device, image_size, precision)
            elif device != "cpu":
                say(f"note: --device {device} is not used by the flow engine (it runs on the CPU).")

        if streaming is None:
            from .streaming import MAX_STREAM_OBJECTS

            volume_bytes = num_frames * size[0] * size[1] * (3 + len(objects) + 2)
            streaming = not server and len(objects) <= MAX_STREAM_OBJECTS and volume_bytes > STREAMING_THRESHOLD_BYTES
        if streaming:
            return _run_streaming(
                source, objects, first, last, engine_name, model_object, memory, outputs,
                seg_path, png_path, overlay_path, progress, coco_path, Path(str(video)).stem, stats_path=stats_path,
            )  # fmt: skip

        from . import export
        from .headless import createTrackingLogic
        from .settings import ModelSettings
        from .videoimport import NotEnoughMemoryError

        backend = None
        if server:
            from .backends import ServerBackend

            backend = ServerBackend(server, token)
            try:
                backend.client()  # reachable, token accepted, same protocol: before the import
            except Exception as err:  # noqa: BLE001 - sam2s.serving.client errors carry the message and the fix
                raise CliError(f"--server {server}: {err}") from None
        logic = createTrackingLogic(backend=backend)
        try:
            here = image_size if engine_name == "sam2" and not server else None  # a server tracks in its own process
            labelmaps, work = _volume_path_memory(len(objects), size, overlay_path is not None, here)
            logic.importVideo(str(video), labelmaps=labelmaps, workBytes=work)
        except NotEnoughMemoryError as err:
            raise CliError(
                f"{err} On the command line, track with --streaming on (memory independent of the video's length), "
                "or shorten or downscale the video first, e.g. `ffmpeg -i IN.mp4 -vf scale=854:-2 OUT.mp4` (then "
                "give the prompts in the new pixels)."
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
            precision=precision,
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

        if seg_path is not None:
            write("segmentation", seg_path, lambda: logic.exportSegmentation(str(seg_path)))
        if png_path is not None:
            write("png_dir", png_path, lambda: logic.exportLabelPngs(str(png_path), overwrite=overwrite))
        if overlay_path is not None:
            from .visualize import overlay as blend
            from .visualize import write_video

            def write_overlay() -> None:
                labels = export.labelFrames(logic.segmentationNode, logic.videoNode, list(segment_ids.values()))
                with atomicFile(overlay_path) as tmp:
                    write_video(
                        tmp, (blend(source.get(t), labels[t], colors) for t in range(num_frames)), source.fps or 10
                    )

            write("overlay", overlay_path, write_overlay)
        if coco_path is not None:  # checked above; the OutputSet refused an existing file without --overwrite
            write(
                "coco", coco_path, lambda: logic.exportCoco(str(coco_path), list(segment_ids.values()), overwrite=True)
            )
        if stats_path is not None:
            write("stats", stats_path, lambda: _write_stats(logic, list(segment_ids.values()), outputs, stats_path))
        names = {o.id: o.name for o in objects}
        return {
            "engine": engine_name,
            "frames": num_frames,
            "objects": _summary(logic, segment_ids, names),
            "outputs": written,
            "logic": logic,
            "streaming": False,
        }

    finally:
        outputs.release()  # the outputs' locks (see outputs.OutputSet.check)


def _volume_path_memory(
    objects: int, size: tuple[int, int], overlay: bool, sam2_image_size: int | None
) -> tuple[int, int]:
    """``(labelmaps, workBytes)`` for ``videoimport.checkVideoMemory`` on the Slicer-volume path:
    every copy it makes, measured (issue 21, item 6: a 4K clip passed the check with 2 label maps
    counted, then ran out of memory in VTK, SIGABRT).

    Label maps (uint8 ``T x H x W`` volumes): one layer of the segmentation per object (objects that
    overlap need their own), a segment read back and an export's label volume (2), and with an
    overlay ``OVERLAY_LABELMAPS`` more. Working memory: ``VOLUME_WORK_BYTES_PER_PIXEL`` per pixel
    of one frame, and, when a SAM 2 model tracks in this process at ``sam2_image_size`` pixels,
    its ``sam2s.resources.sam2_work_bytes``.
    """
    h, w = size
    labelmaps = objects + 2 + (OVERLAY_LABELMAPS if overlay else 0)
    work = VOLUME_WORK_BYTES_PER_PIXEL * h * w
    if sam2_image_size is not None:
        from sam2s.resources import sam2_work_bytes

        work += sam2_work_bytes(sam2_image_size)
    return labelmaps, work


def _run_streaming(
    source, objects, first, last, engine_name, model_object, memory, outputs, seg_path, png_path, overlay_path, progress,
    coco_path=None, video_name="video", stats_path=None,
) -> dict:  # fmt: skip
    """The streaming path of ``run_tracking`` (``SAM2SSlicerLib.streaming.trackToOutputs``)."""

    from .streaming import MAX_STREAM_OBJECTS, objectsFromPrompts, trackToOutputs
    from .visualize import color_for

    if len(objects) > MAX_STREAM_OBJECTS:
        raise CliError(f"Streaming tracks at most {MAX_STREAM_OBJECTS} objects; the prompts file has {len(objects)}.")
    colors = {o.id: o.color or tuple(c / 255 for c in color_for(o.id)) for o in objects}
    stream_objects = objectsFromPrompts(objects, colors)
    with _progress_bar(last - first + 1, f"tracking ({engine_name}, streaming)", progress) as on_progress:
        written, summary = trackToOutputs(
            source, stream_objects, first, last, engine_name, outputs,
            segPath=seg_path, pngPath=png_path, overlayPath=overlay_path, cocoPath=coco_path, videoName=video_name,
            model=model_object, memory=memory, progress=on_progress, statsPath=stats_path,
        )  # fmt: skip
    return {
        "engine": engine_name,
        "frames": len(source),
        "objects": summary,
        "outputs": written,
        "logic": None,
        "streaming": True,
    }


def _write_stats(logic, segment_ids: list[str], outputs, path: Path) -> None:
    """``--stats`` on the Slicer-volume path: the statistics of the label images (as the PNGs) with
    the confidences the logic kept, written atomically as one folder."""
    from .stats import segmentationStatistics, writeStatisticsFolder

    statistics, colors = segmentationStatistics(
        logic.segmentationNode, logic.videoNode, segment_ids, logic.segmentConfidences, labels=True
    )
    with outputs.writeFolder(path) as staging:
        writeStatisticsFolder(statistics, staging, colors)


def _track(logic, segment_ids: list[str], first: int, last: int, engine_name: str, progress: bool) -> None:
    """Track forward and backward from the earliest prompted frame with a progress bar; a prompt
    the engine refuses before tracking (e.g. the flow engine with no mask to start from) is a CliError."""
    from .logic import TrackingFailedError

    with _progress_bar(last - first + 1, f"tracking ({engine_name})", progress) as on_progress:
        try:
            logic.track(segment_ids, firstFrame=first, lastFrame=last, direction="both", progressCallback=on_progress)
        except TrackingFailedError as err:
            raise TrackingFailed(
                f"{err.reason}; nothing was written (the outputs keep their previous content): check the server "
                "and run the command again."
            ) from None


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
