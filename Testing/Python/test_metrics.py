"""DAVIS 2017 J and F (``sam2sapp.metrics``): hand-made cases, a literal transcription of the
reference code as the oracle, and the folder evaluation."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from faultkit import run_without
from PIL import Image
from sam2sapp.metrics import boundary_f, boundary_radius, disk, evaluate, read_labels, region_j, seg2bmap


# ---------------------------------------------------------------------------------------- oracle
# A literal transcription of davisvideochallenge/davis2017-evaluation, davis2017/metrics.py
# (db_eval_iou, f_measure, _seg2bmap; np.bool -> bool) and of skimage.morphology.disk, kept slow
# and close to the original on purpose.
def davis_seg2bmap(seg):
    seg = seg.astype(bool)
    seg[seg > 0] = 1
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def skimage_disk(radius):
    L = np.arange(-radius, radius + 1)
    X, Y = np.meshgrid(L, L)
    return np.array((X**2 + Y**2) <= radius**2, dtype=np.uint8)


def davis_f_measure(foreground_mask, gt_mask, bound_th=0.008):
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(foreground_mask.shape))
    fg_boundary = davis_seg2bmap(foreground_mask)
    gt_boundary = davis_seg2bmap(gt_mask)
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), skimage_disk(bound_pix).astype(np.uint8))
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), skimage_disk(bound_pix).astype(np.uint8))
    gt_match = gt_boundary * fg_dil
    fg_match = fg_boundary * gt_dil
    n_fg = np.sum(fg_boundary)
    n_gt = np.sum(gt_boundary)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision = np.sum(fg_match) / float(n_fg)
        recall = np.sum(gt_match) / float(n_gt)
    if precision + recall == 0:
        return 0
    return 2 * precision * recall / (precision + recall)


def davis_iou(annotation, segmentation):
    annotation, segmentation = annotation.astype(bool), segmentation.astype(bool)
    inters = np.sum(segmentation & annotation)
    union = np.sum(segmentation | annotation)
    return 1 if np.isclose(union, 0) else inters / union


def blobs(rng, shape, n):
    """A random mask: a few filled ellipses, cut by the image border now and then."""
    m = np.zeros(shape, np.uint8)
    for _ in range(n):
        c = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
        axes = (int(rng.integers(2, shape[1] // 3)), int(rng.integers(2, shape[0] // 3)))
        cv2.ellipse(m, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return m.astype(bool)


# ------------------------------------------------------------------------------------ hand cases
def square(shape, x0, y0, side):
    m = np.zeros(shape, bool)
    m[y0 : y0 + side, x0 : x0 + side] = True
    return m


def test_identical_disjoint_and_empty():
    a = square((60, 80), 10, 10, 20)
    far = square((60, 80), 50, 35, 20)
    empty = np.zeros((60, 80), bool)
    assert region_j(a, a) == 1.0 and boundary_f(a, a) == 1.0
    assert region_j(a, far) == 0.0 and boundary_f(a, far) == 0.0
    assert region_j(empty, empty) == 1.0 and boundary_f(empty, empty) == 1.0
    assert region_j(a, empty) == 0.0 and boundary_f(a, empty) == 0.0
    assert region_j(empty, a) == 0.0 and boundary_f(empty, a) == 0.0


def test_one_pixel_shift_of_a_square():
    shape, side = (100, 120), 30
    gt = square(shape, 40, 30, side)
    pred = square(shape, 41, 30, side)
    assert boundary_radius(shape) == math.ceil(0.008 * math.hypot(100, 120)) == 2
    assert region_j(pred, gt) == pytest.approx((side - 1) / (side + 1), abs=1e-12)
    assert boundary_f(pred, gt) == 1.0
    # with a tolerance of 1 pixel the 1-pixel shift is still matched everywhere ...
    assert boundary_f(pred, gt, bound_th=1) == 1.0
    # ... while after a 3-pixel shift the vertical edges lie beyond it: about half the boundary
    pred3 = square(shape, 43, 30, side)
    assert boundary_f(pred3, gt, bound_th=1) == pytest.approx(davis_f_measure(pred3, gt, bound_th=1)) == 0.5


def test_seg2bmap_and_disk_match_the_reference():
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = blobs(rng, (37, 53), 3)
        np.testing.assert_array_equal(seg2bmap(m), davis_seg2bmap(m))
    for r in range(0, 9):
        np.testing.assert_array_equal(disk(r), skimage_disk(r))
    assert boundary_radius((480, 854)) == 8


@pytest.mark.parametrize("seed", range(4))
def test_j_and_f_match_a_literal_transcription_of_davis(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(40, 130)), int(rng.integers(40, 160)))
    for _ in range(6):
        gt = blobs(rng, shape, int(rng.integers(1, 4)))
        pred = gt.copy() if rng.random() < 0.2 else blobs(rng, shape, int(rng.integers(0, 4)))
        if rng.random() < 0.5:  # a perturbed copy: the interesting, partially matched case
            pred = np.roll(gt, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
        for th in (0.008, 0.02, 3):
            assert boundary_f(pred, gt, th) == pytest.approx(davis_f_measure(pred, gt, th), abs=1e-12)
        assert region_j(pred, gt) == pytest.approx(davis_iou(gt, pred), abs=1e-12)


def test_void_pixels_are_ignored():
    gt = square((40, 40), 5, 5, 10)
    pred = gt.copy()
    pred[30:35, 30:35] = True  # a false positive ...
    void = np.zeros_like(gt)
    void[28:38, 28:38] = True  # ... inside void pixels
    assert region_j(pred, gt) < 1.0 and boundary_f(pred, gt) < 1.0
    assert region_j(pred, gt, void=void) == 1.0 and boundary_f(pred, gt, void=void) == 1.0


def test_shape_errors():
    with pytest.raises(ValueError, match="same"):
        region_j(np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="2-D"):
        boundary_f(np.zeros((3, 4, 1)), np.zeros((3, 4, 1)))


# ------------------------------------------------------------------------------------ evaluate
def save(folder, name, labels):
    folder.mkdir(exist_ok=True)
    Image.fromarray(np.asarray(labels, np.uint8)).save(folder / name)


def test_evaluate_folders(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    shape = (60, 80)
    a, b = square(shape, 5, 5, 20), square(shape, 40, 30, 15)
    g0 = a * 1 + b * 2
    g1 = a * 1  # object 2 absent from frame 1's ground truth
    save(gt_dir, "00000.png", g0)
    save(gt_dir, "00010.png", g1)
    save(gt_dir, "00020.png", g1)
    shifted = square(shape, 6, 5, 20)
    save(pred_dir, "00000.png", g0)  # perfect
    save(pred_dir, "00010.png", shifted * 1 + b * 2)  # object 1 shifted, object 2 a false positive
    save(pred_dir, "00099.png", g0)  # no ground truth: ignored; 00020 is missing: empty
    res = evaluate(pred_dir, gt_dir)
    assert res["frames"] == ["00000.png", "00010.png", "00020.png"] and res["missing"] == ["00020.png"]
    o1, o2 = res["objects"][1], res["objects"][2]
    j_shift = region_j(shifted, a)
    assert o1["J"] == pytest.approx((1 + j_shift + 0) / 3)
    assert o1["F"] == pytest.approx((1 + boundary_f(shifted, a) + 0) / 3)
    assert o2["per_frame"] == {"00000.png": (1.0, 1.0), "00010.png": (0.0, 0.0), "00020.png": (1.0, 1.0)}
    assert o2["J&F"] == pytest.approx(2 / 3)
    assert res["J"] == pytest.approx((o1["J"] + o2["J"]) / 2)
    assert res["J&F"] == pytest.approx((res["J"] + res["F"]) / 2)
    assert res["J&F"] == pytest.approx((o1["J&F"] + o2["J&F"]) / 2)
    # per object: the frames where its ground truth has it but no prediction file exists
    assert o1["missing"] == ["00020.png"] and o2["missing"] == []
    # excluding the prompted frame, by number (int or digit string, as `sam2s eval --exclude 0`) or name
    assert evaluate(pred_dir, gt_dir, exclude=[0])["frames"] == ["00010.png", "00020.png"]
    assert evaluate(pred_dir, gt_dir, exclude=["0"])["frames"] == ["00010.png", "00020.png"]
    assert evaluate(pred_dir, gt_dir, exclude=["10", 20])["frames"] == ["00000.png"]
    assert evaluate(pred_dir, gt_dir, exclude=["00000.png", "00010"])["frames"] == ["00020.png"]
    with pytest.raises(TypeError, match="frame numbers"):
        evaluate(pred_dir, gt_dir, exclude=[0.5])


def test_evaluate_errors(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    with pytest.raises(ValueError, match="No ground-truth label PNG"):
        evaluate(pred_dir, gt_dir)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate(tmp_path / "none", gt_dir)
    save(gt_dir, "00000.png", np.zeros((10, 12)))
    with pytest.raises(ValueError, match="no object"):
        evaluate(pred_dir, gt_dir)
    save(gt_dir, "00000.png", square((10, 12), 2, 2, 4))
    save(pred_dir, "00000.png", np.zeros((10, 13)))
    with pytest.raises(ValueError, match=r"13x10 \(W x H\) but its ground truth .* is 12x10"):
        evaluate(pred_dir, gt_dir)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(pred_dir / "00000.png")
    with pytest.raises(ValueError, match="single-channel"):
        evaluate(pred_dir, gt_dir)


def test_copying_the_first_mask_forward_on_the_real_clip(shared_data, tmp_path):
    """The dataset README's baseline: the frame-0 mask copied to frames 30..120 scores 0.09."""
    masks = shared_data / "masks"
    first = np.asarray(Image.open(masks / "00000.png"))
    for t in (30, 60, 90, 120):
        save(tmp_path, f"{t:05d}.png", first)
    res = evaluate(tmp_path, masks, exclude=[0])
    assert res["frames"] == ["00030.png", "00060.png", "00090.png", "00120.png"]
    assert res["J&F"] == pytest.approx(0.09, abs=0.005)


