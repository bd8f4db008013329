"""``sam2s batch MANIFEST``: track many videos on Ray, one task per video, resumable.

The manifest (``sam2sapp.manifest``, whose names this module re-exports) is a CSV or JSON file with
one row per video: ``video``, ``prompts``, ``output_dir`` and the options of ``sam2s track``
(:data:`COLUMNS`); an empty cell takes the command line's value. The whole manifest is checked
before any work starts (:func:`load_manifest`, :class:`BatchError`): every problem of every row is
listed.

The JSON report (``--report``, default ``batch-report.json`` next to the manifest) is checked before
Ray starts too (:func:`checked_report`): it may not be an input (the manifest, a video or a frame of
an image folder, a prompts file or its mask PNGs, a checkpoint) nor lie inside a row's
``output_dir``; an existing file is replaced only when it is a batch report (format
:data:`REPORT_FORMAT`, or an older one), so that re-running the same command resumes, or with
``--overwrite``.

Per video, ``output_dir`` receives (:data:`SEGMENTATION`, :data:`LABELS`, :data:`OVERLAY`, and
last :data:`RESULT`): ``masklets.seg.nrrd``, ``labels/00000.png ...``, ``overlay.mp4`` and
``result.json`` (video, frames, objects, seconds, and every output file with its SHA-256 and
size in bytes). A task writes into a fresh hidden sibling folder (``.<name>.sam2s-batch-...``)
and renames it to ``output_dir`` at the end, so ``output_dir`` is either complete or absent.

Resume: a row whose ``result.json`` lists files that all match their checksums is skipped
(nothing is touched). An ``output_dir`` without a valid ``result.json`` that holds only the files
a batch writes (left by an older, incomplete run) is replaced; one holding any other file is
refused, so that no user file is ever deleted.

Ray (https://docs.ray.io): ``ray.init`` starts an embedded local instance (or connects to a
cluster with ``--address``); each video is one ``@ray.remote`` task with ``num_cpus`` per task,
one GPU when its device is CUDA, and ``max_retries`` retries when its worker process dies
(killed, out of memory). Errors of the video itself (bad prompts, unreadable video) are not
retried: they fail their row only.

Exit codes (as ``sam2s track``): 0 every row done or skipped; 1 some row failed; 2 a bad manifest,
options or report path, or Ray missing (nothing started); 130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sam2s import strictjson
from sam2s.extras import install_hint
from sam2s.modelspec import ModelSpec
from SAM2SSlicerLib.provenance import fileSha256

from .manifest import (
    COLUMNS,
    DEFAULTS,
    LABELS,
    MAX_FRAME,
    OPTIONS,
    OVERLAY,
    REQUIRED,
    RESULT,
    RESULT_FORMAT,
    SEGMENTATION,
    BatchError,
    BatchRow,
    load_manifest,
    output_state,
    read_result,
)
from .track import CliError, TrackRequest, run_tracking, say

__all__ = [  # the manifest's names are re-exported: sam2sapp.batch is the batch's one entry point
    "COLUMNS",
    "DEFAULTS",
    "LABELS",
    "MAX_FRAME",
    "OPTIONS",
    "OVERLAY",
    "REPORT_FORMAT",
    "REPORT_NAME",
    "REQUIRED",
    "RESULT",
    "RESULT_FORMAT",
    "SEGMENTATION",
    "STAGING_TAG",
    "BatchError",
    "BatchRow",
    "checked_report",
    "file_records",
    "import_ray",
    "load_manifest",
    "output_state",
    "print_table",
    "read_result",
    "run_batch",
    "track_video",
    "write_report",
]

REPORT_NAME = "batch-report.json"
REPORT_FORMAT = "sam2s-batch-report/1"
_OLD_REPORT_KEYS = {"manifest", "seconds", "counts", "rows"}  # a report written before REPORT_FORMAT
STAGING_TAG = ".sam2s-batch-"
_STAGING_RE = re.compile(r"^\.(?P<name>.+)\.sam2s-batch-(?P<host>.*)-(?P<pid>\d+)-(?P<token>[0-9a-f]+)$")
RAY_MISSING = (
    "sam2s batch needs Ray: "
    + install_hint("batch", '"ray>=2.9"')
    + " in this environment and on every machine of the cluster."
)


# ------------------------------------------------------------------------------ output folders
def file_records(folder: Path) -> list[dict[str, Any]]:
    """``[{"path": relative POSIX path, "sha256": hex, "bytes": size}]`` of every file under ``folder``
    except ``result.json``, sorted by path."""
    records = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.relative_to(folder).as_posix() != RESULT:
            records.append(
                {"path": p.relative_to(folder).as_posix(), "sha256": fileSha256(p), "bytes": p.stat().st_size}
            )
    return records


def _remove_stale_staging(output_dir: Path) -> int:
    """Remove the staging folders of earlier attempts for ``output_dir`` (a killed worker's); on this
    host only those of processes that no longer run. Returns how many were removed."""
    from SAM2SSlicerLib.outputs import processRuns

    removed, host = 0, socket.gethostname()
    for p in output_dir.parent.glob(f".{output_dir.name}{STAGING_TAG}*"):
        m = _STAGING_RE.match(p.name)
        if not m or m["name"] != output_dir.name or not p.is_dir() or p.is_symlink():
            continue
        if m["host"] == host and processRuns(int(m["pid"])):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed += 1
    return removed


def _commit(staging: Path, output_dir: Path) -> None:
    """Put the complete ``staging`` folder in place of ``output_dir`` (absent or incomplete)."""
    from SAM2SSlicerLib.outputs import exchangePaths

    if not output_dir.exists():
        os.rename(staging, output_dir)
        return
    state, why = output_state(output_dir)
    if state == "foreign":
        raise CliError(f"output_dir {output_dir} {why}; nothing was replaced (choose a new folder).")
    if not exchangePaths(staging, output_dir):  # no atomic swap here: move the old folder aside first
        old = staging.with_name(staging.name + "-old")
        os.rename(output_dir, old)
        os.rename(staging, output_dir)
        staging = old
    shutil.rmtree(staging)  # now the old, incomplete content (only files a batch writes)


# ---------------------------------------------------------------------------------- one task
def track_video(job: dict[str, Any]) -> dict[str, Any]:
    """Track one video into its ``output_dir`` (runs in a Ray worker; also callable directly).

    ``job`` is :meth:`BatchRow.job`. Writes into a new staging folder, then ``result.json`` last, then
    renames the folder to ``output_dir``. Errors of the video (``CliError``, write errors, any
    exception of the tracking) are returned as ``{"status": "failed", "error": message}`` so that
    Ray does not retry them; only a dying worker process makes Ray retry the task.

    Returns:
        The row's record: ``row, video, output_dir, status ("done"|"failed"), frames, objects
        (count), seconds (wall time of this attempt), error, cleaned`` (staging folders of
        earlier attempts removed).
    """
    from SAM2SSlicerLib.outputs import OutputWriteError

    t0 = time.monotonic()
    out = Path(job["output_dir"])
    record: dict[str, Any] = {"row": job["row"], "video": job["video"], "output_dir": job["output_dir"]}
    try:
        done = read_result(out)
        if done is not None:  # finished by an attempt that died after the rename
            return {**record, "status": "done", "frames": done["frames"], "objects": len(done["objects"]),
                    "seconds": done["seconds"], "error": None, "cleaned": 0}  # fmt: skip
        state, why = output_state(out)
        if state == "foreign":
            raise CliError(f"output_dir {out} {why}; choose a new folder (nothing there is deleted).")
        record["cleaned"] = _remove_stale_staging(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = out.parent / f".{out.name}{STAGING_TAG}{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}"
        staging.mkdir()
        try:
            result = run_tracking(_track_request(job, staging))
            seconds = round(time.monotonic() - t0, 3)
            _write_result(job, staging, result, seconds)
            _commit(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone after the commit; a failure's leftovers
        return {**record, "status": "done", "frames": result["frames"], "objects": len(result["objects"]),
                "seconds": seconds, "error": None}  # fmt: skip
    except CliError as err:
        error = str(err)
    except OutputWriteError as err:
        error = f"cannot write {err.path}: {err.strerror}"
    except Exception as err:  # noqa: BLE001 - any failure of one video fails its row only
        error = f"{type(err).__name__}: {err}"
    return {**record, "status": "failed", "frames": None, "objects": None,
            "seconds": round(time.monotonic() - t0, 3), "error": error}  # fmt: skip


def _track_request(job: Mapping[str, Any], staging: Path) -> TrackRequest:
    """The ``sam2s track`` request of a job, writing its outputs into ``staging``."""
    model = ModelSpec(
        engine=job["engine"],
        config=job["model"],
        checkpoint=job["checkpoint"],
        image_size=job["image_size"],
        precision=job["precision"],
        device=job["device"],
        memory=job["memory"],
    )
    return TrackRequest(
        job["video"],
        job["prompts"],
        output=staging / SEGMENTATION,
        png_dir=staging / LABELS if job["png"] else None,
        overlay=staging / OVERLAY if job["overlay"] else None,
        model=model,
        start=job["start"],
        end=job["end"],
        progress=False,
    )


def _write_result(job: Mapping[str, Any], staging: Path, result: Mapping[str, Any], seconds: float) -> None:
    """Write ``staging``'s ``result.json`` (last: every other file is listed with its checksum)."""
    outputs = {"segmentation": SEGMENTATION}
    if job["png"]:
        outputs["labels"] = LABELS
    if job["overlay"]:
        outputs["overlay"] = OVERLAY
    options = {k: job[k] for k in OPTIONS}
    summary = {
        "format": RESULT_FORMAT,
        "video": job["video"],
        "prompts": job["prompts"],
        "engine": result["engine"],
        "frames": result["frames"],
        "objects": result["objects"],
        "seconds": seconds,
        "options": options,
        "outputs": outputs,
        "files": file_records(staging),
        "provenance": result["provenance"].toDict(),
    }
    (staging / RESULT).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------ the batch
def import_ray():
    """The ``ray`` module, or BatchError saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise BatchError(f"{RAY_MISSING} ({err})") from None
    return ray


def _prompt_masks(prompts: Path) -> list[Path]:
    """The real paths of the mask PNGs that ``prompts`` names; [] when it cannot be read (its row's
    task reports that)."""
    try:
        doc = strictjson.loads(prompts.read_bytes())
        names = [p["mask"] for o in doc["objects"] for p in o["prompts"] if isinstance(p.get("mask"), str)]
        return [Path(os.path.realpath(prompts.parent / name)) for name in names]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def _report_clash(real: Path, manifest: Path, rows: Sequence[BatchRow]) -> str | None:
    """What the report's real path would overwrite or spoil (an input, an output folder), else None."""

    def real_of(p: str | os.PathLike) -> Path:
        return Path(os.path.realpath(p))

    if real == real_of(manifest):
        return "is the manifest"
    for r in rows:
        video, out = real_of(r.video), real_of(r.output_dir)
        if real == video:
            return f"is row {r.row}'s video"
        if video in real.parents:
            return f"lies inside row {r.row}'s video folder {r.video}"
        if real == real_of(r.prompts):
            return f"is row {r.row}'s prompts file"
        if r.options["checkpoint"] and real == real_of(r.options["checkpoint"]):
            return f"is row {r.row}'s checkpoint"
        if real == out:
            return f"is row {r.row}'s output_dir"
        if out in real.parents:
            return f"lies inside row {r.row}'s output_dir {r.output_dir}, where a batch writes only its own files"
        if real in out.parents:
            return f"is a folder above row {r.row}'s output_dir {r.output_dir}"
        staging = f".{out.name}{STAGING_TAG}"
        if any(p.parent == out.parent and p.name.startswith(staging) for p in (real, *real.parents)):
            return f"lies in a staging folder of row {r.row}'s output_dir {r.output_dir}"
    if real.is_file():  # only an existing file can be a mask
        for r in rows:
            if real in _prompt_masks(r.prompts):
                return f"is a mask PNG of row {r.row}'s prompts file {r.prompts}"
    return None


def _is_report(path: Path) -> bool:
    """Whether ``path`` holds a report a batch wrote: of :data:`REPORT_FORMAT`, or older (by its keys)."""
    try:
        with open(path, "rb") as f:
            if f.read(1) != b"{":  # not JSON text: not read further
                return False
        record = strictjson.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and (record.get("format") == REPORT_FORMAT or _OLD_REPORT_KEYS <= record.keys())


@contextlib.contextmanager
def checked_report(
    report: str | os.PathLike | None, manifest: str | os.PathLike, rows: Sequence[BatchRow], overwrite: bool = False
) -> Iterator[Path]:
    """Check the report's path before anything starts, as ``sam2s track`` checks its outputs, and
    hold its lock until the block ends (``outputs.OutputSet``: another run writing the same report
    is refused; the temporaries of a report write that was killed are removed).

    Args:
        report: the report's path; None: :data:`REPORT_NAME` next to the manifest.
        manifest: the manifest; rows: its rows (:func:`load_manifest`).
        overwrite: replace an existing file that is not a batch report (a report a batch wrote is
            always replaced, so that the same command resumes).

    Yields:
        The report's path.

    Raises:
        BatchError: (on entering the block) the path (symbolic links resolved) is the manifest, a
            row's video, prompts file, mask PNG or checkpoint, or lies inside a row's video folder,
            ``output_dir`` or staging folder (or is a folder above an ``output_dir``); it does not
            end in ``.json``, is a folder or not a regular file; its folder is missing or not
            writable; it is an existing file that is not a batch report and ``overwrite`` is false;
            another running process writes it.
    """
    from SAM2SSlicerLib.outputs import OutputError, OutputSet

    path = Path(report) if report else Path(os.path.abspath(manifest)).parent / REPORT_NAME
    try:
        clash = _report_clash(Path(os.path.realpath(path)), Path(manifest), rows)
        foreign = not overwrite and path.is_file() and not _is_report(path)
    except (OSError, ValueError) as err:
        raise BatchError(f"--report {path}: not a usable path ({err}).") from None
    if clash:
        raise BatchError(f"--report {path} {clash}; write the report elsewhere.")
    if foreign:
        raise BatchError(
            f"--report {path} exists and is not a batch report; choose another path or pass --overwrite to replace it."
        )
    with OutputSet([], overwrite=True) as outputs:  # the inputs and an existing file are checked above
        outputs.addFile(path, "--report", (".json",))
        try:
            notes = outputs.check()
        except OutputError as err:
            raise BatchError(str(err)) from None
        for note in notes:
            say(f"note: {note}")
        yield path


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the JSON report atomically (``outputs.atomicFile``)."""
    from SAM2SSlicerLib.outputs import atomicFile

    with atomicFile(path) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


def print_table(records: Sequence[Mapping[str, Any]], file=None) -> None:
    """The summary table (video, frames, objects, seconds, status, error), one line per row, then the counts."""
    file = file or sys.stdout
    print(f"{'row':>4}  {'video':32} {'frames':>6} {'objects':>7} {'seconds':>8}  {'status':8} error", file=file)
    for r in records:
        name = Path(r["video"]).name
        num = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
        error = " ".join((r.get("error") or "").split())  # whole, on one line
        print(
            f"{r['row']:>4}  {name[-32:]:32} {num(r.get('frames'), 'd'):>6} {num(r.get('objects'), 'd'):>7} "
            f"{num(r.get('seconds'), '.1f'):>8}  {r['status']:8} {error}",
            file=file,
        )
    counts = {s: sum(r["status"] == s for r in records) for s in ("done", "skipped", "failed", "interrupted")}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n), file=file)


def run_batch(
    manifest: str | os.PathLike,
    defaults: Mapping[str, Any] | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_task: float = 1.0,
    retries: int = 2,
    report: str | os.PathLike | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> int:
    """Track every row of ``manifest`` on Ray; print the summary table; write the JSON report.

    Args:
        manifest: the CSV / JSON manifest (module docstring). defaults: command-line option values.
        address: an existing Ray cluster (``HEAD:6379``, or ``auto``); None starts a local Ray with
            ``num_cpus`` CPUs (default: all), unless this process already called ``ray.init``.
        cpus_per_task: Ray CPUs per video (also its PyTorch threads: Ray sets ``OMP_NUM_THREADS``).
        retries: ``max_retries`` of a task whose worker process died.
        report: the JSON report's path (default ``batch-report.json`` next to the manifest), checked
            before Ray starts (:func:`checked_report`): never an input or inside a row's folders; an
            existing file is replaced only when it is a batch report (re-running the same command
            resumes) or with ``overwrite``.
        progress: a tqdm bar over the videos (stderr).
        overwrite: replace an existing ``report`` that is not a batch report.

    Returns:
        0 when every row is done or skipped, 1 when some failed.

    Raises:
        BatchError: bad options, a bad manifest (:func:`load_manifest`) or report path
            (:func:`checked_report`), all found before Ray is imported; Ray missing; CUDA rows on a
            cluster without GPUs.
        KeyboardInterrupt: interrupted; the report lists the unfinished rows as "interrupted". When this
            call started Ray (or connected to ``address``), its shutdown ends the running tasks; on a Ray
            the caller initialised, they keep running.
    """
    if cpus_per_task <= 0 or retries < 0 or (num_cpus is not None and num_cpus < 1):
        raise BatchError("--cpus-per-task must be > 0, --retries >= 0 and --num-cpus >= 1.")
    rows = load_manifest(manifest, defaults)
    with checked_report(report, manifest, rows, overwrite) as report_path:
        ray = import_ray()
        t0 = time.monotonic()
        records, todo = _skip_done(rows)
        started_here = submitted = False
        refs: dict[Any, BatchRow] = {}
        try:
            if todo:
                started_here = _start_ray(ray, address, num_cpus)
                _choose_devices(todo, ray.cluster_resources().get("GPU", 0))
                task = ray.remote(track_video)
                submitted = True
                _submit(task, todo, refs, cpus_per_task, retries)
                _collect(ray, refs, records, retries, progress)
        except KeyboardInterrupt:
            # The unfinished tasks are not ray.cancel()ed: a cancel that races with the task's completion
            # aborts this process inside Ray ("Check failed: it != submissible_tasks_.end() Tried to
            # complete task that was not pending", task_manager.cc, seen with Ray 2.60 in 2 of 8
            # interrupts; ray-project/ray#54846). ray.shutdown() below ends them instead: Ray kills the
            # workers leased by a driver that disconnects (its ownership model; test_batch's
            # interrupted-run test checks that the cluster's CPUs come back with no late result). When
            # the caller started Ray, its tasks are its own to cancel or wait for.
            for r in refs.values():
                if r.row not in records:
                    records[r.row] = _unfinished(r, "interrupted", "interrupted")
            for r in todo:
                records.setdefault(r.row, _unfinished(r, "interrupted", "not started"))
            raise
        finally:
            if submitted or not todo:
                _report(report_path, manifest, [records[r.row] for r in rows if r.row in records], t0)
            if started_here:
                ray.shutdown()
        return 1 if any(x["status"] == "failed" for x in records.values()) else 0


def _unfinished(r: BatchRow, status: str, error: str) -> dict[str, Any]:
    """The record of a row without a result (``status`` "failed" or "interrupted")."""
    return {"row": r.row, "video": str(r.video), "output_dir": str(r.output_dir),
            "status": status, "frames": None, "objects": None, "seconds": None,
            "error": error}  # fmt: skip


def _skip_done(rows: Sequence[BatchRow]) -> tuple[dict[int, dict[str, Any]], list[BatchRow]]:
    """``(records, todo)``: the "skipped" records of the rows whose ``output_dir`` holds a valid
    ``result.json`` (by row number), and the other rows."""
    records: dict[int, dict[str, Any]] = {}
    todo: list[BatchRow] = []
    for r in rows:
        done = read_result(r.output_dir)
        if done is None:
            todo.append(r)
        else:
            records[r.row] = {"row": r.row, "video": str(r.video), "output_dir": str(r.output_dir),
                              "status": "skipped", "frames": done.get("frames"),
                              "objects": len(done.get("objects", [])), "seconds": done.get("seconds"),
                              "error": None}  # fmt: skip
    return records, todo


def _start_ray(ray, address: str | None, num_cpus: int | None) -> bool:
    """``ray.init`` unless this process already did; whether this call started (or connected) it."""
    if ray.is_initialized():
        return False
    import logging

    ray.init(
        address=address,
        num_cpus=None if address else num_cpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    return True


def _choose_devices(todo: Sequence[BatchRow], gpus: float) -> None:
    """Settle each row's ``device`` (None: cuda when the cluster has ``gpus`` and the engine is sam2,
    else cpu); BatchError for a CUDA row on a cluster without GPUs."""
    for r in todo:
        o = r.options
        if o["device"] is None:
            o["device"] = "cuda" if gpus and o["engine"] == "sam2" else "cpu"
        if o["device"].startswith("cuda") and not gpus:
            raise BatchError(f"row {r.row}: device {o['device']}, but the Ray cluster has no GPU; use cpu.")


def _submit(task, todo: Sequence[BatchRow], refs: dict[Any, BatchRow], cpus_per_task: float, retries: int) -> None:
    """Submit one Ray task per row (a GPU for a CUDA row of the sam2 engine), into ``refs``."""
    for r in todo:
        needs_gpu = r.options["device"].startswith("cuda") and r.options["engine"] == "sam2"
        ref = task.options(
            num_cpus=cpus_per_task,
            num_gpus=1 if needs_gpu else 0,
            max_retries=retries,
            retry_exceptions=False,
        ).remote(r.job())
        refs[ref] = r


def _collect(
    ray, refs: Mapping[Any, BatchRow], records: dict[int, dict[str, Any]], retries: int, progress: bool
) -> None:
    """Wait for the tasks ``refs`` one by one, into ``records``; a task whose worker died more than
    ``retries`` times fails its row."""
    from tqdm import tqdm

    pending = list(refs)
    with tqdm(total=len(pending), desc="videos", unit="video", disable=not progress) as bar:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                r = refs[ref]
                try:
                    rec = ray.get(ref)
                except ray.exceptions.RayError as err:  # the worker died more than `retries` times
                    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                    rec = _unfinished(r, "failed", f"{type(err).__name__} after {retries + 1} attempt(s): {first}")
                records[r.row] = rec
                bar.update(1)


def _report(report_path: Path, manifest: str | os.PathLike, ordered: list[dict[str, Any]], t0: float) -> None:
    """Write the JSON report of the records ``ordered`` (a warning when it cannot be written), then
    print the summary table."""
    counts = {s: sum(x["status"] == s for x in ordered) for s in ("done", "skipped", "failed", "interrupted")}
    try:
        write_report(
            report_path,
            {
                "format": REPORT_FORMAT,
                "manifest": str(Path(os.path.abspath(manifest))),
                "seconds": round(time.monotonic() - t0, 3),
                "counts": counts,
                "rows": ordered,
            },  # fmt: skip
        )
    except OSError as err:
        say(f"warning: cannot write the report {report_path}: {err}")
    print_table(ordered)
    print(f"report: {report_path}")
