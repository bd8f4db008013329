"""Masklet statistics (``SAM2SSlicerLib.stats``): ``sam2s track --stats`` on both paths against
values computed from the label PNGs, the engine's confidence accessor, the review list, the PNG
plots and the module's MRML table / plot nodes with ``controller.jumpToFrame``."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
from PIL import Image

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("matplotlib", reason="the plots need matplotlib (pip install matplotlib)")

from conftest import random_model  # noqa: E402
from sam2s import VideoTracker  # noqa: E402
from sam2s.flow import FlowTracker  # noqa: E402
from sam2s.frames import open_frames  # noqa: E402
from sam2s.modelspec import ModelSpec  # noqa: E402
from sam2sapp.track import TrackRequest, run_tracking  # noqa: E402
from sam2sapp.visualize import write_video  # noqa: E402
from SAM2SSlicerLib import headless, segments  # noqa: E402
from SAM2SSlicerLib.controller import JsonSettingsStore, SAM2SController, frameOfSlice  # noqa: E402
from SAM2SSlicerLib.stats import (  # noqa: E402
    PLOT_SIZE_PX,
    STATS_COLUMNS,
    MaskletStatistics,
    frameOfPlotPoint,
    frameOfTableRow,
    maskProperties,
    showStatisticsInLayout,
)
from SAM2SSlicerLib.synthetic import SyntheticClip  # noqa: E402
from slicertrack import track_in_slicer  # noqa: E402

FRAMES, HEIGHT, WIDTH = 8, 48, 64
PROMPT_FRAME = 2
LAST = 3  # the sam2 runs track frames 0..LAST only (random weights on the CPU: keep it short)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """An 8-frame 64x48 mp4 with 2 objects, mask prompts on frame 2 (tracking runs both ways)."""
    folder = tmp_path_factory.mktemp("clip")
    source = SyntheticClip(FRAMES, HEIGHT, WIDTH, 2, seed=4)
    write_video(folder / "video.mp4", (source.get(i) for i in range(FRAMES)), 25)
    for k in range(2):
        Image.fromarray(source.mask(PROMPT_FRAME, k).astype(np.uint8) * 255).save(folder / f"m{k}.png")
    objects = [
        {"id": 1, "name": "grasper", "prompts": [{"frame": PROMPT_FRAME, "mask": "m0.png"}]},
        {"id": 3, "name": "gallbladder", "prompts": [{"frame": PROMPT_FRAME, "mask": "m1.png"}]},
    ]
    (folder / "prompts.json").write_text(json.dumps({"objects": objects}))
    return folder


@pytest.fixture(scope="module")
def model():
    return random_model("sam2.1_hiera_t", 64)


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def expected_rows(png_dir, names: dict[int, str]) -> list[dict]:
    """The statistics computed here, independently, from the label PNGs (pixel value = object id)."""
    rows = []
    for t in range(FRAMES):
        labels = np.array(Image.open(png_dir / f"{t:05d}.png"))
        for objectId, name in names.items():
            ys, xs = np.where(labels == objectId)
            row = {"frame": t, "object_id": objectId, "name": name, "present": int(len(xs) > 0), "area_px": len(xs)}
            if len(xs):
                row.update(
                    centroid_x=xs.sum() / len(xs),
                    centroid_y=ys.sum() / len(ys),
                    bbox_x=xs.min(),
                    bbox_y=ys.min(),
                    bbox_w=xs.max() - xs.min() + 1,
                    bbox_h=ys.max() - ys.min() + 1,
                )
            rows.append(row)
    return rows


def assert_rows_match(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        for key in ("frame", "object_id", "present", "area_px"):
            assert int(g[key]) == e[key], (key, g, e)
        assert g["name"] == e["name"]
        if e["present"]:
            for key in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"):
                assert int(g[key]) == e[key], (key, g, e)
            for key in ("centroid_x", "centroid_y"):
                assert float(g[key]) == pytest.approx(e[key], abs=1e-3), (key, g, e)
        else:
            assert all(g[k] == "" for k in ("centroid_x", "centroid_y", "bbox_x", "bbox_y", "bbox_w", "bbox_h"))


def assert_png(path, size) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size == size


def test_flow_stats_of_both_front_ends_match_the_label_pngs(clip, tmp_path):
    """``sam2s track --stats`` and the Slicer module's statistics of the same prompts."""
    names = {1: "grasper", 3: "gallbladder"}
    outputs = {}
    flow = ModelSpec(engine="flow", device="cpu")
    request = TrackRequest(clip / "video.mp4", clip / "prompts.json", model=flow, progress=False)
    for label in ("slicer", "stream"):
        out = tmp_path / label
        out.mkdir()
        if label == "slicer":
            track_in_slicer(clip / "video.mp4", clip / "prompts.json", out, seg=False, stats=True).close()
            result = {"outputs": {"stats": str(out / "stats")}}
        else:
            result = run_tracking(dataclasses.replace(request, png_dir=out / "png", stats=out / "stats"))
        assert result["outputs"]["stats"] == str(out / "stats")
        assert sorted(p.name for p in (out / "stats").iterdir()) == [
            "area.png",
            "presence.png",
            "provenance.json",
            "review.csv",
            "stats.csv",
        ]
        rows = read_csv(out / "stats" / "stats.csv")
        assert tuple(rows[0].keys()) == STATS_COLUMNS
        assert_rows_match(rows, expected_rows(out / "png", names))
        assert all(r["predicted_iou"] == "" and r["object_score"] == "" for r in rows)  # the flow engine has none
        assert any(r["present"] == "1" for r in rows)
        for plot in ("area.png", "presence.png"):
            assert_png(out / "stats" / plot, PLOT_SIZE_PX)
        outputs[label] = out
    for name in ("stats.csv", "review.csv"):
        assert (outputs["slicer"] / "stats" / name).read_bytes() == (outputs["stream"] / "stats" / name).read_bytes()
    assert FlowTracker(np.zeros((2, 16, 16, 3), np.uint8)).confidence(1, 0) is None


