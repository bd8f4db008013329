"""The prompts file: which objects to track and how each is prompted (JSON).

Format (pixels of the original frames, x right, y down; frame indices start at 0)::

    {"objects": [
      {"id": 1, "name": "gallbladder", "color": [0.9, 0.8, 0.1],
       "prompts": [
         {"frame": 0, "points": [[451, 137]], "labels": [1]},
         {"frame": 0, "box": [543, 230, 587, 273]},
         {"frame": 5, "mask": "masks/obj1_f5.png"}]}]}

- ``id``: an integer in ``MIN_OBJECT_ID..MAX_OBJECT_ID`` = 1..254, unique (the label value in
  exported label images: 8-bit label PNGs use 0 for the background and 255 for void pixels, as
  DAVIS does, so neither can name an object).
- ``name``: optional text (default ``"object <id>"``); ``color``: optional ``[r, g, b]`` floats in
  0..1 (display colour).
- ``prompts``: one or more; each has a ``frame`` and at least one of ``points`` (``[[x, y], ...]``
  with ``labels``, one per point: 1 = positive, inside the object, 0 = negative), ``box``
  (``[x0, y0, x1, y1]``, x0 < x1, y0 < y1) and ``mask`` (a PNG path relative to the JSON file;
  nonzero pixels = object; its size must be the frame size). Points and a box may be combined
  in one prompt.
- Per object and frame: at most one ``box`` and at most one ``mask`` (SAM 2 takes one box and
  one mask input per object and frame; a second one is an error rather than silently replacing
  the first). Points of several prompts on the same frame are all kept (a tracker gets them
  together, in file order). A mask together with points and/or a box on the same frame is
  allowed: the mask is applied first, and the clicks and box then refine that mask, as SAM 2
  does (Meta's ``SAM2VideoPredictor.add_new_points_or_box`` after ``add_new_mask`` feeds the
  previous mask logits to the decoder together with the clicks; ``VideoTracker`` does the same).
- Unknown keys are errors (they are usually typos).
- Mask PNGs are checked before their pixels are decoded: an image above PIL's decompression-bomb
  limit (``PIL.Image.MAX_IMAGE_PIXELS``) or, when the frame size is known, of another size than
  the frames is refused. The JSON is read strictly (``sam2s.strictjson``): ``NaN`` / ``Infinity``,
  numbers that overflow a float, integers of more than 19 digits and nesting deeper than 64
  levels are refused.

``load_prompts`` reads and checks a file, ``validate`` checks objects against a video (frame
count, frame size) once it is known, ``dump_prompts`` writes the format.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sam2s import strictjson
from sam2s.frames import ImageSizeError, open_image
from sam2s.session import MAX_OBJECT_ID, MIN_OBJECT_ID, PromptError

OBJECT_KEYS = ("id", "name", "color", "prompts")
PROMPT_KEYS = ("frame", "points", "labels", "box", "mask")
TOP_KEYS = ("objects",)


class PromptsFileError(PromptError):
    """An invalid prompts file; the message names the file, object, prompt and field, and what is
    expected there."""


@dataclass
class Prompt:
    """One prompt of one object on one frame.

    Attributes:
        frame: frame index (0-based).
        points: ``(N, 2)`` float64 pixel coordinates ``(x, y)``, x right, y down, or None.
        labels: ``(N,)`` int64, 1 = positive, 0 = negative, one per point, or None.
        box: ``(4,)`` float64 ``[x0, y0, x1, y1]`` in pixels, or None.
        mask: ``(H, W)`` bool mask (True = object), or None.
        mask_path: the PNG the mask was read from (absolute), or where ``dump_prompts`` writes it
            (absolute, or relative to the JSON file's folder), or None.
    """

    frame: int
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask: np.ndarray | None = None
    mask_path: Path | None = None


@dataclass
class ObjectPrompts:
    """An object to track: its id (``MIN_OBJECT_ID..MAX_OBJECT_ID`` = 1..254), display name,
    optional RGB colour (floats 0..1) and prompts."""

    id: int
    name: str
    color: tuple[float, float, float] | None = None
    prompts: list[Prompt] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- helpers
def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _is_finite_number(v: Any) -> bool:
    """A number that is finite as a float64 (an integer of 2**1024 or more is not: it overflows)."""
    if not _is_number(v):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def _short(v: Any, limit: int = 60) -> str:
    try:
        s = json.dumps(v.tolist() if isinstance(v, np.ndarray) else v)
    except (TypeError, ValueError):
        s = repr(v)
    except RecursionError:
        s = f"<{type(v).__name__} nested too deeply to show>"
    return s if len(s) <= limit else s[: limit - 3] + "..."


class _Where:
    """Builds error messages naming the file, the object and the prompt."""

    def __init__(self, source: str | None) -> None:
        self.source = source

    def error(
        self, msg: str, obj: int | None = None, obj_id: Any = None, prompt: int | None = None, key: str | None = None
    ) -> PromptsFileError:
        parts = [self.source or "prompts"]
        if obj is not None:
            parts.append(f"objects[{obj}]" + (f" (id {obj_id})" if obj_id is not None else ""))
        if prompt is not None:
            parts.append(f"prompts[{prompt}]")
        if key is not None:
            parts.append(f'"{key}"')
        return PromptsFileError(": ".join(parts) + ": " + msg)


def _unknown_keys(d: dict, allowed: Sequence[str]) -> str | None:
    bad = [k for k in d if k not in allowed]
    if not bad:
        return None
    hints = []
    for k in bad:
        close = difflib.get_close_matches(str(k), allowed, n=1)
        hints.append(f'"{k}"' + (f' (did you mean "{close[0]}"?)' if close else ""))
    return f"unknown key {', '.join(hints)}; allowed keys are {', '.join(allowed)}."


ID_RANGE_HINT = (
    f"ids must be integers in {MIN_OBJECT_ID}..{MAX_OBJECT_ID}: they are the label values of 8-bit label "
    "PNGs, where 0 is the background and 255 marks void pixels (DAVIS)"
)


def _id_ok(v: Any) -> bool:
    return _is_int(v) and MIN_OBJECT_ID <= v <= MAX_OBJECT_ID


class _MaskImageError(ValueError):
    """A mask image refused before or while decoding; the message is complete."""


def _read_mask(path: Path, frame_size: tuple[int, int] | None = None) -> np.ndarray:
    """``(H, W)`` bool, nonzero = object.

    The header is checked before any pixel is decoded: more pixels than PIL's decompression-bomb
    limit ``PIL.Image.MAX_IMAGE_PIXELS``, or a size other than ``frame_size = (H, W)`` when
    given, raise ``_MaskImageError``. Raises OSError / ValueError for unreadable images.
    """
    try:
        with open_image(path) as im:
            w, h = im.size
            if frame_size is not None and (h, w) != tuple(frame_size):
                raise _MaskImageError(
                    f"mask image {path} is {w}x{h} (W x H) but the frames are {frame_size[1]}x{frame_size[0]}; "
                    "save the mask at the frame size."
                )
            mode = im.mode
            im.load()
            a = np.asarray(im)
    except ImageSizeError as e:
        raise _MaskImageError(f"mask image {e}: save the mask at the frame size.") from e
    if a.ndim == 3:
        if mode in ("LA", "La", "PA"):
            a = a[..., 0]
        else:  # RGB(A): nonzero colour (alpha ignored)
            a = a[..., :3].any(axis=-1)
    if a.ndim != 2:
        raise ValueError(f"unexpected image shape {a.shape}")
    return a != 0


def _parse_points(p: dict, err) -> tuple[np.ndarray | None, np.ndarray | None]:
    has_pts, has_lab = "points" in p, "labels" in p
    if not has_pts and not has_lab:
        return None, None
    if not has_pts:
        raise err('"labels" without "points": give "points": [[x, y], ...] with one label per point.', "labels")
    pts = p["points"]
    ok = (
        isinstance(pts, list)
        and len(pts) > 0
        and all(isinstance(q, list) and len(q) == 2 and all(_is_finite_number(c) for c in q) for q in pts)
    )
    if not ok:
        raise err(f"expected a non-empty list of [x, y] pixel pairs, shape (N, 2); got {_short(pts)}.", "points")
    points = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    if not has_lab:
        raise err(f'missing "labels": give one label per point (1 = positive, 0 = negative), {len(points)} in all.')
    lab = p["labels"]
    if not isinstance(lab, list) or not all(_is_int(v) and v in (0, 1) for v in lab):
        raise err(f"expected a list of 0/1 integers (1 = positive, 0 = negative); got {_short(lab)}.", "labels")
    if len(lab) != len(points):
        raise err(f"{len(lab)} labels for {len(points)} points: give exactly one label per point.", "labels")
    return points, np.asarray(lab, dtype=np.int64)


def _parse_box(p: dict, err) -> np.ndarray | None:
    if "box" not in p:
        return None
    b = p["box"]
    if not (isinstance(b, list) and len(b) == 4 and all(_is_finite_number(v) for v in b)):
        raise err(f"expected 4 numbers [x0, y0, x1, y1] in pixels; got {_short(b)}.", "box")
    box = np.asarray(b, dtype=np.float64)
    if not (box[0] < box[2] and box[1] < box[3]):
        raise err(f"box {_short(b)} is empty or reversed: it needs x0 < x1 and y0 < y1.", "box")
    return box


def _parse_mask(
    p: dict, err, base: Path, frame_size: tuple[int, int] | None = None
) -> tuple[np.ndarray | None, Path | None]:
    if "mask" not in p:
        return None, None
    m = p["mask"]
    if not isinstance(m, str) or not m:
        raise err(f"expected the path of a PNG mask (relative to the prompts file); got {_short(m)}.", "mask")
    path = Path(m) if os.path.isabs(m) else base / m
    try:
        found = path.is_file()
    except (OSError, ValueError) as e:  # e.g. a name too long for the file system, a NUL character
        raise err(f"mask file {_short(m)} cannot be used ({e}); give the path of a PNG file.", "mask") from None
    if not found:
        raise err(f"mask file {path} does not exist (paths are relative to the prompts file's folder).", "mask")
    try:
        mask = _read_mask(path, frame_size)
    except _MaskImageError as e:
        raise err(str(e), "mask") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise err(f"cannot read mask image {path} ({e}); expected a grey, palette or RGB PNG.", "mask") from e
    return mask, path.absolute()


def _second_message(key: str, frame: int, first: int) -> str:
    what = {"box": "one box", "mask": "one mask"}[key]
    return (
        f'a second "{key}" for frame {frame}: prompts[{first}] already gives this object a {key} there, and SAM 2 '
        f"takes {what} per object and frame (the second would silently replace the first). Keep one "
        + ('(extra clicks go in "points").' if key == "box" else "(combine the masks into one PNG).")
    )


# ------------------------------------------------------------------------------------ public API
def parse_prompts(
    data: Any,
    base_dir: str | Path = ".",
    source: str | None = None,
    frame_size: tuple[int, int] | None = None,
) -> list[ObjectPrompts]:
    """Objects from an already decoded prompts document (a dict as ``json.load`` gives it).

    Args:
        data: the decoded JSON document.
        base_dir: folder that relative mask paths are relative to.
        source: name used in error messages (a file path).
        frame_size: ``(H, W)`` of the frames in pixels, when known: a mask PNG of another size
            is refused from its header, before its pixels are decoded. None: not checked here.

    Returns:
        The objects, in file order; masks are read (``(H, W)`` bool).

    Raises:
        PromptsFileError: any structural error (see ``load_prompts``), an id outside
            ``MIN_OBJECT_ID..MAX_OBJECT_ID`` (1..254), a second box or a second mask for the same
            object and frame, a mask PNG above PIL's decompression-bomb limit
            (``PIL.Image.MAX_IMAGE_PIXELS``) or (with ``frame_size``) of the wrong size.
    """
    where = _Where(source)
    base = Path(base_dir)
    if not isinstance(data, dict):
        raise where.error(f'expected a JSON object {{"objects": [...]}} at the top level; got {type(data).__name__}.')
    bad = _unknown_keys(data, TOP_KEYS)
    if bad:
        raise where.error(bad)
    if "objects" not in data:
        raise where.error('missing "objects": expected {"objects": [{"id": 1, "prompts": [...]}, ...]}.')
    objs = data["objects"]
    if not isinstance(objs, list) or not objs:
        raise where.error(f'"objects" must be a non-empty list of objects; got {_short(objs)}.')
    seen: dict[int, int] = {}
    return [_parse_object(o, i, where, seen, base, frame_size) for i, o in enumerate(objs)]


def _parse_object(
    o: Any, i: int, where: _Where, seen: dict[int, int], base: Path, frame_size: tuple[int, int] | None
) -> ObjectPrompts:
    """``objects[i]`` of a prompts document; ``seen`` maps the ids met so far to their index."""
    if not isinstance(o, dict):
        raise where.error(f'expected an object {{"id": ..., "prompts": [...]}}; got {_short(o)}.', i)
    oid = o.get("id")

    def oerr(msg, key=None):
        return where.error(msg, i, oid, key=key)

    bad = _unknown_keys(o, OBJECT_KEYS)
    if bad:
        raise oerr(bad)
    if "id" not in o:
        raise oerr(f'missing "id": expected an integer in {MIN_OBJECT_ID}..{MAX_OBJECT_ID} (the label value).')
    if not _id_ok(oid):
        raise oerr(
            f"expected an integer id in {MIN_OBJECT_ID}..{MAX_OBJECT_ID}; got {_short(oid)}: {ID_RANGE_HINT}.", "id"
        )
    if oid in seen:
        raise oerr(f"duplicate id {oid}: objects[{seen[oid]}] has it too; ids must be unique.", "id")
    seen[oid] = i
    name = o.get("name", f"object {oid}")
    if not isinstance(name, str) or not name.strip():
        raise oerr(f"expected a non-empty text; got {_short(name)}.", "name")
    color = o.get("color")
    if color is not None:
        ok = isinstance(color, list) and len(color) == 3 and all(_is_number(c) for c in color)
        if not ok or not all(0.0 <= c <= 1.0 for c in color):
            raise oerr(f"expected 3 numbers [r, g, b] in 0..1; got {_short(color)}.", "color")
        color = tuple(float(c) for c in color)
    plist = o.get("prompts")
    if not isinstance(plist, list) or not plist:
        raise oerr(
            f'expected a non-empty list of prompts like {{"frame": 0, "points": [[x, y]], "labels": [1]}}; '
            f"got {_short(plist)}.",
            "prompts",
        )
    firsts: dict[tuple[str, int], int] = {}  # ("box" | "mask", frame) -> prompt index
    prompts = []
    for j, p in enumerate(plist):

        def perr(msg, key=None, j=j):
            return where.error(msg, i, oid, j, key)

        prompts.append(_parse_prompt(p, j, perr, firsts, base, frame_size))
    return ObjectPrompts(int(oid), name, color, prompts)


def _parse_prompt(
    p: Any, j: int, perr, firsts: dict[tuple[str, int], int], base: Path, frame_size: tuple[int, int] | None
) -> Prompt:
    """Prompt ``j`` of an object (``perr`` builds its errors); ``firsts`` holds the object's boxes and
    masks so far, by frame."""
    if not isinstance(p, dict):
        raise perr(f'expected an object {{"frame": ..., "points"/"box"/"mask": ...}}; got {_short(p)}.')
    bad = _unknown_keys(p, PROMPT_KEYS)
    if bad:
        raise perr(bad)
    if "frame" not in p:
        raise perr('missing "frame": expected the 0-based frame index of the prompt.')
    frame = p["frame"]
    if not _is_int(frame) or frame < 0:
        raise perr(f"expected a non-negative integer frame index; got {_short(frame)}.", "frame")
    if not any(k in p for k in ("points", "labels", "box", "mask")):
        raise perr('empty prompt: give "points" with "labels", a "box", or a "mask".')
    for key in ("box", "mask"):
        if key in p and (key, frame) in firsts:
            raise perr(_second_message(key, frame, firsts[key, frame]), key)
        if key in p:
            firsts[key, frame] = j
    points, labels = _parse_points(p, perr)
    box = _parse_box(p, perr)
    mask, mask_path = _parse_mask(p, perr, base, frame_size)
    return Prompt(int(frame), points, labels, box, mask, mask_path)


def validate(
    objects: Sequence[ObjectPrompts],
    num_frames: int | None = None,
    frame_size: tuple[int, int] | None = None,
    source: str | Path | None = None,
) -> None:
    """Check objects (from ``load_prompts`` or built in code) against a video.

    Args:
        objects: the objects.
        num_frames: number of frames ``T``; frames must lie in ``0..T-1``. None: not checked.
        frame_size: ``(H, W)`` in pixels; points must lie in ``0 <= x <= W``, ``0 <= y <= H``
            (as ``VideoTracker``), boxes too, masks must be ``(H, W)``. None: not checked.
        source: name used in error messages (the prompts file).

    Raises:
        PromptsFileError: naming the object (index and id), prompt (index) and field: ids outside
            ``MIN_OBJECT_ID..MAX_OBJECT_ID`` (1..254) or duplicated, bad shapes, labels not 0/1, box
            not x0 < x1 and y0 < y1, a prompt with neither points, box nor mask, a second box or a
            second mask for the same object and frame, frame out of range, points or box outside
            the frame, mask of the wrong size, colour not 3 numbers in 0..1.
    """
    where = _Where(None if source is None else str(source))
    if not objects:
        raise where.error("no objects: give at least one object with prompts.")
    seen: dict[int, int] = {}
    for i, o in enumerate(objects):
        _check_object(o, i, where, seen)
        firsts: dict[tuple[str, int], int] = {}  # ("box" | "mask", frame) -> prompt index
        for j, p in enumerate(o.prompts):

            def err(msg, key=None, i=i, oid=o.id, j=j):
                return where.error(msg, i, oid, j, key)

            _check_prompt(p, j, err, firsts, num_frames)
            if frame_size is not None:
                _check_in_frame(p, err, frame_size)


def _check_object(o: ObjectPrompts, i: int, where: _Where, seen: dict[int, int]) -> None:
    """``objects[i]``'s id (unique: ``seen`` maps the ids met so far to their index), colour and
    that it has prompts."""
    if not _id_ok(o.id):
        raise where.error(
            f"expected an integer id in {MIN_OBJECT_ID}..{MAX_OBJECT_ID}; got {o.id!r}: {ID_RANGE_HINT}.",
            i,
            key="id",
        )
    if o.id in seen:
        raise where.error(f"duplicate id {o.id}: objects[{seen[o.id]}] has it too.", i, o.id, key="id")
    seen[o.id] = i
    if o.color is not None:
        c = tuple(o.color)
        if len(c) != 3 or not all(_is_number(v) and 0.0 <= v <= 1.0 for v in c):
            raise where.error(f"expected 3 numbers [r, g, b] in 0..1; got {c!r}.", i, o.id, key="color")
    if not o.prompts:
        raise where.error("no prompts: give at least one.", i, o.id, key="prompts")


def _check_prompt(p: Prompt, j: int, err, firsts: dict[tuple[str, int], int], num_frames: int | None) -> None:
    """Prompt ``j``'s frame, shapes and values (``err`` builds its errors); ``firsts`` holds the
    object's boxes and masks so far, by frame."""
    if not _is_int(p.frame) or p.frame < 0:
        raise err(f"expected a non-negative integer frame index; got {p.frame!r}.", "frame")
    if num_frames is not None and p.frame >= num_frames:
        raise err(
            f"frame {p.frame} is out of range: the video has {num_frames} frames (0..{num_frames - 1}).",
            "frame",
        )
    if p.points is None and p.box is None and p.mask is None and p.mask_path is None:
        raise err('empty prompt: give "points" with "labels", a "box", or a "mask".')
    for key, present in (("box", p.box is not None), ("mask", p.mask is not None or p.mask_path is not None)):
        if present and (key, p.frame) in firsts:
            raise err(_second_message(key, p.frame, firsts[key, p.frame]), key)
        if present:
            firsts[key, p.frame] = j
    if p.points is not None:
        pts = np.asarray(p.points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0 or not np.all(np.isfinite(pts)):
            raise err(f"expected finite (N, 2) [x, y] pixel pairs; got shape {pts.shape}.", "points")
        lab = None if p.labels is None else np.asarray(p.labels)
        if lab is None or lab.shape != (len(pts),):
            got = "none" if lab is None else f"shape {lab.shape}"
            raise err(f"expected {len(pts)} labels (one per point), got {got}.", "labels")
        if not np.isin(lab, (0, 1)).all():
            raise err(f"labels must be 1 (positive) or 0 (negative); got {_short(lab)}.", "labels")
    elif p.labels is not None:
        raise err("labels without points.", "labels")
    if p.box is not None:
        b = np.asarray(p.box, dtype=np.float64)
        if b.shape != (4,) or not np.all(np.isfinite(b)):
            raise err(f"expected 4 numbers [x0, y0, x1, y1]; got {_short(p.box)}.", "box")
        if not (b[0] < b[2] and b[1] < b[3]):
            raise err(f"box {_short(b)} is empty or reversed: it needs x0 < x1 and y0 < y1.", "box")
    if p.mask is not None and np.asarray(p.mask).ndim != 2:
        raise err(f"expected an (H, W) mask; got shape {np.asarray(p.mask).shape}.", "mask")


def _check_in_frame(p: Prompt, err, frame_size: tuple[int, int]) -> None:
    """The prompt's points and box lie inside the ``(H, W)`` frame and its mask has its size."""
    h, w = frame_size
    for key, xy in (("points", p.points), ("box", None if p.box is None else np.reshape(p.box, (2, 2)))):
        if xy is None:
            continue
        xy = np.asarray(xy, dtype=np.float64)
        out = (xy[:, 0] < 0) | (xy[:, 0] > w) | (xy[:, 1] < 0) | (xy[:, 1] > h)
        if out.any():
            raise err(
                f"{_short(xy[out][0])} lies outside the {w}x{h} frame (x in 0..{w}, y in 0..{h} pixels, "
                "x right, y down).",
                key,
            )
    if p.mask is not None and np.asarray(p.mask).shape != (h, w):
        mh, mw = np.asarray(p.mask).shape
        name = f" ({p.mask_path})" if p.mask_path is not None else ""
        raise err(f"mask{name} is {mw}x{mh} (W x H) but the frames are {w}x{h}.", "mask")


def load_prompts(
    path: str | Path, num_frames: int | None = None, frame_size: tuple[int, int] | None = None
) -> list[ObjectPrompts]:
    """Read and check a prompts JSON file.

    Args:
        path: the JSON file; mask paths in it are relative to its folder.
        num_frames: number of video frames ``T`` to check frame indices against, or None.
        frame_size: ``(H, W)`` of the frames in pixels to check points, boxes and mask sizes
            against, or None.

    Returns:
        ``list[ObjectPrompts]`` in file order (points ``(N, 2)`` float64 pixels x right / y down,
        labels ``(N,)`` int64, box ``(4,)`` float64, mask ``(H, W)`` bool).

    Raises:
        PromptsFileError (a ValueError): the file is missing or unreadable, not strict JSON (with
            line and column; ``sam2s.strictjson``: no NaN / Infinity, no number beyond a float, no
            integer of more than 19 digits, at most 64 levels of nesting), or invalid -- see ``parse_prompts`` and ``validate``;
            the message names the file, the object (index and id), the prompt (index) and the
            field. Mask PNGs above PIL's decompression-bomb limit or (with ``frame_size``) of the
            wrong size are refused before their pixels are decoded.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise PromptsFileError(f"{path}: the prompts file does not exist.") from e
    except (OSError, UnicodeDecodeError) as e:
        raise PromptsFileError(f"{path}: cannot read the prompts file ({e}).") from e
    try:
        data = strictjson.loads(text)
    except strictjson.StrictJSONError as e:
        raise PromptsFileError(
            f"{path}: {e}; a prompts file is JSON as in the sam2sapp.promptsfile documentation "
            '(e.g. {"objects": [{"id": 1, "prompts": [{"frame": 0, "points": [[x, y]], "labels": [1]}]}]}).'
        ) from None
    objects = parse_prompts(data, path.parent, str(path), frame_size)
    validate(objects, num_frames, frame_size, path)
    return objects


def _num(v: float) -> int | float:
    v = float(v)
    return int(v) if v.is_integer() else v


def _same_mask(path: Path, mask: np.ndarray) -> bool:
    try:
        old = _read_mask(path)
    except (OSError, ValueError):
        return False
    return old.shape == mask.shape and bool(np.array_equal(old, mask))


def _mask_reference(p: Prompt, obj_id: int, base: Path, used: set[Path]) -> str:
    """Write ``p.mask`` if needed (see ``dump_prompts``) and return the path to store."""
    given = None if p.mask_path is None else Path(p.mask_path)
    full = None if given is None else (given if given.is_absolute() else base / given)
    if p.mask is not None:
        mask = np.asarray(p.mask).astype(bool)
        if full is not None and full.is_file() and _same_mask(full, mask):
            pass  # already there (e.g. the file it was read from): do not rewrite it
        else:
            if full is None or given.is_absolute():  # never overwrite a file outside the folder
                stem, k = f"obj{obj_id}_f{p.frame}", 1
                full = base / "masks" / f"{stem}.png"
                while full.resolve() in used or full.exists():
                    full = base / "masks" / f"{stem}_{k}.png"
                    k += 1
            full.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask.astype(np.uint8) * 255).save(full)
    used.add(full.resolve())
    try:
        rel = Path(os.path.relpath(full.resolve(), base.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return str(full.resolve())
    return str(full.resolve()) if rel.startswith("../") else rel


def dump_prompts(objects: Sequence[ObjectPrompts], path: str | Path) -> None:
    """Write objects as a prompts JSON file (the format ``load_prompts`` reads).

    Masks: a prompt with only ``mask_path`` refers to that file. A ``mask`` array is referred to
    by its ``mask_path`` when that file already holds the same mask (e.g. the file it was read
    from), else written as a 0/255 PNG: to ``mask_path`` when it is relative (to the JSON file's
    folder), otherwise to a new ``masks/obj<id>_f<frame>[_<k>].png`` next to the JSON file
    (existing files outside that folder are never overwritten). Paths are stored relative to the
    JSON file's folder when inside it, else absolute. Integral coordinates are written as
    integers; one prompt a line.

    Raises:
        PromptsFileError: invalid objects (as ``validate``). OSError: the files cannot be written.
    """
    path = Path(path)
    validate(objects, source=path)
    base = path.parent
    used: set[Path] = set()
    lines = ["{", '  "objects": [']
    for i, o in enumerate(objects):
        head: dict[str, Any] = {"id": int(o.id), "name": o.name}
        if o.color is not None:
            head["color"] = [_num(c) for c in o.color]
        prompt_lines = []
        for p in o.prompts:
            d: dict[str, Any] = {"frame": int(p.frame)}
            if p.points is not None:
                d["points"] = [[_num(x), _num(y)] for x, y in np.asarray(p.points, dtype=np.float64)]
                d["labels"] = [int(v) for v in np.asarray(p.labels)]
            if p.box is not None:
                d["box"] = [_num(v) for v in np.asarray(p.box, dtype=np.float64)]
            if p.mask is not None or p.mask_path is not None:
                d["mask"] = _mask_reference(p, o.id, base, used)
            prompt_lines.append("        " + json.dumps(d))
        lines.append("    " + json.dumps(head)[:-1] + ', "prompts": [')  # the object without its closing brace
        lines.append(",\n".join(prompt_lines))
        lines.append("    ]}" + ("," if i < len(objects) - 1 else ""))
    lines += ["  ]", "}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
