"""Masklet statistics: per object and frame presence, area, centroid, bounding box and the tracker's
confidence; a review list of frames worth a look; CSV files, PNG plots and MRML table / plot nodes.

Conventions (every number is in pixels of the video's frames, frames are 0-based):

- ``area_px``: number of mask pixels.
- ``centroid_x`` / ``centroid_y``: mean column / row of the mask pixels, x right, y down, pixel
  centres at integer coordinates (the top-left pixel's centre is ``(0, 0)``); empty for an absent object.
- bounding box: COCO style ``[bbox_x, bbox_y, bbox_w, bbox_h]`` in whole pixels: ``bbox_x`` /
  ``bbox_y`` = column / row of the leftmost / topmost mask pixel, ``bbox_w`` / ``bbox_h`` = number of
  columns / rows spanned (so the last pixel is ``bbox_x + bbox_w - 1``); empty for an absent object.
- ``predicted_iou``: the SAM 2 mask decoder's predicted IoU of the chosen mask (about 0..1) and
  ``object_score``: its object-score logit (> 0 = judged present), from
  ``sam2s.VideoTracker.confidence`` (in this process, or sent by a tracking server with each
  propagated frame); empty where the engine gives none (the flow engine, prompt results computed
  in a tracking server, frames that were not tracked in this session).

Review list (:func:`reviewList`, one row per frame, object and reason), in frame order:

- ``appears``: present on a frame, absent on the frame before (frame > 0).
- ``disappears``: absent on a frame, present on the frame before.
- ``low_iou``: present with ``predicted_iou < minIou``.
- ``iou_drop``: present with ``predicted_iou`` more than ``maxDrop`` below the median of its
  predicted IoU on the last ``window`` earlier frames where it was present (needs ``minHistory``
  of them).

Only small per-frame numbers are kept (:class:`MaskletStatistics`: a few values per frame and
object), never the masks, so streaming a long video through it costs little memory. Plots need
matplotlib (``pip install -e ".[plots]"`` or ``pip install matplotlib``), imported when a
plot is written, drawn by its Agg canvas without pyplot (no display, no global backend change).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sam2s.extras import install_hint

from .provenance import Provenance, writeProvenanceFile

__all__ = [
    "MaskletStatistics",
    "REVIEW_REASONS",
    "ReviewItem",
    "STATS_COLUMNS",
    "STATS_FILES",
    "StatisticsNodes",
    "createStatisticsNodes",
    "frameOfPlotPoint",
    "frameOfTableRow",
    "maskProperties",
    "requireMatplotlib",
    "reviewList",
    "segmentationStatistics",
    "showStatisticsInLayout",
    "writeStatisticsFolder",
]

STATS_COLUMNS = (
    "frame",
    "object_id",
    "name",
    "present",
    "area_px",
    "centroid_x",
    "centroid_y",
    "bbox_x",
    "bbox_y",
    "bbox_w",
    "bbox_h",
    "predicted_iou",
    "object_score",
)
"""Columns of ``stats.csv`` (and of the module's statistics table), in order."""
REVIEW_COLUMNS = ("frame", "object_id", "name", "reason", "detail")
"""Columns of ``review.csv``."""
REVIEW_REASONS = ("appears", "disappears", "low_iou", "iou_drop")
"""Reasons of the review list (see the module docstring)."""
STATS_FILES = ("stats.csv", "review.csv", "area.png", "presence.png")
"""What ``sam2s track --stats DIR`` writes into DIR."""
STATS_FILE_PATTERN = r"stats\.csv|review\.csv|area\.png|presence\.png|provenance\.json"
"""Regular expression of the file names of :data:`STATS_FILES` and ``provenance.PROVENANCE_FILE``
(``outputs.OutputSet.addFolder``)."""
PLOT_SIZE_PX = (800, 400)
"""``(width, height)`` in pixels of the PNG plots."""


def maskProperties(mask: np.ndarray) -> tuple[int, float, float, tuple[int, int, int, int]] | None:
    """``(area_px, centroid_x, centroid_y, (bbox_x, bbox_y, bbox_w, bbox_h))`` of a ``(H, W)`` mask
    (bool, or any dtype: nonzero = inside), see the module docstring; None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    return int(len(xs)), float(xs.mean()), float(ys.mean()), (x0, y0, x1 - x0 + 1, y1 - y0 + 1)


@dataclass(frozen=True)
class ReviewItem:
    """One entry of the review list: ``frame`` (0-based), ``objectId``, ``name``, ``reason`` (one of
    :data:`REVIEW_REASONS`) and ``detail`` (a sentence for people)."""

    frame: int
    objectId: int
    name: str
    reason: str
    detail: str


class MaskletStatistics:
    """Per object and frame statistics of ``numFrames`` frames, filled frame by frame.

    Args:
        objects: ``{objectId: name}`` in the order of the outputs.
        numFrames: frames of the video (T); frames never added count as absent.

    Arrays (index ``[frame, i]`` with ``i`` the object's position in ``objectIds``): ``area``
    ``(T, N)`` int64; ``centroid`` ``(T, N, 2)`` float64 (x, y; NaN when absent); ``bbox``
    ``(T, N, 4)`` int64 (COCO ``x, y, w, h``; 0 when absent); ``confidence`` ``(T, N, 2)`` float64
    (predicted IoU, object score; NaN when unknown). ``present`` is ``area > 0``.
    """

    def __init__(self, objects: Mapping[int, str], numFrames: int) -> None:
        if numFrames < 0:
            raise ValueError(f"numFrames must be >= 0, got {numFrames}.")
        self.objectIds = [int(o) for o in objects]
        self.names = {int(o): str(n) for o, n in objects.items()}
        self.numFrames = int(numFrames)
        n = len(self.objectIds)
        self._column = {o: i for i, o in enumerate(self.objectIds)}
        self.area = np.zeros((numFrames, n), dtype=np.int64)
        self.centroid = np.full((numFrames, n, 2), np.nan)
        self.bbox = np.zeros((numFrames, n, 4), dtype=np.int64)
        self.confidence = np.full((numFrames, n, 2), np.nan)

    @property
    def present(self) -> np.ndarray:
        """``(T, N)`` bool: the object has at least one pixel on the frame."""
        return self.area > 0

    def _index(self, frame: int, objectId: int) -> tuple[int, int]:
        if not 0 <= frame < self.numFrames:
            raise IndexError(f"Frame {frame} is outside 0..{self.numFrames - 1}.")
        if objectId not in self._column:
            raise KeyError(f"Unknown object id {objectId}; known: {self.objectIds}.")
        return int(frame), self._column[objectId]

    def addMask(self, frame: int, objectId: int, mask: np.ndarray) -> None:
        """Set ``objectId``'s statistics on ``frame`` from its ``(H, W)`` mask (nonzero = inside);
        replaces earlier values of that frame. Raises IndexError / KeyError for an unknown frame / object."""
        t, i = self._index(frame, objectId)
        props = maskProperties(mask)
        if props is None:
            self.area[t, i], self.centroid[t, i], self.bbox[t, i] = 0, np.nan, 0
        else:
            self.area[t, i], cx, cy, box = props
            self.centroid[t, i] = (cx, cy)
            self.bbox[t, i] = box

    def addLabels(self, frame: int, labels: np.ndarray) -> None:
        """Set every object's statistics on ``frame`` from a ``(H, W)`` label image (pixel value =
        object id, 0 = background; as the label PNGs)."""
        for objectId in self.objectIds:
            self.addMask(frame, objectId, labels == objectId)

    def setConfidence(self, frame: int, objectId: int, confidence: tuple[float, float] | None) -> None:
        """Store ``(predicted_iou, object_score)`` of ``objectId`` on ``frame`` (None: unknown)."""
        t, i = self._index(frame, objectId)
        self.confidence[t, i] = (np.nan, np.nan) if confidence is None else (float(confidence[0]), float(confidence[1]))

    def rows(self) -> list[dict]:
        """One dict per frame and object (frame-major, objects in order) with the keys of
        :data:`STATS_COLUMNS`; None for an empty cell (absent object, unknown confidence)."""
        out = []
        for t in range(self.numFrames):
            for i, objectId in enumerate(self.objectIds):
                present = bool(self.area[t, i] > 0)
                iou, score = (None if math.isnan(v) else float(v) for v in self.confidence[t, i])
                box = [int(v) for v in self.bbox[t, i]] if present else [None] * 4
                cx, cy = (float(v) for v in self.centroid[t, i]) if present else (None, None)
                out.append(
                    dict(
                        zip(
                            STATS_COLUMNS,
                            [t, objectId, self.names[objectId], int(present), int(self.area[t, i]), cx, cy, *box]
                            + [iou, score],
                        )
                    )
                )
        return out

    def review(
        self, minIou: float = 0.5, maxDrop: float = 0.2, window: int = 10, minHistory: int = 3
    ) -> list[ReviewItem]:
        """The review list of these statistics (:func:`reviewList`)."""
        return reviewList(self, minIou, maxDrop, window, minHistory)


def reviewList(
    stats: MaskletStatistics, minIou: float = 0.5, maxDrop: float = 0.2, window: int = 10, minHistory: int = 3
) -> list[ReviewItem]:
    """Frames where an object appears, disappears or the tracker's confidence drops (see the module
    docstring for the rules), sorted by frame, then object order, then reason order.

    Args:
        minIou: ``low_iou`` below this predicted IoU. maxDrop: ``iou_drop`` when the predicted IoU is
            more than this below the running median. window: earlier present frames in the median.
        minHistory: earlier present frames with a known IoU needed before ``iou_drop`` is judged.

    Raises:
        ValueError: ``window`` or ``minHistory`` < 1.
    """
    if window < 1 or minHistory < 1:
        raise ValueError("window and minHistory must be >= 1.")
    items: list[ReviewItem] = []
    present = stats.present
    for i, objectId in enumerate(stats.objectIds):
        name = stats.names[objectId]
        history: list[float] = []
        for t in range(stats.numFrames):
            here = bool(present[t, i])
            if t > 0 and here != bool(present[t - 1, i]):
                reason = "appears" if here else "disappears"
                detail = (
                    f"present on frame {t}, absent on frame {t - 1}" if here else f"absent, present on frame {t - 1}"
                )
                items.append(ReviewItem(t, objectId, name, reason, detail))
            iou = float(stats.confidence[t, i, 0])
            if not here or math.isnan(iou):
                continue
            if iou < minIou:
                items.append(ReviewItem(t, objectId, name, "low_iou", f"predicted IoU {iou:.3f} < {minIou:g}"))
            recent = history[-window:]
            if len(recent) >= minHistory:
                median = float(np.median(recent))
                if median - iou > maxDrop:
                    items.append(
                        ReviewItem(
                            t,
                            objectId,
                            name,
                            "iou_drop",
                            f"predicted IoU {iou:.3f} is {median - iou:.3f} below the median {median:.3f} of "
                            f"the last {len(recent)} frames (> {maxDrop:g})",
                        )
                    )
            history.append(iou)
    order = {o: k for k, o in enumerate(stats.objectIds)}
    items.sort(key=lambda r: (r.frame, order[r.objectId], REVIEW_REASONS.index(r.reason)))
    return items


# ------------------------------------------------------------------------------------- files
def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def statsCsv(stats: MaskletStatistics) -> str:
    """The text of ``stats.csv``: a header of :data:`STATS_COLUMNS`, then :meth:`MaskletStatistics.rows`
    (floats with 6 significant digits, empty cells for None)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(STATS_COLUMNS)
    for row in stats.rows():
        writer.writerow([_cell(row[c]) for c in STATS_COLUMNS])
    return buffer.getvalue()


