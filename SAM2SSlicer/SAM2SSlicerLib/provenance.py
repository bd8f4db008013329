"""Provenance of every output: the engine, model, checkpoint, settings, prompts and frames that made it.

Where a :class:`Provenance` goes: a ``.seg.nrrd``: the segment tag :data:`PROVENANCE_KEY` of each
segment the run made (:func:`segmentTag`); COCO: ``info["provenance"]`` (:func:`cocoInfo`); a folder
(label PNGs, statistics): :data:`PROVENANCE_FILE`; a batch ``result.json``: its ``"provenance"``; a
Slicer segmentation node: its attribute and segment tags :data:`PROVENANCE_KEY` (:func:`setNodeProvenance`).

Why segment tags: Slicer's ``vtkMRMLSegmentationStorageNode`` (``Libs/MRML/Core/``) reads and writes
only its own ``Segmentation_*`` / ``Segment<N>_*`` NRRD fields, so any other field is lost when Slicer
saves the file again, while tags are kept: ``GetSegmentTagsAsString`` writes ``key:value|`` sorted by key,
``SetSegmentTagsFromString`` splits at ``|`` and each tag at its first ``:``. The JSON therefore has no
``|`` (written as the JSON escape ``\\u007c``) and no newline (:meth:`Provenance.toJson`).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sam2s import __version__ as SAM2S_VERSION
from sam2s import strictjson
from sam2s.modelspec import ModelSpec
from sam2s.serving.steps import MORE, Steps, drive

__all__ = [
    "PROVENANCE_FILE",
    "PROVENANCE_KEY",
    "SCHEMA",
    "Provenance",
    "ProvenanceError",
    "checkProvenance",
    "cocoInfo",
    "fileSha256",
    "folderPattern",
    "makeProvenance",
    "nodeProvenance",
    "readProvenance",
    "readSegmentProvenance",
    "runDate",
    "segmentTag",
    "setNodeProvenance",
    "writeProvenanceFile",
]

PROVENANCE_FILE = "provenance.json"
"""The provenance file of an output folder (label PNGs, statistics)."""
PROVENANCE_KEY = "SAM2S.Provenance"
"""The segment tag (in ``.seg.nrrd``) and the segmentation node attribute holding the JSON."""
SCHEMA = "sam2s.provenance/1"
"""``"schema"`` of the JSON form; another value is refused (:meth:`Provenance.fromDict`)."""
BLOCK_BYTES = 1 << 20
"""Files are hashed in blocks of 1 MiB."""


class ProvenanceError(ValueError):
    """An output has no provenance, or one that cannot be read; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Provenance:
    """What made an output. Settings that do not apply (the ``flow`` engine has no config,
    checkpoint, image size, precision or memory policy; prompts kept only in the Slicer scene) are None.

    Attributes:
        engine: ``"sam2"`` or ``"flow"``. config: the model config, e.g. ``"sam2.1_hiera_t"``.
        checkpointName / checkpointSha256: the checkpoint's file name and SHA-256 (64 hex digits).
        imageSize: the model's input side in pixels. precision: ``fp32`` / ``bf16`` (``auto``
            when not resolved). device: e.g. ``"cpu"``, ``"cuda:0"``. memory: ``sam2`` / ``divemem``;
            memoryParams: its keyword parameters (JSON values).
        promptsName / promptsSha256: the prompts file's name and SHA-256.
        firstFrame, lastFrame: the tracked frame range (0-based, inclusive).
        passes: ``((start, end, reverse), ...)`` in the order they ran (frames, 0-based).
        date: when the run started, UTC ISO 8601. sam2sVersion: ``sam2s.__version__``.
    """

    engine: str
    config: str | None
    checkpointName: str | None
    checkpointSha256: str | None
    imageSize: int | None
    precision: str | None
    device: str | None
    memory: str | None
    promptsName: str | None
    promptsSha256: str | None
    firstFrame: int
    lastFrame: int
    passes: tuple[tuple[int, int, bool], ...]
    date: str
    memoryParams: Mapping[str, Any] | None = dataclasses.field(default=None, hash=False)
    sam2sVersion: str = SAM2S_VERSION

    def toDict(self) -> dict[str, Any]:
        """The JSON form: ``{"schema": SCHEMA, "sam2s_version": str, "passes": [[start, end, reverse], ...], ...}``."""
        fields = {_snake(k): v for k, v in dataclasses.asdict(self).items()}
        return json.loads(json.dumps({"schema": SCHEMA, **fields}))

    def toJson(self) -> str:
        """The JSON form as compact ASCII text with sorted keys (no newline, no ``|``)."""
        return json.dumps(self.toDict(), sort_keys=True, separators=(",", ":")).replace("|", "\\u007c")

    @classmethod
    def fromDict(cls, data: Any) -> Provenance:
        """The record of a JSON form (:meth:`toDict`); unknown keys are ignored.

        Raises:
            ValueError: not a dict, another ``schema``, a missing key or a value of the wrong type.
        """
        if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
            schema = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(f"provenance schema {schema!r:.60} is not {SCHEMA!r}")
        missing = [k for k in map(_snake, (f.name for f in dataclasses.fields(cls))) if k not in data]
        missing = [k for k in missing if k != "memory_params"]
        if missing:
            raise ValueError(f"provenance has no {missing}")
        return cls(**{f.name: _checked(f.name, data.get(_snake(f.name))) for f in dataclasses.fields(cls)})


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _checked(name: str, value: Any) -> Any:
    """``value`` of field ``name`` in its Python form; ValueError when its type is wrong."""
    isInt = isinstance(value, int) and not isinstance(value, bool)
    if name == "passes":
        if isinstance(value, (list, tuple)) and all(
            isinstance(p, (list, tuple)) and len(p) == 3 and all(isinstance(v, int) for v in p) for p in value
        ):
            return tuple((int(s), int(e), bool(r)) for s, e, r in value)
    elif name == "memoryParams":
        if value is None or isinstance(value, Mapping):
            return value
    elif name in ("firstFrame", "lastFrame", "imageSize"):
        if isInt or (value is None and name == "imageSize"):
            return value
    elif isinstance(value, str) or (value is None and name not in ("engine", "date", "sam2sVersion")):
        return value
    raise ValueError(f"provenance {_snake(name)!r} is {value!r:.60}")