def test_sam2_confidence_columns_equal_the_engine_accessor(clip, model, tmp_path):
    """The confidences of both front ends equal ``VideoTracker.confidence`` of a session run here with
    the same prompts and passes (forward from the prompted frame to ``LAST``, then backward);
    frames after ``LAST`` were not tracked: empty cells."""
    tracker = VideoTracker(model, open_frames(clip / "video.mp4"))
    for k, objectId in enumerate((1, 3)):
        tracker.add_mask(PROMPT_FRAME, objectId, np.array(Image.open(clip / f"m{k}.png")) > 127)
    assert tracker.confidence(1, PROMPT_FRAME) == (1.0, pytest.approx(10.0))  # a mask prompt is used as is
    for start, end, reverse in ((PROMPT_FRAME, LAST, False), (PROMPT_FRAME - 1, 0, True)):
        for _ in tracker.propagate(start, end, reverse):
            pass
    assert tracker.confidence(1, LAST + 1) is None and tracker.confidence(7, 0) is None
    for label in ("slicer", "stream"):
        out = tmp_path / label
        if label == "slicer":
            track_in_slicer(clip / "video.mp4", clip / "prompts.json", tmp_path, model=model, image_size=64,
                            end=LAST, seg=False, png=False, stats=True).close()  # fmt: skip
            (tmp_path / "stats").rename(out)
        else:
            spec = ModelSpec(device="cpu", image_size=64)
            request = TrackRequest(clip / "video.mp4", clip / "prompts.json", stats=out, model=spec, end=LAST)
            run_tracking(dataclasses.replace(request, progress=False), model_object=model)
        rows = read_csv(out / "stats.csv")
        assert len(rows) == 2 * FRAMES
        assert all(r["predicted_iou"] == r["object_score"] == "" for r in rows if int(r["frame"]) > LAST)
        for row in rows[: 2 * (LAST + 1)]:
            iou, score = tracker.confidence(int(row["object_id"]), int(row["frame"]))
            assert float(row["predicted_iou"]) == pytest.approx(iou, rel=1e-4, abs=1e-5)
            assert float(row["object_score"]) == pytest.approx(score, rel=1e-4, abs=1e-4)
    tracker.remove_object(1)
    assert tracker.confidence(1, 0) is None and tracker.confidence(3, 0) is not None
    tracker.reset()
    assert tracker.confidence(3, 0) is None


def _square(x: int, y: int, size: int = 4) -> np.ndarray:
    mask = np.zeros((16, 20), dtype=bool)
    mask[y : y + size, x : x + size] = True
    return mask