def reviewCsv(items: Sequence[ReviewItem]) -> str:
    """The text of ``review.csv``: ``frame, object_id, name, reason, detail``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REVIEW_COLUMNS)
    for r in items:
        writer.writerow([r.frame, r.objectId, r.name, r.reason, r.detail])
    return buffer.getvalue()


def requireMatplotlib() -> None:
    """Raise ImportError (saying how to install it) when matplotlib, needed by the plots, is missing."""
    _figure()


def _figure():
    """A new ``matplotlib.figure.Figure`` of :data:`PLOT_SIZE_PX` drawn by the Agg canvas (no
    display, no pyplot state: the backend of a running application is left alone), or
    ImportError saying how to install matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(f"The statistics plots need matplotlib: {install_hint('plots', 'matplotlib')}.") from None
    width, height = PLOT_SIZE_PX
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _colour(colors: Mapping[int, Sequence[float]] | None, objectId: int, k: int):
    if colors and objectId in colors:
        return tuple(float(c) for c in colors[objectId][:3])
    return f"C{k % 10}"


def plotArea(
    stats: MaskletStatistics, path: str | os.PathLike, colors: Mapping[int, Sequence[float]] | None = None
) -> None:
    """Write a PNG of each object's area (pixels, 0 when absent) over the frames, :data:`PLOT_SIZE_PX`.
    ``colors``: ``{objectId: (r, g, b)}`` in 0..1 (default: matplotlib's cycle). Raises ImportError
    without matplotlib, OSError when the file cannot be written."""
    fig = _figure()
    ax = fig.subplots()
    frames = np.arange(stats.numFrames)
    for k, objectId in enumerate(stats.objectIds):
        ax.plot(
            frames, stats.area[:, k], label=f"{objectId}: {stats.names[objectId]}", color=_colour(colors, objectId, k)
        )
    ax.set_xlabel("frame")
    ax.set_ylabel("area (pixels)")
    ax.set_title("Masklet area per frame")
    if stats.objectIds:
        ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100, format="png")