_HASHES: dict[tuple[str, int, int], str] = {}


def fileSha256(path: str | os.PathLike, cache: bool = False) -> str:
    """The SHA-256 (64 lowercase hex digits) of a file, read in 1 MiB blocks. With ``cache``, the
    digest is kept in this process per (real path, size in bytes, mtime in ns) (for checkpoints).

    Raises:
        OSError: the file cannot be read (FileNotFoundError, PermissionError, ...).
    """
    return drive(fileSha256Steps(path, cache))


def fileSha256Steps(path: str | os.PathLike, cache: bool = False) -> Steps:
    """:func:`fileSha256` as steps (``sam2s.serving.steps``): ``MORE`` after each block, so that a
    GUI timer hashes a checkpoint of hundreds of MB a few blocks per tick (a tracking job does,
    before its first write needs the provenance)."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = (real, stat.st_size, stat.st_mtime_ns)
    if cache and key in _HASHES:
        return _HASHES[key]
    digest = hashlib.sha256()
    with open(real, "rb") as file:
        while block := file.read(BLOCK_BYTES):
            digest.update(block)
            yield MORE
    if cache:
        _HASHES[key] = digest.hexdigest()
    return digest.hexdigest()


def runDate() -> str:
    """Now, UTC ISO 8601 to the second; or, when ``$SOURCE_DATE_EPOCH`` is set (seconds since 1970,
    the reproducible-builds.org convention), that time, so that reruns write identical files.

    Raises:
        ValueError: ``$SOURCE_DATE_EPOCH`` is not a whole number of seconds.
    """
    fixed = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.datetime.now(datetime.timezone.utc)
    if fixed:
        if not fixed.strip().isdigit():
            raise ValueError(f"SOURCE_DATE_EPOCH={fixed!r:.40} is not a whole number of seconds since 1970")
        when = datetime.datetime.fromtimestamp(int(fixed), datetime.timezone.utc)
    return when.isoformat(timespec="seconds")


def makeProvenance(
    model: ModelSpec,
    *,
    promptsPath: str | os.PathLike | None,
    firstFrame: int,
    lastFrame: int,
    passes: Iterable[Sequence],
    promptsData: bytes | None = None,
    date: str | None = None,
) -> Provenance:
    """The provenance of a run of ``model`` (a ``sam2s.ModelSpec``, ideally with its precision and
    device resolved), hashing its checkpoint when it is a file here (cached, :func:`fileSha256`; a
    tracking server's file is recorded by name only) and the prompts file (or ``promptsData``, the
    prompts document's bytes, named ``promptsPath``). The flow engine records no model settings.

    Args:
        passes: ``[(start, end, reverse), ...]`` (frames, 0-based). date: UTC ISO 8601; default
            :func:`runDate`.

    Raises:
        ValueError: a ``model`` field ``ModelSpec.validate`` refuses. OSError: a file cannot be read.
    """
    model.validate()
    sam2 = model.engine == "sam2"
    checkpoint = Path(model.checkpoint) if sam2 and model.checkpoint else None
    prompts = None if promptsPath is None else Path(promptsPath)
    if promptsData is not None:
        promptsSha = hashlib.sha256(promptsData).hexdigest()
    else:
        promptsSha = None if prompts is None else fileSha256(prompts)
    values = dict(
        engine=model.engine, config=model.config if sam2 else None, imageSize=model.input_size if sam2 else None,
        precision=model.precision if sam2 else None, memory=model.memory if sam2 else None,
        device=model.device if sam2 else "cpu",
        checkpointName=None if checkpoint is None else checkpoint.name,
        checkpointSha256=fileSha256(checkpoint, cache=True) if checkpoint is not None and checkpoint.is_file() else None,
        promptsName=None if prompts is None else prompts.name, promptsSha256=promptsSha,
        firstFrame=firstFrame, lastFrame=lastFrame, passes=[list(p) for p in passes],
        memoryParams=dict(model.memory_params) if sam2 and model.memory_params else None,
        date=date or runDate(),
    )  # fmt: skip
    return Provenance(**{k: _checked(k, v) for k, v in values.items()})


# ------------------------------------------------------------------------------------- writers
def writeProvenanceFile(folder: str | os.PathLike, prov: Provenance) -> Path:
    """Write :data:`PROVENANCE_FILE` (UTF-8 JSON) into ``folder`` (an existing folder, e.g. the
    staging folder of ``outputs.OutputSet.writeFolder``); returns its path.

    Raises:
        OSError: the file cannot be written.
    """
    path = Path(folder) / PROVENANCE_FILE
    path.write_text(json.dumps(prov.toDict(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def folderPattern(pattern: str) -> str:
    """An output folder's file-name pattern (``outputs.OutputSet.addFolder``) that also allows
    :data:`PROVENANCE_FILE`, e.g. ``folderPattern(export.labelPngPattern())``."""
    return rf"(?:{pattern})|{re.escape(PROVENANCE_FILE)}"


def cocoInfo(prov: Provenance) -> dict[str, Any]:
    """The entries to merge into a COCO document's ``info``: ``{"provenance": prov.toDict()}``."""
    return {"provenance": prov.toDict()}


def segmentTag(prov: Provenance) -> tuple[str, str]:
    """``(PROVENANCE_KEY, JSON)``: the segment tag of a ``.seg.nrrd`` segment. Slicer writes the
    tags of a segment as ``key:value|`` sorted by key; the value has no ``|`` and no newline, and
    in the header teem writes its ``\\`` as ``\\\\``."""
    return PROVENANCE_KEY, prov.toJson()


def setNodeProvenance(segmentationNode, prov: Provenance, segmentIds: Iterable[str] | None = None) -> None:
    """Record ``prov`` on a ``vtkMRMLSegmentationNode``: the node attribute :data:`PROVENANCE_KEY`
    (the last run) and the segment tag :func:`segmentTag` of ``segmentIds`` (default all
    segments), which Slicer's writer saves in ``.seg.nrrd``.

    Raises:
        KeyError: an unknown segment ID.
    """
    segmentation = segmentationNode.GetSegmentation()
    ids = list(segmentation.GetSegmentIDs()) if segmentIds is None else list(segmentIds)
    missing = [s for s in ids if segmentation.GetSegment(s) is None]
    if missing:
        raise KeyError(f"Segmentation '{segmentationNode.GetName()}' has no segments {missing}.")
    key, value = segmentTag(prov)
    for segmentId in ids:
        segmentation.GetSegment(segmentId).SetTag(key, value)
    segmentationNode.SetAttribute(PROVENANCE_KEY, value)


def nodeProvenance(segmentationNode) -> Provenance | None:
    """The provenance recorded on a segmentation node by :func:`setNodeProvenance`, or None.

    Raises:
        ProvenanceError: the attribute is not a provenance record of this version.
    """
    value = segmentationNode.GetAttribute(PROVENANCE_KEY)
    return None if not value else _parse(value, f"segmentation node '{segmentationNode.GetName()}'")


# ------------------------------------------------------------------------------------- readers
def _parse(text: str | bytes | Any, where: str) -> Provenance:
    try:
        return Provenance.fromDict(strictjson.loads(text) if isinstance(text, (str, bytes)) else text)
    except ValueError as error:
        raise ProvenanceError(
            f"{where}: its provenance cannot be read ({error}); it was written by an older version or another tool."
        ) from None


def readSegmentProvenance(path: str | os.PathLike) -> dict[str, Provenance | None]:
    """``{segment ID: provenance or None}`` of a ``.seg.nrrd`` (only its header is read).

    Raises:
        OSError: the file cannot be read. ProvenanceError: not a NRRD file, or a tag that is not
            a provenance record of this version.
    """
    from . import export

    try:
        fields = export.segmentHeaderFields(os.fspath(path))
    except ValueError as error:
        raise ProvenanceError(str(error)) from None
    out: dict[str, Provenance | None] = {}
    for index in sorted(fields):
        segment = fields[index]
        found = None
        for tag in (segment.get("Tags") or "").split("|"):
            key, _, value = tag.partition(":")
            if key == PROVENANCE_KEY:
                found = _parse(value, f"{path}, segment {index}")
        out[segment.get("ID") or str(index)] = found
    return out


def readProvenance(path: str | os.PathLike) -> Provenance:
    """The provenance of an output: a ``.seg.nrrd`` (the record its segments share), a ``.json``
    (a COCO file's ``info["provenance"]``, a batch ``result.json``'s ``"provenance"``, or a
    :data:`PROVENANCE_FILE`), or a folder (its :data:`PROVENANCE_FILE`, else its ``result.json``).

    Raises:
        FileNotFoundError / OSError: the file cannot be read. ProvenanceError: no provenance
            (written by an older version or another tool), an unreadable one, or segments of a
            ``.seg.nrrd`` made by different runs.
    """
    path = Path(path)
    if str(path).lower().endswith(".seg.nrrd"):
        records = readSegmentProvenance(path)
        distinct = {p for p in records.values() if p is not None}
        if len(distinct) != 1:
            why = "no segment records" if not distinct else f"its segments record {len(distinct)} different runs in"
            raise ProvenanceError(
                f"{path}: {why} provenance (tag {PROVENANCE_KEY}); it was written by an older version or "
                "another tool, or edited; check the segments with readSegmentProvenance."
            )
        return distinct.pop()
    if path.is_dir():
        found = [p for p in (path / PROVENANCE_FILE, path / "result.json") if p.is_file()]
        if not found:
            raise ProvenanceError(
                f"{path} has no {PROVENANCE_FILE}; it was written by an older version or another tool."
            )
        path = found[0]
    try:
        doc = strictjson.loads(path.read_bytes())
    except ValueError as error:
        raise ProvenanceError(f"{path} is not a JSON file ({error}).") from None
    if isinstance(doc, dict) and "schema" not in doc:
        info = doc.get("info")
        doc = info.get("provenance") if isinstance(info, dict) and "provenance" in info else doc.get("provenance")
    if doc is None:
        raise ProvenanceError(
            f"{path} records no provenance (no info.provenance or provenance); it was written by an older "
            "version or another tool."
        )
    return _parse(doc, str(path))


def checkProvenance(
    path: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    promptsPath: str | os.PathLike | None = None,
    **settings: Any,
) -> list[str]:
    """Whether an output (see :func:`readProvenance`) was made with the given checkpoint and
    prompts file (compared by SHA-256) and ``settings``: any of ``engine``, ``config``,
    ``imageSize``, ``precision``, ``device``, ``memory``, ``memoryParams``, ``firstFrame``,
    ``lastFrame``, ``passes`` (``[(start, end, reverse), ...]``); a setting not given is not checked.

    Returns:
        One line per mismatch, e.g. ``"out.json: image size: recorded 1024, given 512"``; [] when
        everything given matches. In a ``.seg.nrrd`` every segment is checked, and segments
        without provenance are a mismatch.

    Raises:
        TypeError: an unknown setting. OSError: a file cannot be read. ProvenanceError: the
            output has no readable provenance.
    """
    known = {f.name for f in dataclasses.fields(Provenance)} - {"date", "sam2sVersion"}
    unknown = set(settings) - known
    if unknown:
        raise TypeError(f"checkProvenance: unknown settings {sorted(unknown)}; use {sorted(known)}")
    given = {k: (repr(v), _checked(k, v if k != "passes" else [list(p) for p in v])) for k, v in settings.items()}
    for name, file in (("checkpoint", checkpoint), ("prompts", promptsPath)):
        if file is not None:
            sha = fileSha256(file, cache=name == "checkpoint")
            given[f"{name}Sha256"] = (f"{Path(file).name} (sha256 {sha[:12]})", sha)
    untagged: list[str] = []
    byRun: dict[Provenance, list[str]] = {}
    if str(path).lower().endswith(".seg.nrrd"):
        for segmentId, prov in readSegmentProvenance(path).items():
            (untagged if prov is None else byRun.setdefault(prov, [])).append(segmentId)
        if not byRun:
            readProvenance(path)  # raises the ProvenanceError
    else:
        byRun[readProvenance(path)] = []
    lines = [f"{path}: segments {untagged} record no provenance"] if untagged else []
    for prov, segmentIds in byRun.items():
        where = f"{path} (segments {segmentIds})" if len(byRun) > 1 else str(path)
        for name, (shown, value) in given.items():
            recorded = getattr(prov, name)
            if recorded != value:
                if name.endswith("Sha256"):
                    fileName = getattr(prov, name.replace("Sha256", "Name"))
                    name, recorded = name[:-6], "none" if recorded is None else f"{fileName} (sha256 {recorded[:12]})"
                else:
                    recorded = repr(recorded)
                lines.append(f"{where}: {_snake(name).replace('_', ' ')}: recorded {recorded}, given {shown}")
    return lines
