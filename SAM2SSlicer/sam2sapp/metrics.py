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

Besides J and F, ``evaluate(..., monai=True)`` adds Dice, the 95th-percentile Hausdorff distance
(HD95, pixels) and the normalised surface Dice (NSD) at a tolerance in pixels, computed by MONAI's
functions (``monai.metrics.compute_dice``, ``compute_hausdorff_distance(percentile=95)``,
``compute_surface_dice``; see :func:`overlap_metrics`). MONAI (and SciPy, which its distance
functions need) is imported only then: ``pip install -e ".[metrics]"``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from sam2s.extras import install_hint
from sam2s.frames import ImageSizeError, open_image

METRICS_EXTRA_HINT = install_hint("metrics", '"monai>=1.3" scipy matplotlib')
"""How to install what Dice / HD95 / NSD and ``--plot`` need (MONAI, SciPy, matplotlib)."""

DEFAULT_NSD_TOLERANCE = 2.0
"""Default tolerance of the normalised surface Dice, in pixels (``sam2s eval --nsd-tolerance``)."""


class MetricsDependencyError(ImportError):
    """MONAI (or SciPy / matplotlib) is not installed; the message says how to install it."""


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


def import_monai():
    """Import and return ``monai.metrics``, checking that SciPy (MONAI's distance transforms) is there too.

    Raises:
        MetricsDependencyError: MONAI or SciPy is missing; the message names ``pip install -e ".[metrics]"``.
    """
    try:
        import scipy.ndimage  # noqa: F401 - MONAI's surface distances import it lazily, later
        from monai import metrics as monai_metrics
    except ImportError as err:
        raise MetricsDependencyError(
            f"Dice, HD95 and NSD are computed with MONAI and SciPy, which are not installed ({err}); "
            f"install them with: {METRICS_EXTRA_HINT}"
        ) from None
    return monai_metrics


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def overlap_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
    void: np.ndarray | None = None,
) -> dict[str, float | None] | None:
    """Dice, HD95 and NSD of one predicted mask against its ground truth, computed by MONAI.

    The masks are passed to MONAI as ``(1, 1, H, W)`` float tensors (batch, one foreground
    channel, ``include_background=True``) with unit spacing, so distances are in pixels:

    - ``"Dice"``: ``monai.metrics.compute_dice(..., ignore_empty=False)``, ``2|P & G| / (|P| + |G|)``.
    - ``"HD95"``: ``monai.metrics.compute_hausdorff_distance(..., percentile=95)``, the 95th
      percentile of the symmetric Euclidean distances between the two masks' edge pixels
      (``mask ^ erosion(mask)``, MONAI's ``get_mask_edges``), pixels.
    - ``"NSD"``: ``monai.metrics.compute_surface_dice(..., class_thresholds=[nsd_tolerance])``,
      the fraction of both edges lying within ``nsd_tolerance`` pixels of the other edge
      (Nikolov et al. 2021, arXiv:1809.04430), in ``[0, 1]``.

    Empty masks (MONAI returns NaN there): both empty -> ``None`` (the frame is skipped: nothing
    to segment, nothing predicted); exactly one empty -> Dice 0.0 and NSD 0.0 (MONAI's values),
    HD95 ``None`` (undefined: MONAI returns NaN, older versions inf); :func:`evaluate` counts those
    frames in ``"HD95_undefined"``. Void pixels (``void``) are removed from both masks first.

    Args:
        pred: ``(H, W)`` predicted mask (nonzero = object).
        gt: ``(H, W)`` ground-truth mask, same shape.
        nsd_tolerance: NSD tolerance in pixels (> 0).
        void: optional ``(H, W)`` mask of pixels to ignore.

    Returns:
        ``{"Dice": float, "HD95": float | None, "NSD": float}``, or ``None`` when both masks are empty.

    Raises:
        ValueError: masks that are not 2-D or whose shapes differ, a tolerance <= 0.
        MetricsDependencyError: MONAI or SciPy is missing.
    """
    p, g, v = _check_pair(pred, gt, void)
    if not nsd_tolerance > 0:
        raise ValueError(f"nsd_tolerance must be > 0 pixels, got {nsd_tolerance}.")
    if v is not None:
        p, g = p & ~v, g & ~v
    p_any, g_any = bool(p.any()), bool(g.any())
    if not (p_any or g_any):
        return None
    mm = import_monai()
    import torch

    tp = torch.from_numpy(p.astype(np.float32)[None, None])
    tg = torch.from_numpy(g.astype(np.float32)[None, None])
    dice = float(mm.compute_dice(tp, tg, include_background=True, ignore_empty=False).item())
    if p_any and g_any:
        with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal use of a deprecated argument
            warnings.simplefilter("ignore", FutureWarning)
            hd = mm.compute_hausdorff_distance(tp, tg, include_background=True, percentile=95)
            nsd = float(mm.compute_surface_dice(tp, tg, [float(nsd_tolerance)], include_background=True).item())
        hd95 = _finite_or_none(float(hd.item()))
    else:  # MONAI: HD undefined (NaN, warned), NSD 0; skip the calls and their warnings
        hd95, nsd = None, 0.0
    return {"Dice": dice, "HD95": hd95, "NSD": nsd}


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def evaluate(
    pred_dir: str | Path,
    gt_dir: str | Path,
    bound_th: float = 0.008,
    exclude: Collection[str | int] = (),
    monai: bool = False,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
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
        monai: also compute Dice, HD95 and NSD per object and frame with MONAI
            (:func:`overlap_metrics`; MONAI and SciPy are imported before any image is read).
        nsd_tolerance: NSD tolerance in pixels (with ``monai``).

    Returns:
        ``{"J&F": float, "J": float, "F": float, "objects": {id: {"J", "F", "J&F", "per_frame":
        {name: (J, F)}, "missing": [names]}}, "frames": [names], "missing": [names]}``. The
        top-level ``"missing"`` lists the evaluated frames without a prediction file; each
        object's ``"missing"`` lists the evaluated frames whose ground truth contains that object
        but that have no prediction file (the object scores 0 there), in frame order.

        With ``monai=True``, also: top-level ``"Dice"``, ``"HD95"``, ``"NSD"`` (means over the
        objects that have a value) and ``"nsd_tolerance"``; per object ``"Dice"``, ``"HD95"``,
        ``"NSD"`` (means over its frames where the prediction or the ground truth is nonempty;
        HD95 over the frames where both are), ``"frames_scored"`` (how many such frames),
        ``"HD95_undefined"`` (frames where exactly one mask is empty) and ``"metrics_per_frame"``:
        ``{name: {"J", "F", "J&F", "Dice", "HD95", "NSD"}}`` for every evaluated frame, with
        ``None`` for the MONAI figures of frames skipped or undefined (see :func:`overlap_metrics`).
        A value is ``None`` where nothing could be averaged.

    Raises:
        FileNotFoundError: a folder does not exist. TypeError: an ``exclude`` entry that is
        neither an int nor a string. ValueError: no ground-truth PNG (after ``exclude``), no
        object in the ground truth, a prediction whose size differs from its ground truth, or an
        unreadable / non-label image (decompression bomb, labels outside 0..255), an
        ``nsd_tolerance`` <= 0. MetricsDependencyError: ``monai=True`` without MONAI or SciPy.

    Source: Pont-Tuset et al. 2017 (arXiv:1704.00675); ``davis2017/evaluation.py``.
    """
    pred_dir, gt_dir = _checked_inputs(pred_dir, gt_dir, monai, nsd_tolerance)
    gts = _ground_truth(gt_dir, exclude)
    ids = sorted({int(k) for g in gts.values() for k in np.unique(g) if k not in (0, VOID_LABEL)})
    if not ids:
        raise ValueError(f"The ground truth in {gt_dir} contains no object (all pixels 0 or 255).")
    scores = _score_frames(pred_dir, gt_dir, gts, ids, bound_th, nsd_tolerance if monai else None)
    objects = {k: _object_result(scores, k, monai) for k in ids}
    j_mean = float(np.mean([o["J"] for o in objects.values()]))
    f_mean = float(np.mean([o["F"] for o in objects.values()]))
    result = {
        "J&F": (j_mean + f_mean) / 2,
        "J": j_mean,
        "F": f_mean,
        "objects": objects,
        "frames": list(gts),
        "missing": scores.missing,
    }
    if monai:
        for key in ("Dice", "HD95", "NSD"):
            result[key] = _mean([o[key] for o in objects.values()])
        result["nsd_tolerance"] = float(nsd_tolerance)
    return result


def _checked_inputs(pred_dir: str | Path, gt_dir: str | Path, monai: bool, nsd_tolerance: float) -> tuple[Path, Path]:
    """The two folders, checked to exist, after MONAI (with ``monai``) and the NSD tolerance."""
    if monai:
        import_monai()
        if not nsd_tolerance > 0:
            raise ValueError(f"The NSD tolerance must be > 0 pixels, got {nsd_tolerance}.")
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d, what in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not d.is_dir():
            raise FileNotFoundError(f"The {what} folder {d} does not exist.")
    return pred_dir, gt_dir


def _ground_truth(gt_dir: Path, exclude: Collection[str | int]) -> dict[str, np.ndarray]:
    """The ground-truth label images to evaluate, by file name in name order (``exclude`` left out);
    ValueError when none is left."""
    skip_names, skip_numbers = _exclusions(exclude)

    def excluded(p: Path) -> bool:
        return p.name in skip_names or p.stem in skip_names or (p.stem.isdigit() and int(p.stem) in skip_numbers)

    gt_files = sorted(p for p in gt_dir.iterdir() if p.suffix.lower() == ".png" and not excluded(p))
    if not gt_files:
        shown = sorted(skip_names | {str(n) for n in skip_numbers})
        raise ValueError(
            f"No ground-truth label PNG to evaluate in {gt_dir}" + (f" (excluding {shown})." if shown else ".")
        )
    return {p.name: read_labels(p) for p in gt_files}


@dataclass
class _FrameScores:
    """The figures of every evaluated frame: ``per_obj[id][name] = (J, F)``, ``overlap[id][name]``
    (MONAI's figures, or None where skipped), the frames without a prediction file (``missing``) and,
    per object, those of them whose ground truth holds the object (``missing_per_obj``)."""

    per_obj: dict[int, dict[str, tuple[float, float]]]
    overlap: dict[int, dict[str, dict[str, float | None] | None]]
    missing: list[str]
    missing_per_obj: dict[int, list[str]]


def _score_frames(
    pred_dir: Path,
    gt_dir: Path,
    gts: dict[str, np.ndarray],
    ids: list[int],
    bound_th: float,
    nsd_tolerance: float | None,
) -> _FrameScores:
    """J and F (and, with an ``nsd_tolerance``, MONAI's figures) of each object on each frame; a
    missing prediction counts as an empty one. ValueError for a prediction of another size."""
    scores = _FrameScores({k: {} for k in ids}, {k: {} for k in ids}, [], {k: [] for k in ids})
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
            scores.missing.append(name)
            present = set(np.unique(gt).tolist())
            for k in ids:
                if k in present:
                    scores.missing_per_obj[k].append(name)
            pred = np.zeros_like(gt)
        void = gt == VOID_LABEL
        void = void if void.any() else None
        for k in ids:
            p, g = pred == k, gt == k
            scores.per_obj[k][name] = (region_j(p, g, void), boundary_f(p, g, bound_th, void))
            if nsd_tolerance is not None:
                scores.overlap[k][name] = overlap_metrics(p, g, nsd_tolerance, void)
    return scores


def _object_result(scores: _FrameScores, k: int, monai: bool) -> dict:
    """Object ``k``'s entry of :func:`evaluate`'s ``"objects"``: its means over the frames."""
    frames = scores.per_obj[k]
    j = float(np.mean([v[0] for v in frames.values()]))
    f = float(np.mean([v[1] for v in frames.values()]))
    result = {"J": j, "F": f, "J&F": (j + f) / 2, "per_frame": frames, "missing": scores.missing_per_obj[k]}
    if monai:
        overlap = scores.overlap[k]
        scored = [m for m in overlap.values() if m is not None]
        result.update(
            Dice=_mean([m["Dice"] for m in scored]),
            HD95=_mean([m["HD95"] for m in scored]),
            NSD=_mean([m["NSD"] for m in scored]),
            frames_scored=len(scored),
            HD95_undefined=sum(m["HD95"] is None for m in scored),
            metrics_per_frame={
                name: {
                    "J": jf[0],
                    "F": jf[1],
                    "J&F": (jf[0] + jf[1]) / 2,
                    **(overlap[name] or {"Dice": None, "HD95": None, "NSD": None}),
                }
                for name, jf in frames.items()
            },
        )
    return result


def plot_per_frame(result: dict, path: str | Path) -> Path:
    """Plot J&F per frame, one line per object, into a PNG (matplotlib, Agg backend).

    Args:
        result: the dictionary :func:`evaluate` returns (its ``"frames"`` and each object's
            ``"per_frame"`` ``(J, F)``).
        path: the PNG to write (its folder must exist).

    Returns:
        ``path`` as a ``Path``. The x axis is the frame number (the file stem when it is a
        number, else the position among the evaluated frames), the y axis J&F in ``[0, 1]``.

    Raises:
        MetricsDependencyError: matplotlib is not installed. OSError: the file cannot be written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise MetricsDependencyError(
            f"--plot needs matplotlib ({err}); install it with: {METRICS_EXTRA_HINT}"
        ) from None
    path = Path(path)
    names = list(result["frames"])
    stems = [Path(n).stem for n in names]
    xs = [int(st) for st in stems] if all(st.isdigit() for st in stems) else list(range(len(names)))
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=100)
    try:
        for obj_id, r in result["objects"].items():
            ys = [(r["per_frame"][n][0] + r["per_frame"][n][1]) / 2 for n in names]
            ax.plot(xs, ys, marker="." if len(xs) < 60 else None, label=f"object {obj_id} (J&F {r['J&F']:.3f})")
        ax.set_xlabel("frame")
        ax.set_ylabel("J&F")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"J&F per frame (mean {result['J&F']:.3f})")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize="small")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