def plotPresence(
    stats: MaskletStatistics, path: str | os.PathLike, colors: Mapping[int, Sequence[float]] | None = None
) -> None:
    """Write a PNG timeline of where each object is present (one row per object, a bar per run of
    present frames), :data:`PLOT_SIZE_PX`. Raises ImportError without matplotlib, OSError on write errors."""
    fig = _figure()
    ax = fig.subplots()
    present = stats.present
    for k, objectId in enumerate(stats.objectIds):
        runs = _runs(np.flatnonzero(present[:, k]))
        ax.broken_barh([(b - 0.5, e - b + 1) for b, e in runs], (k - 0.4, 0.8), color=_colour(colors, objectId, k))
    ax.set_yticks(range(len(stats.objectIds)))
    ax.set_yticklabels([f"{o}: {stats.names[o]}" for o in stats.objectIds])
    ax.set_ylim(-0.6, max(len(stats.objectIds), 1) - 0.4)
    ax.set_xlim(-0.5, max(stats.numFrames, 1) - 0.5)
    ax.invert_yaxis()
    ax.set_xlabel("frame")
    ax.set_title("Masklet presence")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100, format="png")


def _runs(frames: Iterable[int]) -> list[tuple[int, int]]:
    """Inclusive ``(begin, end)`` runs of consecutive sorted frame indices."""
    runs: list[tuple[int, int]] = []
    for f in frames:
        f = int(f)
        if runs and runs[-1][1] == f - 1:
            runs[-1] = (runs[-1][0], f)
        else:
            runs.append((f, f))
    return runs


