"""``sam2s batch MANIFEST``: track many videos on Ray, one task per video, resumable.

The manifest is a CSV file (a header line, then one row per video) or a JSON file (a list of
objects), with the columns of :data:`COLUMNS`: ``video``, ``prompts`` and ``output_dir`` are
required; the others are the options of ``sam2s track`` (``engine``, ``model``, ``checkpoint``,
``image_size``, ``precision``, ``memory``, ``device``, ``start``, ``end``) and ``png`` (label
PNGs, default true) and ``overlay`` (an overlay video, default false). An empty cell takes the
command line's value. Relative paths in the manifest are relative to the manifest's folder.
The whole manifest is checked before any work starts (:func:`load_manifest`, :class:`BatchError`):
a JSON manifest is read strictly (``sam2s.strictjson``), and every problem of every row is listed.

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
import csv
import difflib
import io
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam2s import strictjson
from sam2s.extras import install_hint
from sam2s.modelspec import ModelSpec
from sam2s.spec import ENGINES, MEMORY_POLICIES, check_image_size, check_precision
from SAM2SSlicerLib.provenance import fileSha256

from .track import CliError, TrackRequest, choose_engine, run_tracking, say

REQUIRED = ("video", "prompts", "output_dir")
OPTIONS = (
    "engine",
    "model",
    "checkpoint",
    "image_size",
    "precision",
    "memory",
    "device",
    "start",
    "end",
    "png",
    "overlay",
)
COLUMNS = REQUIRED + OPTIONS
"""The manifest's columns (keys of a JSON object); any other is an error."""
DEFAULTS: dict[str, Any] = {
    "engine": None,  # sam2 when a checkpoint is given or cached, else flow (track.choose_engine)
    "model": "sam2.1_hiera_t",
    "checkpoint": None,
    "image_size": 1024,
    "precision": "auto",
    "memory": "sam2",
    "device": None,  # cuda when the Ray cluster has GPUs and the engine is sam2, else cpu
    "start": None,
    "end": None,
    "png": True,
    "overlay": False,
}
"""The built-in option values, overridden by the command line, then by the manifest's cells."""
MAX_FRAME = 2**31 - 1
"""The largest frame index (``start``, ``end``) a manifest or the command line may give."""
_RANGES = {"start": (0, MAX_FRAME), "end": (0, MAX_FRAME)}
_CHOICES = {
    "engine": (ENGINES, " (or empty for automatic)"),
    "memory": (MEMORY_POLICIES, ""),
    "device": (("cpu", "cuda"), " (Ray chooses the GPU; empty: cuda when the cluster has GPUs and the engine is sam2)"),
}

SEGMENTATION = "masklets.seg.nrrd"
LABELS = "labels"
OVERLAY = "overlay.mp4"
RESULT = "result.json"
"""The files of one ``output_dir``; ``result.json`` is written last."""
RESULT_FORMAT = "sam2s-batch-result/1"
REPORT_NAME = "batch-report.json"
REPORT_FORMAT = "sam2s-batch-report/1"
_OLD_REPORT_KEYS = {"manifest", "seconds", "counts", "rows"}  # a report written before REPORT_FORMAT
STAGING_TAG = ".sam2s-batch-"
_STAGING_RE = re.compile(r"^\.(?P<name>.+)\.sam2s-batch-(?P<host>.*)-(?P<pid>\d+)-(?P<token>[0-9a-f]+)$")
_LABEL_RE = re.compile(r"^\d{5}\.png$|^provenance\.json$")
RAY_MISSING = (
    "sam2s batch needs Ray: "
    + install_hint("batch", '"ray>=2.9"')
    + " in this environment and on every machine of the cluster."
)
_TRUE, _FALSE = ("1", "true", "yes", "y", "on"), ("0", "false", "no", "n", "off")


class BatchError(CliError):
    """A bad manifest or batch option: printed without a traceback, exit code 2, nothing started."""


