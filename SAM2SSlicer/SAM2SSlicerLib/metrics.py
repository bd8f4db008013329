"""DAVIS 2017 video object segmentation metrics: region similarity J and boundary accuracy F.

Definitions from Pont-Tuset et al., "The 2017 DAVIS Challenge on Video Object Segmentation",
arXiv:1704.00675 (and Perazzi et al., CVPR 2016), as computed by the official evaluation code,
https://github.com/davisvideochallenge/davis2017-evaluation, file ``davis2017/metrics.py``
(``db_eval_iou``, ``f_measure``, ``_seg2bmap``) and ``davis2017/evaluation.py``. This module is an
independent implementation with numpy and OpenCV (no scikit-image); the tests check it against a
literal transcription of those formulas.

Masks are ``(H, W)`` arrays indexed ``mask[y, x]`` (pixels, x right, y down); any nonzero value
is "object". Label images are ``(H, W)`` uint8 with 0 = background, ``k`` = object id ``k`` and
255 = void (pixels ignored by both measures, as in DAVIS).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path

import cv2
import numpy as np
from sam2s.frames import ImageSizeError, open_image

VOID_LABEL = 255
"""Label of void pixels in ground-truth label images (DAVIS ``_VOID_LABEL``)."""


def _as_bool(mask: np.ndarray, name: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) mask; got shape {m.shape}.")
    return m.astype(bool, copy=False)


def _check_pair(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None):
    p, g = _as_bool(pred, "pred"), _as_bool(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred has shape {p.shape} but gt has shape {g.shape}; they must be the same (H, W).")
    if void is None:
        return p, g, None
    v = _as_bool(void, "void")
    if v.shape != g.shape:
        raise ValueError(f"void has shape {v.shape} but gt has shape {g.shape}.")
    return p, g, v


def region_j(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """Region similarity J: the Jaccard index (IoU) of two masks (DAVIS ``db_eval_iou``).

    Args:
        pred: ``(H, W)`` predicted mask, bool or any dtype (nonzero = object).
        gt: ``(H, W)`` ground-truth mask, same shape.
        void: optional ``(H, W)`` mask of pixels to ignore (DAVIS void label 255).

    Returns:
        ``|pred & gt| / |pred | gt|`` in ``[0, 1]``, counted outside ``void``; 1.0 when both masks
        are empty (the union is empty), as the DAVIS 2017 code.

    Raises:
        ValueError: masks that are not 2-D or whose shapes differ.

    Source: Pont-Tuset et al. 2017 (arXiv:1704.00675), ``davis2017/metrics.py:db_eval_iou``.
    """
    p, g, v = _check_pair(pred, gt, void)
    inter, union = p & g, p | g
    if v is not None:
        inter, union = inter & ~v, union & ~v
    n_union = int(np.count_nonzero(union))
    if n_union == 0:
        return 1.0
    return float(np.count_nonzero(inter)) / n_union


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask (DAVIS ``_seg2bmap``, after D. Martin, BSDS).

    A pixel is a boundary pixel when it differs from its right (east), lower (south) or lower-right
    (south-east) neighbour; pixels past the last row / column count as equal, except that the last
    row compares only with the east neighbour, the last column only with the south one, and the
    bottom-right pixel is never a boundary. The boundary thus lies half a pixel towards the origin
    from the true segment edge.

    Args:
        seg: ``(H, W)`` mask (nonzero = object).

    Returns:
        ``(H, W)`` bool boundary map.

    Raises:
        ValueError: ``seg`` is not 2-D.
    """
    s = _as_bool(seg, "seg")
    e = np.zeros_like(s)
    so = np.zeros_like(s)
    se = np.zeros_like(s)
    e[:, :-1] = s[:, 1:]
    so[:-1, :] = s[1:, :]
    se[:-1, :-1] = s[1:, 1:]
    b = (s ^ e) | (s ^ so) | (s ^ se)
    b[-1, :] = s[-1, :] ^ e[-1, :]
    b[:, -1] = s[:, -1] ^ so[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    """Disk structuring element, identical to scikit-image's ``morphology.disk(radius)``.

    Returns:
        ``(2r+1, 2r+1)`` uint8 array, 1 where ``x**2 + y**2 <= r**2`` (offsets from the centre).

    Raises:
        ValueError: a negative radius.
    """
    r = int(radius)
    if r < 0:
        raise ValueError(f"radius must be >= 0, got {radius}.")
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx**2 + yy**2 <= r**2).astype(np.uint8)


