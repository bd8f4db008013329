"""The manifest of ``sam2s batch`` (``sam2sapp.batch``): reading it and checking every row before
any work starts.

The manifest is a CSV file (a header line, then one row per video) or a JSON file (a list of
objects), with the columns of :data:`COLUMNS`: ``video``, ``prompts`` and ``output_dir`` are
required; the others are the options of ``sam2s track`` (``engine``, ``model``, ``checkpoint``,
``image_size``, ``precision``, ``memory``, ``device``, ``start``, ``end``) and ``png`` (label
PNGs, default true) and ``overlay`` (an overlay video, default false). An empty cell takes the
command line's value. Relative paths in the manifest are relative to the manifest's folder.
The whole manifest is checked before any work starts (:func:`load_manifest`, :class:`BatchError`):
a JSON manifest is read strictly (``sam2s.strictjson``), and every problem of every row is listed.

A row's ``output_dir`` holds the files of :data:`SEGMENTATION`, :data:`LABELS`, :data:`OVERLAY` and,
last, :data:`RESULT`; :func:`output_state` says whether it is absent, done (a valid ``result.json``,
:func:`read_result`), left incomplete by an earlier run, or foreign (refused).
"""

from __future__ import annotations

import csv
import difflib
import io
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam2s import strictjson
from sam2s.modelspec import ModelSpec
from sam2s.spec import ENGINES, MEMORY_POLICIES, check_image_size, check_precision
from SAM2SSlicerLib.provenance import fileSha256

from .track import CliError, choose_engine

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
_MODEL = ModelSpec()  # the model defaults, as every front end's
DEFAULTS: dict[str, Any] = {
    "engine": None,  # sam2 when a checkpoint is given or cached, else flow (track.choose_engine)
    "model": _MODEL.config,
    "checkpoint": None,
    "image_size": _MODEL.image_size,
    "precision": _MODEL.precision,
    "memory": _MODEL.memory,
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
_LABEL_RE = re.compile(r"^\d{5}\.png$|^provenance\.json$")
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
        return _json_rows(path, text)
    if path.suffix.lower() not in (".csv", ".tsv", ".txt"):
        raise BatchError(f"{path}: a manifest is a .csv or a .json file.")
    return _csv_rows(path, text)


def _json_rows(path: Path, text: str) -> list[dict[str, Any]]:
    """The objects of a JSON manifest ``text`` (strict JSON: ``sam2s.strictjson``); BatchError else."""
    try:
        data = strictjson.loads(text)
    except strictjson.StrictJSONError as err:
        raise BatchError(
            f'{path}: {err}; a JSON manifest is a list of objects, e.g. [{{"video": ..., ...}}].'
        ) from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise BatchError(f'{path}: a JSON manifest is a list of objects, e.g. [{{"video": ..., ...}}].')
    return data


def _csv_rows(path: Path, text: str) -> list[dict[str, Any]]:
    """The rows of a CSV (``.tsv``: tab-separated) manifest ``text``, keys and cells stripped;
    BatchError without a header, with a duplicate column or bad CSV."""
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
        paths, options, errors = _check_row(raw, base, cli, engines)
        out = paths.get("output_dir")
        if out is not None:
            outputs.append((n, out))
        problems += [f"{path.name} row {n}: {e}" for e in errors]
        if not errors:
            result.append(BatchRow(n, paths["video"], paths["prompts"], out, options))
    problems += _shared_output_dirs(path.name, outputs)
    if problems:
        raise BatchError(f"{len(problems)} problem(s) in the manifest {path}:\n  " + "\n  ".join(problems))
    return result


def _check_row(
    raw: dict[Any, Any], base: Path, cli: Mapping[str, Any], engines: dict[tuple, tuple[str, str | None]]
) -> tuple[dict[str, Path], dict[str, Any], list[str]]:
    """One manifest row checked: ``(paths, options, errors)``, the paths of :data:`REQUIRED` that are
    given (absolute), the options over ``cli`` and every problem found (one line each, in the order
    columns, paths, options, files, engine, ``output_dir``). ``engines`` caches the settled engine
    and checkpoint of each ``(engine, model, checkpoint)``."""
    errors = _column_problems(raw)
    paths: dict[str, Path] = {}
    for k in REQUIRED:
        if _given(raw.get(k)):
            try:
                paths[k] = _resolve(base, raw[k], k)
            except ValueError as err:
                errors.append(f"{err}.")
    options, options_ok = _row_options(raw, cli, base, errors)
    for k, file in (("video", False), ("prompts", True)):
        problem = _missing(paths[k], k, file, base) if k in paths else None
        if problem:
            errors.append(problem)
    if options_ok:
        _settle_engine(options, engines, errors)
    out = paths.get("output_dir")
    if out is not None:
        try:
            state, why = output_state(out)
        except OSError as err:
            state, why = "foreign", f"cannot be checked ({err.strerror})"
        if state == "foreign":
            errors.append(f"output_dir {out} {why}; choose a new folder (nothing there is deleted).")
    return paths, options, errors


def _column_problems(raw: dict[Any, Any]) -> list[str]:
    """A row's cells beyond the header (removed from ``raw``), unknown columns and missing required ones."""
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
    return errors


def _row_options(
    raw: Mapping[Any, Any], cli: Mapping[str, Any], base: Path, errors: list[str]
) -> tuple[dict[str, Any], bool]:
    """A row's options: ``cli`` overridden by its given cells, checked alone and together; the
    problems are appended to ``errors``. Returns ``(options, whether they are all valid)``."""
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
    return o, options_ok


def _settle_engine(o: dict[str, Any], engines: dict[tuple, tuple[str, str | None]], errors: list[str]) -> None:
    """Pin a row's ``engine`` and ``checkpoint`` (``track.choose_engine``: sam2 with a given or cached
    checkpoint, else flow), once per ``(engine, model, checkpoint)`` (cached in ``engines``); a
    problem is appended to ``errors``."""
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


def _shared_output_dirs(name: str, outputs: Sequence[tuple[int, Path]]) -> list[str]:
    """The rows (``(row, output_dir)``, of the manifest ``name``) whose ``output_dir`` is an earlier
    row's, or nested in it or around it (symbolic links resolved)."""
    problems: list[str] = []
    seen: dict[Path, int] = {}
    for n, out in outputs:
        real = Path(os.path.realpath(out))
        for other, m in seen.items():
            if real == other or other in real.parents or real in other.parents:
                problems.append(
                    f"{name} row {n}: output_dir {out} is also row {m}'s "
                    f"({'the same folder' if real == other else 'nested'}); give each video its own folder."
                )
        seen[real] = n
    return problems


# ------------------------------------------------------------------------------ output folders
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