def writeStatisticsFolder(
    stats: MaskletStatistics,
    folder: str | os.PathLike,
    colors: Mapping[int, Sequence[float]] | None = None,
    provenance: Provenance | None = None,
    **reviewOptions,
) -> list[Path]:
    """Write :data:`STATS_FILES` into ``folder`` (an existing folder, e.g. the staging folder of
    ``outputs.OutputSet.writeFolder``, which makes the set atomic), and ``provenance``'s
    ``provenance.PROVENANCE_FILE`` when given. ``reviewOptions`` go to :func:`reviewList`. Returns
    the paths written.

    Raises:
        ImportError: matplotlib is missing (before anything is written). OSError: a write failed.
    """
    _figure()
    folder = Path(folder)
    paths = [folder / name for name in STATS_FILES]
    paths[0].write_text(statsCsv(stats), encoding="utf-8")
    paths[1].write_text(reviewCsv(stats.review(**reviewOptions)), encoding="utf-8")
    plotArea(stats, paths[2], colors)
    plotPresence(stats, paths[3], colors)
    if provenance is not None:
        paths.append(writeProvenanceFile(folder, provenance))
    return paths


# ------------------------------------------------------------------------------------- MRML
def segmentationStatistics(
    segmentationNode,
    videoNode,
    segmentIds: Iterable[str] | None = None,
    confidences: Mapping[str, Mapping[int, tuple[float, float]]] | None = None,
    labels: bool = False,
) -> tuple[MaskletStatistics, dict[int, tuple[float, float, float]]]:
    """Statistics of segments of a segmentation on a video volume (K = frame).

    Objects are the segments' tracker object ids (``segments.assignObjectId``; assigned when
    missing), named as the segments, in object-id order.

    Args:
        segmentIds: the segments (default: all). confidences: ``{segmentId: {frame: (predicted_iou,
            object_score)}}`` (``SAM2STrackingLogic.segmentConfidences``).
        labels: False: each segment's own mask; True: the label image of all of them
            (``export.labelFrames``, overlaps to the larger id, as the label PNGs).

    Returns:
        ``(statistics, {objectId: (r, g, b)})`` with the segments' colours (0..1).

    Raises:
        KeyError: an unknown segment.
    """
    from . import export as _export
    from . import segments as _segments

    segmentation = segmentationNode.GetSegmentation()
    allIds = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    ids = allIds if segmentIds is None else list(segmentIds)
    unknown = [s for s in ids if s not in allIds]
    if unknown:
        raise KeyError(f"Unknown segments {unknown}.")
    objectOf = {s: _segments.assignObjectId(segmentationNode, s) for s in ids}
    ids.sort(key=lambda s: objectOf[s])
    names = {objectOf[s]: segmentation.GetSegment(s).GetName() for s in ids}
    colors = {objectOf[s]: tuple(float(c) for c in segmentation.GetSegment(s).GetColor()) for s in ids}
    frames = videoNode.GetImageData().GetDimensions()[2]
    statistics = MaskletStatistics(names, frames)
    if labels:
        labelArray = _export.labelFrames(segmentationNode, videoNode, ids)
        for t in range(frames):
            statistics.addLabels(t, labelArray[t])
    else:
        for s in ids:
            mask = _segments.readSegmentMask(segmentationNode, s, videoNode)
            for t in range(frames):
                statistics.addMask(t, objectOf[s], mask[t])
    for s in ids:
        for frame, value in (confidences or {}).get(s, {}).items():
            if 0 <= frame < frames:
                statistics.setConfidence(frame, objectOf[s], value)
    return statistics, colors