@dataclass
class BatchRow:
    """One video of the manifest, with every option resolved (absolute paths).

    ``row`` is the 1-based row number (CSV: data rows after the header; JSON: list position)."""

    row: int
    video: Path
    prompts: Path
    output_dir: Path
    options: dict[str, Any] = field(default_factory=dict)

    def job(self) -> dict[str, Any]:
        """What the Ray task gets: plain, picklable values."""
        return {
            "row": self.row,
            "video": str(self.video),
            "prompts": str(self.prompts),
            "output_dir": str(self.output_dir),
            **self.options,
        }


# ----------------------------------------------------------------------------------- the manifest
def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The manifest's rows as dicts (CSV: strings, cells beyond the header under the key None; JSON:
    any JSON values). BatchError when unreadable."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise BatchError(f"Cannot read the manifest {path}: {err}") from None
    if path.suffix.lower() == ".json":
        try:
            data = strictjson.loads(text)
        except strictjson.StrictJSONError as err:
            raise BatchError(
                f'{path}: {err}; a JSON manifest is a list of objects, e.g. [{{"video": ..., ...}}].'
            ) from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise BatchError(f'{path}: a JSON manifest is a list of objects, e.g. [{{"video": ..., ...}}].')
        return data
    if path.suffix.lower() not in (".csv", ".tsv", ".txt"):
        raise BatchError(f"{path}: a manifest is a .csv or a .json file.")
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    try:
        header = [h.strip() for h in reader.fieldnames or []]
        if not any(header):
            raise BatchError(f"{path}: empty; the first line names the columns, e.g. video,prompts,output_dir.")
        duplicates = sorted({h for h in header if header.count(h) > 1})
        if duplicates:
            raise BatchError(f"{path}: column {', '.join(duplicates)} appears twice in the header.")
        return [
            {(k if k is None else k.strip()): (v.strip() if isinstance(v, str) else v) for k, v in raw.items()}
            for raw in reader
        ]
    except csv.Error as err:
        raise BatchError(
            f"{path} line {reader.reader.line_num}: not valid CSV ({err}); a cell holds at most "
            f"{csv.field_size_limit()} characters, and a quote that opens a cell must close it."
        ) from None


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and value.strip() == "")


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a manifest cell can be of any size)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_int(value: Any, what: str) -> int:
    low, high = _RANGES[what]
    number = int(value) if isinstance(value, str) and re.fullmatch(r"[0-9]{1,19}", value) else value
    if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
        raise ValueError(f"{what} must be a whole number from {low} to {high}, not {_short(value)}")
    return number


def _as_bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ValueError(f"{what} must be true or false, not {_short(value)}")


def _resolve(base: Path, value: Any, what: str) -> Path:
    if not isinstance(value, str) or "\0" in value:
        raise ValueError(f"{what} must be a path (text without NUL characters), not {_short(value)}")
    p = Path(os.path.expanduser(value))
    return Path(os.path.abspath(p if p.is_absolute() else base / p))


def _option(key: str, value: Any, base: Path) -> Any:
    """One option's value from a cell or the command line, converted and checked (ValueError with the
    fix); a relative ``checkpoint`` is made absolute against ``base``."""
    from sam2s.config import CONFIGS

    if key in ("png", "overlay"):
        return _as_bool(value, key)
    if key == "image_size":
        return check_image_size(value)
    if key == "precision":
        return check_precision(value)
    if key in _RANGES:
        return _as_int(value, key)
    if key == "checkpoint":
        return str(_resolve(base, value, key))
    if key == "model":
        if not isinstance(value, str) or value not in CONFIGS:
            raise ValueError(f"unknown model {_short(value)}; choose one of {', '.join(CONFIGS)}")
        return value
    choices, hint = _CHOICES[key]
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{key} must be {', '.join(choices[:-1])} or {choices[-1]}{hint}, not {_short(value)}")
    return value