def boundary_radius(shape: tuple[int, int], bound_th: float = 0.008) -> int:
    """Tolerance radius in pixels used by ``boundary_f``: ``bound_th`` itself when ``>= 1``,
    else ``ceil(bound_th * sqrt(H**2 + W**2))`` (a fraction of the image diagonal), as DAVIS.
    For 854 x 480 frames and the default 0.008 this is 8 pixels."""
    if bound_th >= 1:
        return int(bound_th)  # a radius in pixels (DAVIS expects an integer value here)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008, void: np.ndarray | None = None) -> float:
    """Boundary accuracy F: F-measure of boundary pixels matched within a tolerance (DAVIS
    ``f_measure``).

    Boundaries are ``seg2bmap`` of each mask (after removing ``void`` pixels); each is dilated with
    a disk of radius ``boundary_radius(shape, bound_th)`` (``cv2.dilate``); precision is the
    fraction of predicted boundary pixels within the dilated ground-truth boundary, recall the
    fraction of ground-truth boundary pixels within the dilated predicted one, and
    ``F = 2 P R / (P + R)`` (0 when ``P + R = 0``).

    Args:
        pred: ``(H, W)`` predicted mask (nonzero = object).
        gt: ``(H, W)`` ground-truth mask, same shape.
        bound_th: tolerance as a fraction of the image diagonal (``< 1``) or in pixels (``>= 1``).
        void: optional ``(H, W)`` mask of pixels to ignore.

    Returns:
        F in ``[0, 1]``: 1.0 when neither mask has a boundary (both empty), 0.0 when exactly one
        has none.

    Raises:
        ValueError: masks that are not 2-D or whose shapes differ.

    Source: Pont-Tuset et al. 2017 (arXiv:1704.00675); ``davis2017/metrics.py:f_measure``.
    """
    p, g, v = _check_pair(pred, gt, void)
    if v is not None:
        p, g = p & ~v, g & ~v
    fg_b, gt_b = seg2bmap(p), seg2bmap(g)
    n_fg, n_gt = int(np.count_nonzero(fg_b)), int(np.count_nonzero(gt_b))
    if n_fg == 0 or n_gt == 0:
        return 1.0 if n_fg == n_gt else 0.0
    kernel = disk(boundary_radius(p.shape, bound_th))
    fg_dil = cv2.dilate(fg_b.view(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gt_b.view(np.uint8), kernel).astype(bool)
    precision = np.count_nonzero(fg_b & gt_dil) / n_fg
    recall = np.count_nonzero(gt_b & fg_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def read_labels(path: str | Path) -> np.ndarray:
    """Read a label PNG (DAVIS style: palette or grey, pixel value = object id) as ``(H, W)``
    uint8 (palette images give their palette indices; 16-bit grey images are accepted when every
    value lies in 0..255).

    The header is checked before the pixels are decoded: an image with more pixels than PIL's
    decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is refused.

    Raises:
        FileNotFoundError: no such file. ValueError: unreadable, truncated, a decompression bomb
        (naming the file and its size), colour (RGB) or labels outside 0..255 (naming the file
        and the valid range: 0 = background, 1..254 = object ids, 255 = void).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No label image {path}.")
    try:
        with open_image(path) as im:
            mode = im.mode
            a = np.asarray(im)
    except ImageSizeError as e:
        raise ValueError(
            f"{e}. Label images must have the frame size (pixel values 0..255: 0 background, 1..254 object ids, "
            "255 void)."
        ) from e
    except (OSError, SyntaxError, EOFError) as e:
        raise ValueError(f"Cannot read label image {path}: {e}") from e
    if a.ndim != 2:
        raise ValueError(
            f"{path} is a {mode} image with shape {a.shape}; expected a single-channel label image "
            "(grey or palette PNG, pixel value = object id)."
        )
    if a.dtype == bool:
        return a.astype(np.uint8)
    if a.size and (a.min() < 0 or a.max() > 255):
        raise ValueError(
            f"{path} has labels {a.min()}..{a.max()} outside the valid range 0..255 (0 = background, 1..254 = "
            f"object ids, 255 = void, as DAVIS); save it as an 8-bit grey or palette PNG with those values."
        )
    return a.astype(np.uint8, copy=False)


def _exclusions(exclude: Collection[str | int]) -> tuple[set[str], set[int]]:
    """Names / stems and frame numbers to exclude: ints and digit strings are frame numbers,
    every string is also compared as a file name and a stem. Raises TypeError for other types."""
    if isinstance(exclude, (str, int)):
        exclude = [exclude]
    names: set[str] = set()
    numbers: set[int] = set()
    for x in exclude:
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (str, int, np.integer)):
            raise TypeError(
                f"exclude entries must be frame numbers (0, '0') or file names ('00000.png', '00000'); got {x!r}."
            )
        if isinstance(x, str):
            names.add(x)
            if x.strip().isdigit():
                numbers.add(int(x.strip()))
        else:
            numbers.add(int(x))
    return names, numbers


def evaluate(
    pred_dir: str | Path,
    gt_dir: str | Path,
    bound_th: float = 0.008,
    exclude: Collection[str | int] = (),
) -> dict:
    """DAVIS 2017 semi-supervised J&F of a folder of predicted label PNGs against ground truth.

    Files are matched by name (``gt_dir/00030.png`` with ``pred_dir/00030.png``); the frames
    evaluated are those with a ground-truth PNG, minus ``exclude``: frame numbers given as ints or
    digit strings (``0`` and ``"0"`` both exclude ``00000.png``, as ``sam2s eval --exclude 0``),
    stems (``"00000"``) or file names (``"00000.png"``) -- e.g. the prompted frame 0; DAVIS itself
    drops the first and last annotated frame. A missing prediction counts as an empty one. The objects are the ids present in any evaluated
    ground-truth frame (255 = void is not an object; void pixels are ignored). For each object,
    J and F are averaged over the frames (frames where the object is absent from the ground truth
    score 1 if the prediction is empty there too, else 0); ``J&F = (J + F) / 2``. The overall
    numbers are the means over objects (as DAVIS's "J&F-Mean").

    Args:
        pred_dir: folder of predicted ``(H, W)`` uint8 label PNGs (value = object id).
        gt_dir: folder of ground-truth label PNGs of the same size.
        bound_th: boundary tolerance of ``boundary_f``.
        exclude: frames not to evaluate: frame numbers (int or digit string), stems or file names.

    Returns:
        ``{"J&F": float, "J": float, "F": float, "objects": {id: {"J", "F", "J&F", "per_frame":
        {name: (J, F)}, "missing": [names]}}, "frames": [names], "missing": [names]}``. The
        top-level ``"missing"`` lists the evaluated frames without a prediction file; each
        object's ``"missing"`` lists the evaluated frames whose ground truth contains that object
        but that have no prediction file (the object scores 0 there), in frame order.

    Raises:
        FileNotFoundError: a folder does not exist. TypeError: an ``exclude`` entry that is
        neither an int nor a string. ValueError: no ground-truth PNG (after ``exclude``), no
        object in the ground truth, a prediction whose size differs from its ground truth, or an
        unreadable / non-label image (decompression bomb, labels outside 0..255).

    Source: Pont-Tuset et al. 2017 (arXiv:1704.00675); ``davis2017/evaluation.py``.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d, what in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not d.is_dir():
            raise FileNotFoundError(f"The {what} folder {d} does not exist.")
    skip_names, skip_numbers = _exclusions(exclude)

    def excluded(p: Path) -> bool:
        return p.name in skip_names or p.stem in skip_names or (p.stem.isdigit() and int(p.stem) in skip_numbers)

    gt_files = sorted(p for p in gt_dir.iterdir() if p.suffix.lower() == ".png" and not excluded(p))
    if not gt_files:
        shown = sorted(skip_names | {str(n) for n in skip_numbers})
        raise ValueError(
            f"No ground-truth label PNG to evaluate in {gt_dir}" + (f" (excluding {shown})." if shown else ".")
        )
    gts = {p.name: read_labels(p) for p in gt_files}
    ids = sorted({int(k) for g in gts.values() for k in np.unique(g) if k not in (0, VOID_LABEL)})
    if not ids:
        raise ValueError(f"The ground truth in {gt_dir} contains no object (all pixels 0 or 255).")
    per_obj: dict[int, dict[str, tuple[float, float]]] = {k: {} for k in ids}
    missing: list[str] = []
    missing_per_obj: dict[int, list[str]] = {k: [] for k in ids}
    for name, gt in gts.items():
        pred_path = pred_dir / name
        if pred_path.is_file():
            pred = read_labels(pred_path)
            if pred.shape != gt.shape:
                raise ValueError(
                    f"{pred_path} is {pred.shape[1]}x{pred.shape[0]} (W x H) but its ground truth "
                    f"{gt_dir / name} is {gt.shape[1]}x{gt.shape[0]}."
                )
        else:
            missing.append(name)
            present = set(np.unique(gt).tolist())
            for k in ids:
                if k in present:
                    missing_per_obj[k].append(name)
            pred = np.zeros_like(gt)
        void = gt == VOID_LABEL
        void = void if void.any() else None
        for k in ids:
            p, g = pred == k, gt == k
            per_obj[k][name] = (region_j(p, g, void), boundary_f(p, g, bound_th, void))
    objects = {}
    for k, frames in per_obj.items():
        j = float(np.mean([v[0] for v in frames.values()]))
        f = float(np.mean([v[1] for v in frames.values()]))
        objects[k] = {"J": j, "F": f, "J&F": (j + f) / 2, "per_frame": frames, "missing": missing_per_obj[k]}
    j_mean = float(np.mean([o["J"] for o in objects.values()]))
    f_mean = float(np.mean([o["F"] for o in objects.values()]))
    return {
        "J&F": (j_mean + f_mean) / 2,
        "J": j_mean,
        "F": f_mean,
        "objects": objects,
        "frames": list(gts),
        "missing": missing,
    }