@dataclass
class StatisticsNodes:
    """The module's statistics nodes: ``table`` (:data:`STATS_COLUMNS`, one row per frame and
    object), ``areaTable`` (``frame`` then one ``area <id>`` column per object, row = frame),
    ``chart`` (``vtkMRMLPlotChartNode``) with ``series`` (one ``vtkMRMLPlotSeriesNode`` per object
    id: area over frames, x = frame) and ``review`` (``frame, object_id, name, reason, detail``)."""

    table: object
    areaTable: object
    chart: object
    series: dict[int, object]
    review: object


def _fillTable(tableNode, columns: Sequence[str], rows: Sequence[Sequence], kinds: Sequence[str]) -> None:
    """Replace ``tableNode``'s columns; ``kinds``: ``"int"``, ``"double"`` (None -> NaN) or ``"str"``."""
    import vtk

    table = tableNode.GetTable()
    table.Initialize()
    for c, (column, kind) in enumerate(zip(columns, kinds)):
        array = {"int": vtk.vtkIntArray, "double": vtk.vtkDoubleArray, "str": vtk.vtkStringArray}[kind]()
        array.SetName(column)
        array.SetNumberOfValues(len(rows))
        for r, row in enumerate(rows):
            value = row[c]
            if kind == "double":
                array.SetValue(r, math.nan if value is None else float(value))
            elif kind == "int":
                array.SetValue(r, -1 if value is None else int(value))
            else:
                array.SetValue(r, str(value))
        table.AddColumn(array)
    tableNode.Modified()


def _node(scene, className: str, name: str, existing):
    if existing is not None and existing.GetScene() is scene:
        return existing
    node = scene.AddNewNodeByClass(className, scene.GenerateUniqueName(name))
    return node


def createStatisticsNodes(
    scene,
    stats: MaskletStatistics,
    colors: Mapping[int, Sequence[float]] | None = None,
    name: str = "Masklet statistics",
    previous: StatisticsNodes | None = None,
    **reviewOptions,
) -> StatisticsNodes:
    """Make (or, given ``previous`` nodes still in ``scene``, refill) the statistics nodes.

    Table cells: ints in ``vtkIntArray`` (bbox -1 when absent), floats in ``vtkDoubleArray`` (NaN
    when empty), ``name`` as strings. ``colors``: ``{objectId: (r, g, b)}`` 0..1 for the series.
    ``reviewOptions`` go to :func:`reviewList`.
    """
    kinds = ["int", "int", "str", "int", "int", "double", "double", "int", "int", "int", "int", "double", "double"]
    table = _node(scene, "vtkMRMLTableNode", name, previous and previous.table)
    _fillTable(table, STATS_COLUMNS, [[row[c] for c in STATS_COLUMNS] for row in stats.rows()], kinds)
    areaTable = _node(scene, "vtkMRMLTableNode", f"{name} area", previous and previous.areaTable)
    areaColumns = ["frame"] + [f"area {o}" for o in stats.objectIds]
    areaRows = [[t, *(int(a) for a in stats.area[t])] for t in range(stats.numFrames)]
    _fillTable(areaTable, areaColumns, areaRows, ["int"] * len(areaColumns))
    review = _node(scene, "vtkMRMLTableNode", f"{name} review", previous and previous.review)
    items = stats.review(**reviewOptions)
    _fillTable(
        review,
        REVIEW_COLUMNS,
        [[r.frame, r.objectId, r.name, r.reason, r.detail] for r in items],
        ["int", "int", "str", "str", "str"],
    )
    chart = _node(scene, "vtkMRMLPlotChartNode", f"{name} area chart", previous and previous.chart)
    chart.SetTitle("Masklet area per frame")
    chart.SetXAxisTitle("frame")
    chart.SetYAxisTitle("area (pixels)")
    old = dict(previous.series) if previous is not None else {}
    series: dict[int, object] = {}
    for objectId in stats.objectIds:
        node = _node(scene, "vtkMRMLPlotSeriesNode", f"{stats.names[objectId]} area", old.pop(objectId, None))
        node.SetAndObserveTableNodeID(areaTable.GetID())
        node.SetXColumnName("frame")
        node.SetYColumnName(f"area {objectId}")
        node.SetPlotType(node.PlotTypeScatter)
        node.SetMarkerStyle(node.MarkerStyleCircle)
        if colors and objectId in colors:
            node.SetColor(*[float(c) for c in colors[objectId][:3]])
        series[objectId] = node
    for node in old.values():
        if node.GetScene() is scene:
            scene.RemoveNode(node)
    chart.RemoveAllPlotSeriesNodeIDs()
    for node in series.values():
        chart.AddAndObservePlotSeriesNodeID(node.GetID())
    return StatisticsNodes(table, areaTable, chart, series, review)