def test_read_labels_16_bit(tmp_path):
    """16-bit label PNGs are read when every value is a valid 8-bit label; labels above 255 are
    refused naming the file and the valid range."""
    ok = np.array([[0, 1], [254, 255]], np.uint16)
    Image.fromarray(ok).save(tmp_path / "ok.png")
    assert Image.open(tmp_path / "ok.png").mode.startswith("I")
    labels = read_labels(tmp_path / "ok.png")
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, ok)
    Image.fromarray(np.array([[0, 1], [2, 300]], np.uint16)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match=r"big\.png has labels 0\.\.300 outside the valid range 0\.\.255"):
        read_labels(tmp_path / "big.png")


# ------------------------------------------------------------------- MONAI: Dice, HD95, NSD
def squares(k: int, size: int = 40, side: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Two ``side x side`` squares, the second shifted ``k`` pixels right."""
    a = np.zeros((size, size), np.uint8)
    b = np.zeros((size, size), np.uint8)
    a[10 : 10 + side, 10 : 10 + side] = 1
    b[10 : 10 + side, 10 + k : 10 + k + side] = 1
    return a, b


@pytest.mark.parametrize("k", [1, 3])
def test_monai_figures_on_shifted_squares(k):
    pytest.importorskip("monai")
    pytest.importorskip("scipy")
    from sam2sapp.metrics import overlap_metrics

    a, b = squares(k)
    m = overlap_metrics(a, b, nsd_tolerance=k - 0.5)
    assert m["Dice"] == pytest.approx(2 * 10 * (10 - k) / 200)  # overlap 10 x (10 - k) of two 100-pixel squares
    assert m["HD95"] == pytest.approx(k)  # every left / right edge pixel is k away
    assert 0 < m["NSD"] < 1  # the shifted left and right edges lie beyond a tolerance below k
    assert overlap_metrics(a, b, nsd_tolerance=k)["NSD"] == pytest.approx(1.0)
    assert overlap_metrics(a, a)["Dice"] == pytest.approx(1.0) and overlap_metrics(a, a)["HD95"] == 0.0


def test_monai_figures_with_empty_masks():
    pytest.importorskip("monai")
    pytest.importorskip("scipy")
    from sam2sapp.metrics import overlap_metrics

    a, _ = squares(0)
    z = np.zeros_like(a)
    assert overlap_metrics(z, z) is None  # both empty: skipped
    for p, g in ((a, z), (z, a)):
        assert overlap_metrics(p, g) == {"Dice": 0.0, "HD95": None, "NSD": 0.0}
    with pytest.raises(ValueError, match="nsd_tolerance"):
        overlap_metrics(a, a, nsd_tolerance=0)


@pytest.fixture
def eval_dirs(tmp_path):
    """Frames 00000..00003: object 1 = square shifted 2 px in the prediction; object 2 = present in
    the ground truth of frame 1 only, predicted on frames 1 and 3 (a false positive there)."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    a, b = squares(2)
    for i in range(4):
        g, p = a.copy(), b.copy()
        if i == 1:
            g[30:36, 30:36] = 2
            p[30:36, 30:36] = 2
        if i == 3:
            p[30:34, 30:34] = 2
        Image.fromarray(g).save(gt / f"{i:05d}.png")
        Image.fromarray(p).save(pred / f"{i:05d}.png")
    return pred, gt


def test_evaluate_with_monai(eval_dirs):
    pytest.importorskip("monai")
    pytest.importorskip("scipy")
    pred, gt = eval_dirs
    plain = evaluate(pred, gt)
    res = evaluate(pred, gt, monai=True, nsd_tolerance=2)
    for key in ("J", "F", "J&F"):  # J&F unchanged by the extra figures
        assert res[key] == plain[key]
    o1, o2 = res["objects"][1], res["objects"][2]
    assert o1["Dice"] == pytest.approx(0.8) and o1["HD95"] == pytest.approx(2.0) and o1["NSD"] == pytest.approx(1.0)
    assert o1["frames_scored"] == 4 and o1["HD95_undefined"] == 0
    # object 2: frame 1 perfect, frame 3 a false positive (Dice 0, NSD 0, HD95 undefined), 0 and 2 skipped
    assert o2["frames_scored"] == 2 and o2["HD95_undefined"] == 1
    assert o2["Dice"] == pytest.approx(0.5) and o2["NSD"] == pytest.approx(0.5) and o2["HD95"] == 0.0
    per = o2["metrics_per_frame"]
    assert per["00000.png"] == {"J": 1.0, "F": 1.0, "J&F": 1.0, "Dice": None, "HD95": None, "NSD": None}
    assert per["00003.png"]["Dice"] == 0.0 and per["00003.png"]["HD95"] is None and per["00003.png"]["J"] == 0.0
    assert res["Dice"] == pytest.approx(0.65) and res["nsd_tolerance"] == 2.0


def test_eval_cli_json_and_plot(eval_dirs, tmp_path, capsys):
    pytest.importorskip("monai")
    pytest.importorskip("matplotlib")
    from sam2sapp import cli

    pred, gt = eval_dirs
    plot = tmp_path / "jf.png"
    assert cli.main(["eval", str(pred), str(gt), "--json", "--nsd-tolerance", "1", "--plot", str(plot)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["nsd_tolerance"] == 1.0
    for key in ("J", "F", "J&F", "Dice", "HD95", "NSD"):
        assert isinstance(res[key], float) and isinstance(res["objects"]["1"][key], float)
        assert key in res["objects"]["1"]["metrics_per_frame"]["00002.png"]
    assert res["objects"]["1"]["NSD"] < 1.0  # 2-pixel shift beyond the 1-pixel tolerance
    with Image.open(plot) as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert cli.main(["eval", str(pred), str(gt)]) == 0
    out = capsys.readouterr().out
    assert "Dice" in out and "HD95" in out and "NSD" in out and "tolerance 2 px" in out
    assert cli.main(["eval", str(pred), str(gt), "--nsd-tolerance", "0"]) == 2


def test_eval_without_monai_prints_jf_and_says_how_to_install(eval_dirs, tmp_path):
    pred, gt = eval_dirs
    proc = run_without(["monai"], ["-m", "sam2sapp", "eval", str(pred), str(gt)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert 'pip install -e ".[metrics]"' in proc.stderr and "Traceback" not in proc.stderr
    assert "J&F" in proc.stdout and "mean" in proc.stdout and "Dice" not in proc.stdout
