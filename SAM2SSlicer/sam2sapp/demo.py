"""``sam2s demo``: track the demo clip end to end and write every output a user gets.

The clip is a folder given as ``data`` (``sam2s demo --data DIR`` or ``$SAM2S_DEMO_DATA``) holding
``video.mp4``, ``prompts.json`` and ``masks/`` (ground-truth label PNGs), read in place -- in
this repository ``make demo`` passes ``../shared/data/endoscapes_v4``, a real laparoscopic clip
(CC BY-NC-SA) -- or, without one, a clip the project generates
(``SAM2SSlicerLib.synthetic.SyntheticClip``, written to the output folder with its ground truth).
Outputs in ``output_dir``: ``masklets.seg.nrrd``, ``labels/`` (per-frame label PNGs),
``overlay.mp4``, ``contact_sheet.png``; then DAVIS J&F on the annotated frames (prompted frames
excluded) when ground truth exists. Outputs of an earlier demo in ``output_dir`` are replaced only
with ``overwrite`` (the rules of ``sam2s track``); the generated clip, once complete, is reused.

Weights (:func:`demo_checkpoint`). Unless ``engine="flow"``, the demo first gets the model's
checkpoint (default SAM 2.1 ``sam2.1_hiera_t``) with ``sam2s.checkpoints.download``: from the cache
when it is there and verified, else downloaded with a progress bar and checked against the
registry's size and SHA-256, and tracks with SAM 2. Offline (the server cannot be reached, or the
transfer breaks off) it says so and falls back to the weight-free ``flow`` engine, as without
weights before; with ``engine="sam2"`` that is an error instead. A download whose size or SHA-256
is wrong is deleted and the demo stops with an error (exit code 2) rather than falling back: a
file that is not what the registry says points to a broken mirror or proxy, which the user should
know about; ``--engine flow`` runs the demo without weights.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from PIL import Image

from .track import CliError, TrackRequest, print_summary, run_tracking, say


def generated_clip(folder: Path, num_frames: int = 48) -> tuple[Path, Path, Path]:
    """Write a generated clip (JPEG frames), its prompts file (masks on frame 0) and its ground
    truth (label PNGs every 8 frames) into ``folder``. Returns ``(frames_dir, prompts, gt_dir)``."""
    from SAM2SSlicerLib.synthetic import SyntheticClip

    from .promptsfile import ObjectPrompts, Prompt, dump_prompts

    clip = SyntheticClip(num_frames, 240, 320, num_objects=2, seed=4)
    frames_dir, gt_dir = folder / "frames", folder / "ground_truth"
    frames_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    for i in range(num_frames):
        Image.fromarray(clip.get(i)).save(frames_dir / f"{i:05d}.jpg", quality=95)
        if i % 8 == 0:
            Image.fromarray(clip.labels(i)).save(gt_dir / f"{i:05d}.png")
    objects = [  # first-frame masks as prompts (written as PNGs next to the prompts file)
        ObjectPrompts(id=k + 1, name=name, color=None, prompts=[Prompt(frame=0, mask=clip.mask(0, k))])
        for k, name in enumerate(["blob A", "blob B"])
    ]
    prompts = folder / "prompts.json"
    dump_prompts(objects, prompts)
    return frames_dir, prompts, gt_dir


def _generated_clip_once(output_dir: Path) -> tuple[Path, Path, Path]:
    """The generated clip in ``output_dir / "generated_clip"``: reused when complete, else written
    into a temporary folder that is renamed only once complete (a killed run leaves no half clip)."""
    from SAM2SSlicerLib.outputs import PARTIAL_TAG, processRuns

    final = output_dir / "generated_clip"
    if (final / "prompts.json").is_file():
        return final / "frames", final / "prompts.json", final / "ground_truth"
    for old in output_dir.glob(f".generated_clip{PARTIAL_TAG}*"):  # left by a killed demo: ours by name
        pid = int(old.name.split(PARTIAL_TAG)[1].split("-")[0])
        if not processRuns(pid):
            shutil.rmtree(old, ignore_errors=True)
    staging = output_dir / f".generated_clip{PARTIAL_TAG}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        generated_clip(staging)
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final / "frames", final / "prompts.json", final / "ground_truth"


def demo_checkpoint(
    model: str,
    engine: str | None,
    info=None,
    url: str | None = None,
    cache_dir: str | Path | None = None,
    timeout: float = 30,
    progress: bool = True,
) -> str | None:
    """The checkpoint the demo tracks with: its local path, or None for the ``flow`` engine.

    Args:
        model: the model config (its registry checkpoint is used). engine: ``"flow"`` (no
            download, returns None), ``"sam2"`` (a failed download is an error) or None (a failed
            download falls back to flow, announced on stderr).
        info: a ``sam2s.checkpoints.CheckpointInfo`` instead of the registry's entry for ``model``
            (a mirror or a test server); url: download from this URL instead (still verified
            against ``info``). cache_dir: default ``sam2s.checkpoints.cache_dir()``.
        timeout: socket timeout in seconds. progress: show a download progress bar on stderr.

    Raises:
        CliError: the download's size or SHA-256 is wrong (the file was deleted); with
            ``engine="sam2"``, any failed download; no registry checkpoint for ``model``.
    """
    from sam2s import checkpoints

    if engine == "flow":
        return None
    try:
        info = info or checkpoints.get_info(model)
    except ValueError as err:
        raise CliError(str(err)) from None
    try:
        return str(checkpoints.download(info, cache_dir=cache_dir, progress=progress, url=url, timeout=timeout))
    except checkpoints.ChecksumError as err:
        raise CliError(
            f"The downloaded {info.name} checkpoint failed verification and was deleted: {err} "
            "Run `make demo` again later, or run the demo without weights: sam2s demo --engine flow."
        ) from None
    except (checkpoints.DownloadError, OSError) as err:
        if engine == "sam2":
            raise CliError(f"Cannot get the {info.name} checkpoint: {err}") from None
        say(
            f"offline: cannot download the {info.name} checkpoint ({err}). Falling back to the weight-free "
            "'flow' engine (optical flow + GrabCut), which is less accurate."
        )
        return None


def run_demo(
    output_dir: Path,
    data: Path | None = None,
    model: str = "sam2.1_hiera_t",
    image_size: int = 512,
    engine: str | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    checkpoint_info=None,
    download_url: str | None = None,
    cache_dir: str | Path | None = None,
    end: int | None = None,
) -> int:
    """Run the demo; prints what it wrote and the J&F. Returns the exit code (0).

    Args:
        output_dir: folder for the outputs (created if missing).
        data: a clip folder with ``video.mp4``, ``prompts.json`` and ``masks/``; None: generate one.
        model, image_size, engine, device, overwrite: as ``sam2s track``; the checkpoint is
            downloaded first unless ``engine="flow"`` (:func:`demo_checkpoint`, offline: flow).
        checkpoint_info, download_url, cache_dir: where the checkpoint comes from
            (:func:`demo_checkpoint`; default the registry's entry for ``model``, the user's cache).
        end: track frames ``0 .. end`` only (default all; later frames' labels are empty).

    Raises:
        CliError: ``data`` holds no ``video.mp4``; ``output_dir`` is a file or cannot be created,
            or holds outputs of an earlier demo and ``overwrite`` is false (as ``sam2s track``);
            the downloaded checkpoint fails verification (:func:`demo_checkpoint`).
    """
    from sam2s.modelspec import ModelSpec

    from .metrics import evaluate

    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise CliError(f"--output-dir {output_dir} is a file; give a folder for the demo's outputs.")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"--output-dir {output_dir}: cannot create it ({err.strerror}).") from None
    try:
        if data is not None:
            data = Path(data)
            if not (data / "video.mp4").is_file():
                raise CliError(
                    f"--data {data}: no video.mp4 there; give a folder with video.mp4, prompts.json, masks/."
                )
            video, prompts, gt_dir = data / "video.mp4", data / "prompts.json", data / "masks"
            print(f"demo clip: {data} (read in place)")
        else:
            video, prompts, gt_dir = _generated_clip_once(output_dir)
            print(f"demo clip: generated ({video}); pass --data DIR to use a clip of your own")
    except OSError as err:
        raise CliError(f"Cannot write the generated demo clip into {output_dir} ({err}).") from None
    checkpoint = demo_checkpoint(model, engine, checkpoint_info, download_url, cache_dir)
    spec = ModelSpec(engine="sam2" if checkpoint else "flow", config=model, checkpoint=checkpoint)
    request = TrackRequest(
        video,
        prompts,
        output=output_dir / "masklets.seg.nrrd",
        png_dir=output_dir / "labels",
        overlay=output_dir / "overlay.mp4",
        contact_sheet=output_dir / "contact_sheet.png",
        model=spec.replace(image_size=image_size, device=device),
        end=end,
        overwrite=overwrite,
    )
    result = run_tracking(request)
    print_summary(result)
    if gt_dir.is_dir():
        res = evaluate(output_dir / "labels", gt_dir, exclude=[str(t) for t in result["prompted_frames"]])
        frames = ", ".join(Path(f).stem.lstrip("0") or "0" for f in res["frames"])
        print(f"DAVIS J&F on annotated frames {frames} (prompted frames excluded):")
        for obj_id, r in res["objects"].items():
            print(f"  object {obj_id}: J {r['J']:.3f}  F {r['F']:.3f}  J&F {r['J&F']:.3f}")
        print(f"  mean: J {res['J']:.3f}  F {res['F']:.3f}  J&F {res['J&F']:.3f}")
    return 0