def showStatisticsInLayout(scene, applicationLogic, nodes: StatisticsNodes):
    """Show the area chart AND a table in the view layout; returns the table node shown.

    ``vtkSlicerPlotsLogic::ShowChartInLayout`` alone switches to a layout with a plot view and no
    table view (``GetLayoutWithPlot``: conventional -> ``SlicerLayoutConventionalPlotView``, most
    others -> ``SlicerLayoutFourUpPlotView``), so the statistics and review tables were never shown
    and a clicked row never moved to its frame (N17). Here the layout becomes
    ``SlicerLayoutFourUpPlotTableView`` (38: slice views, a plot view and a table view;
    ``Libs/MRML/Core/vtkMRMLLayoutNode.h``), and the selection node's active plot chart and table
    are set and propagated to the views, as ``ShowChartInLayout`` and the Tables module do
    (``vtkMRMLApplicationLogic::PropagatePlotChartSelection`` / ``PropagateTableSelection``).

    The table shown is the review table when it lists frames to check, otherwise the statistics
    table (the table view's node selector offers the other one).

    Args:
        scene: the ``vtkMRMLScene``; its first ``vtkMRMLLayoutNode`` is changed (none headless: the
            selection is still set).
        applicationLogic: the ``vtkMRMLApplicationLogic`` (``slicer.app.applicationLogic()``).
        nodes: what ``createStatisticsNodes`` / ``SAM2STrackingLogic.updateStatistics`` made.
    """
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is not None and layout.GetViewArrangement() != layout.SlicerLayoutFourUpPlotTableView:
        layout.SetViewArrangement(layout.SlicerLayoutFourUpPlotTableView)
    review = nodes.review.GetTable() if nodes.review is not None else None
    shown = nodes.review if review is not None and review.GetNumberOfRows() > 0 else nodes.table
    selection = applicationLogic.GetSelectionNode()
    selection.SetActivePlotChartID(nodes.chart.GetID())
    selection.SetActiveTableID(shown.GetID())
    applicationLogic.PropagatePlotChartSelection()
    applicationLogic.PropagateTableSelection()
    return shown


def frameOfTableRow(tableNode, row: int) -> int | None:
    """The ``frame`` cell of ``row`` of a statistics or review table node (None outside the table
    or without a ``frame`` column)."""
    table = tableNode.GetTable() if tableNode is not None else None
    column = table.GetColumnByName("frame") if table is not None else None
    if column is None or not 0 <= int(row) < column.GetNumberOfValues():
        return None
    return int(column.GetValue(int(row)))


def frameOfPlotPoint(seriesNode, pointId: int) -> int | None:
    """The frame (x value, rounded) of point ``pointId`` of a plot series node of
    :func:`createStatisticsNodes` (the ids ``qMRMLPlotView.dataSelected`` gives); None when unknown."""
    tableNode = seriesNode.GetTableNode() if seriesNode is not None else None
    table = tableNode.GetTable() if tableNode is not None else None
    column = table.GetColumnByName(seriesNode.GetXColumnName()) if table is not None else None
    if column is None or not 0 <= int(pointId) < column.GetNumberOfValues():
        return None
    return int(round(float(column.GetValue(int(pointId)))))