def _check_together(o: Mapping[str, Any]) -> None:
    """Options that are valid alone but not together (ValueError with the fix)."""
    if o["start"] is not None and o["end"] is not None and o["start"] > o["end"]:
        raise ValueError(f"start {o['start']} is after end {o['end']}")


def _command_line(defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    """:data:`DEFAULTS` overridden by the command line's options (None: not given), checked."""
    options, problems = dict(DEFAULTS), []
    for k in OPTIONS:
        value = (defaults or {}).get(k)
        if value is not None:
            try:
                options[k] = _option(k, value, Path.cwd())
            except ValueError as err:
                problems.append(f"--{k.replace('_', '-')}: {err}")
    if not problems:
        try:
            _check_together(options)
        except ValueError as err:
            problems.append(f"--start/--end: {err}")
    if problems:
        raise BatchError("; ".join(problems) + ".")
    return options


def _missing(path: Path, what: str, file: bool, base: Path) -> str | None:
    """The problem when ``path`` does not exist (or, with ``file``, is not a file), else None."""
    try:
        if path.is_file() if file else path.exists():
            return None
        why = "does not exist"
    except OSError as err:
        why = f"cannot be checked ({err.strerror})"
    return f"{what} {path} {why}; fix the path (relative to {base})."


def load_manifest(path: str | os.PathLike, defaults: Mapping[str, Any] | None = None) -> list[BatchRow]:
    """Read and check a manifest; every problem of every row is reported together.

    Args:
        path: the ``.csv`` (``.tsv``) or ``.json`` manifest (see the module docstring).
        defaults: option values for empty cells (the command line's), over :data:`DEFAULTS`;
            a relative ``checkpoint`` here is relative to the current folder.

    Returns:
        The rows, with absolute paths and every option resolved; ``engine`` and ``checkpoint`` are
        pinned with ``track.choose_engine`` (sam2 with a given or cached checkpoint, else flow).

    Raises:
        BatchError: bad options in ``defaults`` (one line, before the manifest is read); an
            unreadable manifest (not UTF-8; JSON that is not strict JSON -- ``sam2s.strictjson``:
            deeper than 64 levels, integers of more than 19 digits, NaN -- or not a list of objects;
            CSV without a header, with a duplicate column or a cell beyond the CSV field limit); no
            rows. Else every
            problem of every row, one line each: unknown or missing columns, cells beyond the
            header's columns, paths that are not text, each bad option value (a choice not offered,
            ``image_size`` or ``precision`` refused by ``sam2s.spec`` (a multiple of 32 in 64..4096; auto, fp32, bf16), ``start`` / ``end`` not in 0..2**31-1
            or ``start`` after ``end``, ``png`` / ``overlay`` not true or false, ``device`` other
            than cpu or cuda), missing video / prompts / checkpoint files, an ``output_dir`` that is
            a file or holds files a batch does not write, two rows writing the same (or a nested)
            folder.
    """
    path = Path(path)
    base = Path(os.path.abspath(path)).parent
    cli = _command_line(defaults)
    rows = _read_rows(path)
    if not rows:
        raise BatchError(f"{path}: no rows; add one line per video (video,prompts,output_dir).")
    problems: list[str] = []
    result: list[BatchRow] = []
    outputs: list[tuple[int, Path]] = []
    engines: dict[tuple, tuple[str, str | None]] = {}
    for n, raw in enumerate(rows, start=1):
        errors: list[str] = []
        extra = raw.pop(None, None)  # CSV cells beyond the header's columns
        if extra is not None:
            errors.append(f"{len(extra)} cell(s) more than the header has columns; quote a cell that holds a comma.")
        unknown = [k for k in raw if k not in COLUMNS]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, COLUMNS, n=1)
                hints.append(_short(k) + (f" (did you mean {close[0]!r}?)" if close else ""))
            errors.append(f"unknown column {', '.join(hints)}; the columns are {', '.join(COLUMNS)}.")
        missing = [k for k in REQUIRED if not _given(raw.get(k))]
        if missing:
            errors.append(f"{', '.join(missing)} missing; every row needs video, prompts and output_dir.")
        paths: dict[str, Path] = {}
        for k in REQUIRED:
            if _given(raw.get(k)):
                try:
                    paths[k] = _resolve(base, raw[k], k)
                except ValueError as err:
                    errors.append(f"{err}.")
        o = dict(cli)
        options_ok = True
        for k in OPTIONS:
            if _given(raw.get(k)):
                try:
                    o[k] = _option(k, raw[k].strip() if isinstance(raw[k], str) else raw[k], base)
                except ValueError as err:
                    errors.append(f"{err}.")
                    options_ok = False
        if options_ok:
            try:
                _check_together(o)
            except ValueError as err:
                errors.append(f"{err}.")
                options_ok = False
        for k, file in (("video", False), ("prompts", True)):
            problem = _missing(paths[k], k, file, base) if k in paths else None
            if problem:
                errors.append(problem)
        if options_ok:
            key = (o["engine"], o["model"], o["checkpoint"])
            try:
                if key not in engines:
                    spec = ModelSpec(engine=o["engine"] or "sam2", config=o["model"], checkpoint=o["checkpoint"])
                    settled = choose_engine(spec, auto=o["engine"] is None)
                    engines[key] = settled.engine, settled.checkpoint
                o["engine"], o["checkpoint"] = engines[key]
            except CliError as err:
                errors.append(str(err))
            except OSError as err:
                errors.append(f"checkpoint {o['checkpoint']} cannot be checked ({err.strerror}); fix the path.")
        out = paths.get("output_dir")
        if out is not None:
            outputs.append((n, out))
            try:
                state, why = output_state(out)
            except OSError as err:
                state, why = "foreign", f"cannot be checked ({err.strerror})"
            if state == "foreign":
                errors.append(f"output_dir {out} {why}; choose a new folder (nothing there is deleted).")
        problems += [f"{path.name} row {n}: {e}" for e in errors]
        if not errors:
            result.append(BatchRow(n, paths["video"], paths["prompts"], out, o))
    seen: dict[Path, int] = {}
    for n, out in outputs:
        real = Path(os.path.realpath(out))
        for other, m in seen.items():
            if real == other or other in real.parents or real in other.parents:
                problems.append(
                    f"{path.name} row {n}: output_dir {out} is also row {m}'s "
                    f"({'the same folder' if real == other else 'nested'}); give each video its own folder."
                )
        seen[real] = n
    if problems:
        raise BatchError(f"{len(problems)} problem(s) in the manifest {path}:\n  " + "\n  ".join(problems))
    return result


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