def test_review_list_on_a_hand_built_sequence():
    stats = MaskletStatistics({2: "tool", 9: "organ"}, 8)
    for t in range(8):
        stats.addMask(t, 2, _square(t, 2) if t not in (3, 4) else np.zeros((16, 20), bool))  # gone on 3-4
        stats.addMask(t, 9, _square(10, 8, 5))
        stats.setConfidence(t, 9, (0.9, 5.0))
    stats.setConfidence(5, 9, (0.62, 3.0))  # 0.28 below the median 0.9 of the frames before: a drop
    stats.setConfidence(6, 9, (0.4, 1.0))  # below minIou = 0.5, and a drop
    stats.setConfidence(2, 2, None)
    got = [(r.frame, r.objectId, r.reason) for r in stats.review(minIou=0.5, maxDrop=0.2, window=4, minHistory=3)]
    assert got == [
        (3, 2, "disappears"),
        (5, 2, "appears"),
        (5, 9, "iou_drop"),
        (6, 9, "low_iou"),
        (6, 9, "iou_drop"),
    ]
    # a looser threshold drops the drop at frame 5 only (0.28 < 0.3; at frame 6, 0.9 - 0.4 = 0.5 > 0.3)
    looser = [(r.frame, r.reason) for r in stats.review(maxDrop=0.3) if r.objectId == 9]
    assert looser == [(6, "low_iou"), (6, "iou_drop")]
    assert maskProperties(_square(3, 5, 2)) == (4, 3.5, 5.5, (3, 5, 2, 2))
    assert maskProperties(np.zeros((4, 4), bool)) is None
    rows = stats.rows()
    assert rows[2 * 3] == dict(zip(STATS_COLUMNS, [3, 2, "tool", 0, 0, None, None, None, None, None, None, None, None]))
    with pytest.raises(ValueError):
        stats.review(window=0)