def read_result(output_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``output_dir``'s ``result.json`` when it is valid: readable, of this format, and every file it
    lists exists with the listed size and SHA-256. Else None (absent, incomplete or changed)."""
    folder = Path(output_dir)
    try:
        record = strictjson.loads((folder / RESULT).read_text(encoding="utf-8"))
        files = record["files"]
        if record.get("format") != RESULT_FORMAT or not isinstance(files, list) or not files:
            return None
        for f in files:
            rel = Path(f["path"])
            if rel.is_absolute() or ".." in rel.parts:
                return None
            p = folder / rel
            if not p.is_file() or p.stat().st_size != f["bytes"] or fileSha256(p) != f["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def _only_batch_files(folder: Path) -> str | None:
    """None when ``folder`` holds only what a batch writes, else what else it holds."""
    for entry in sorted(folder.iterdir()):
        if entry.name in (SEGMENTATION, OVERLAY, RESULT) and entry.is_file() and not entry.is_symlink():
            continue
        if entry.name == LABELS and entry.is_dir() and not entry.is_symlink():
            other = [p.name for p in entry.iterdir() if not (_LABEL_RE.match(p.name) and p.is_file())]
            if not other:
                continue
            return f"holds {LABELS}/{other[0]}, which a batch does not write"
        return f"holds {entry.name}, which a batch does not write"
    return None


def output_state(output_dir: str | os.PathLike) -> tuple[str, str]:
    """``(state, why)`` of a row's ``output_dir``: ``"absent"``; ``"done"`` (valid ``result.json``);
    ``"incomplete"`` (only files a batch writes, no valid ``result.json``: replaced by the next
    run); ``"foreign"`` (a file, or a folder with other files: refused)."""
    folder = Path(output_dir)
    if not folder.exists() and not folder.is_symlink():
        return "absent", ""
    if folder.is_symlink() or not folder.is_dir():
        return "foreign", "exists and is not a folder"
    if read_result(folder) is not None:
        return "done", ""
    other = _only_batch_files(folder)
    if other:
        return "foreign", f"exists without a valid {RESULT} and {other}"
    return "incomplete", f"left by an incomplete run (no valid {RESULT})"


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
            model = ModelSpec(
                engine=job["engine"],
                config=job["model"],
                checkpoint=job["checkpoint"],
                image_size=job["image_size"],
                precision=job["precision"],
                device=job["device"],
                memory=job["memory"],
            )
            request = TrackRequest(
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
            result = run_tracking(request)
            seconds = round(time.monotonic() - t0, 3)
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

        started_here = submitted = False
        refs: dict[Any, BatchRow] = {}
        try:
            if todo:
                if not ray.is_initialized():
                    import logging

                    ray.init(
                        address=address,
                        num_cpus=None if address else num_cpus,
                        include_dashboard=False,
                        logging_level=logging.WARNING,
                        log_to_driver=False,
                    )
                    started_here = True
                gpus = ray.cluster_resources().get("GPU", 0)
                for r in todo:
                    o = r.options
                    if o["device"] is None:
                        o["device"] = "cuda" if gpus and o["engine"] == "sam2" else "cpu"
                    if o["device"].startswith("cuda") and not gpus:
                        raise BatchError(f"row {r.row}: device {o['device']}, but the Ray cluster has no GPU; use cpu.")
                task = ray.remote(track_video)
                submitted = True
                for r in todo:
                    needs_gpu = r.options["device"].startswith("cuda") and r.options["engine"] == "sam2"
                    ref = task.options(
                        num_cpus=cpus_per_task,
                        num_gpus=1 if needs_gpu else 0,
                        max_retries=retries,
                        retry_exceptions=False,
                    ).remote(r.job())
                    refs[ref] = r
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
                                error = f"{type(err).__name__} after {retries + 1} attempt(s): {first}"
                                rec = {"row": r.row, "video": str(r.video), "output_dir": str(r.output_dir),
                                       "status": "failed", "frames": None, "objects": None, "seconds": None,
                                       "error": error}  # fmt: skip
                            records[r.row] = rec
                            bar.update(1)
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
                    records[r.row] = {"row": r.row, "video": str(r.video), "output_dir": str(r.output_dir),
                                      "status": "interrupted", "frames": None, "objects": None, "seconds": None,
                                      "error": "interrupted"}  # fmt: skip
            for r in todo:
                records.setdefault(r.row, {"row": r.row, "video": str(r.video), "output_dir": str(r.output_dir),
                                           "status": "interrupted", "frames": None, "objects": None, "seconds": None,
                                           "error": "not started"})  # fmt: skip
            raise
        finally:
            ordered = [records[r.row] for r in rows if r.row in records]
            if submitted or not todo:
                counts = {
                    s: sum(x["status"] == s for x in ordered) for s in ("done", "skipped", "failed", "interrupted")
                }
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
            if started_here:
                ray.shutdown()
        return 1 if any(x["status"] == "failed" for x in records.values()) else 0