def test_module_table_plot_review_nodes_and_jump_to_frame(clip, tmp_path):
    source = SyntheticClip(FRAMES, HEIGHT, WIDTH, 2, seed=4)
    scene = headless.createHeadlessScene()
    logic = headless.createTrackingLogic(scene)
    layoutLogic = slicer.vtkMRMLLayoutLogic()  # Slicer's layout node and layout descriptions
    layoutLogic.SetMRMLScene(logic.scene)
    controller = SAM2SController(logic, JsonSettingsStore(tmp_path / "settings.json"))
    video = controller.importVideo(np.stack([source.get(i) for i in range(FRAMES)]))
    node = logic.createSegmentation()
    masks = {}
    for k, name in enumerate(("grasper", "gallbladder")):
        sid = logic.addSegment(name, (0.2 * k, 0.5, 0.9), objectId=k + 1)
        mask = np.stack([source.mask(t, k) for t in range(FRAMES)])
        if k == 0:
            mask[5:7] = False  # the grasper leaves on frames 5-6
        segments.writeSegmentFrames(node, sid, video, 0, mask)
        masks[k + 1] = mask
    logic.segmentConfidences[sid] = {t: (0.9 if t != 4 else 0.3, 2.0) for t in range(FRAMES)}
    nodes = logic.updateStatistics()

    table = nodes.table.GetTable()
    assert table.GetNumberOfRows() == 2 * FRAMES
    assert [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())] == list(STATS_COLUMNS)
    for row in range(table.GetNumberOfRows()):
        frame, objectId = (
            int(table.GetValueByName(row, "frame").ToInt()),
            table.GetValueByName(row, "object_id").ToInt(),
        )
        ys, xs = np.nonzero(masks[objectId][frame])
        assert table.GetValueByName(row, "area_px").ToInt() == len(xs)
        if len(xs):
            assert table.GetValueByName(row, "centroid_x").ToDouble() == pytest.approx(xs.mean())
            assert table.GetValueByName(row, "bbox_h").ToInt() == ys.max() - ys.min() + 1
        iou = table.GetValueByName(row, "predicted_iou").ToDouble()
        assert math.isnan(iou) if objectId == 1 else iou == pytest.approx(0.3 if frame == 4 else 0.9)
        assert frameOfTableRow(nodes.table, row) == frame

    assert nodes.chart.GetNumberOfPlotSeriesNodes() == 2 and set(nodes.series) == {1, 2}
    series = nodes.series[2]
    assert nodes.chart.GetNthPlotSeriesNodeID(1) == series.GetID()
    areaColumn = series.GetTableNode().GetTable().GetColumnByName(series.GetYColumnName())
    assert [int(areaColumn.GetValue(t)) for t in range(FRAMES)] == [int(m.sum()) for m in masks[2]]
    assert frameOfPlotPoint(series, 6) == 6 and frameOfPlotPoint(series, FRAMES) is None

    review = nodes.review.GetTable()
    entries = [
        (review.GetValueByName(r, "frame").ToInt(), review.GetValueByName(r, "object_id").ToInt(),
         review.GetValueByName(r, "reason").ToString())
        for r in range(review.GetNumberOfRows())
    ]  # fmt: skip
    assert entries == [(4, 2, "low_iou"), (4, 2, "iou_drop"), (5, 1, "disappears"), (7, 1, "appears")]
    assert frameOfTableRow(nodes.review, 2) == 5

    # N17: the layout shows the chart AND a table (ShowChartInLayout alone picks a plot layout
    # without a table view from the conventional layout); the review table, which lists frames.
    layout = layoutLogic.GetLayoutNode()
    layout.SetViewArrangement(layout.SlicerLayoutConventionalView)
    assert "vtkMRMLTableViewNode" not in layout.GetLayoutDescription(layout.SlicerLayoutConventionalPlotView)
    shown = showStatisticsInLayout(logic.scene, scene.applicationLogic, nodes)
    arrangement = layout.GetViewArrangement()
    assert arrangement == layout.SlicerLayoutFourUpPlotTableView
    description = layout.GetLayoutDescription(arrangement)
    assert "vtkMRMLTableViewNode" in description and "vtkMRMLPlotViewNode" in description
    selection = scene.applicationLogic.GetSelectionNode()
    assert shown is nodes.review and selection.GetActiveTableID() == nodes.review.GetID()
    assert selection.GetActivePlotChartID() == nodes.chart.GetID()

    again = logic.updateStatistics()  # refilled, not duplicated
    assert again.table is nodes.table and again.series[1] is nodes.series[1]
    assert logic.scene.GetNodesByClass("vtkMRMLPlotSeriesNode").GetNumberOfItems() == 2

    sliceNode = logic.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    sliceNode.SetLayoutName("Red")
    sliceNode.SetOrientation("Axial")
    for frame in (5, 0, FRAMES - 1):
        assert controller.jumpToFrame(frame)
        assert frameOfSlice(video, sliceNode.GetSliceToRAS()) == frame
    assert not controller.jumpToFrame(FRAMES)
    assert frameOfSlice(video, sliceNode.GetSliceToRAS()) == FRAMES - 1


def test_confidences_belong_to_their_segmentation(clip, model):
    """N22 of issue 23: two segmentations whose segments share an ID never show each other's
    confidences; a closed scene forgets them."""
    from SAM2SSlicerLib.settings import ModelSettings

    logic = headless.createTrackingLogic()
    logic.setModelSettings(ModelSettings(imageSize=64, device="cpu"))
    logic.setModel(model)
    logic.importVideo(str(clip / "video.mp4"))
    mask = np.array(Image.open(clip / "m0.png")) > 127
    first = logic.createSegmentation("first")
    a = logic.addSegment("grasper", objectId=1)
    logic.setMaskPrompt(a, PROMPT_FRAME, mask)
    logic.track([a], firstFrame=0, lastFrame=LAST, direction="both")
    assert sorted(logic.segmentConfidences[a]) == list(range(LAST + 1))
    second = logic.createSegmentation("second")
    b = second.GetSegmentation().AddEmptySegment(a, "grasper")  # as two copies of one .seg.nrrd have
    assert b == a  # the same segment ID in both segmentations
    assert logic.segmentConfidences == {}
    rows = logic.updateStatistics().table.GetTable()
    values = [rows.GetValueByName(r, "predicted_iou").ToDouble() for r in range(rows.GetNumberOfRows())]
    assert values and all(math.isnan(v) for v in values)  # unknown: none of the first segmentation's
    logic.setSegmentationNode(first)
    assert sorted(logic.segmentConfidences[a]) == list(range(LAST + 1))
    assert logic.confidencesOf(second) == {}
    logic.forgetNodes()  # as when the scene closes
    assert logic.confidencesOf(first) == {}
    logic.close()
