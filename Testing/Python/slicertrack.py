"""The Slicer module's way to the same outputs as ``sam2s track``, for tests that compare the two
front ends: the headless ``SAM2STrackingLogic`` (real MRML on ``slicer-core``) imports the video,
takes the prompts file's prompts as markups and mask frames, tracks forward then backward from the
earliest prompted frame (``direction="both"``), and exports with the module's exporters (Slicer's
own ``.seg.nrrd`` writer, ``exportLabelPngs``, ``exportCoco``, the statistics of the segmentation)."""

from __future__ import annotations

from pathlib import Path

from sam2sapp.promptsfile import load_prompts
from sam2sapp.visualize import color_for
from SAM2SSlicerLib.headless import createTrackingLogic
from SAM2SSlicerLib.provenance import nodeProvenance
from SAM2SSlicerLib.settings import ModelSettings


def track_in_slicer(video, prompts, out: Path, *, model=None, image_size: int = 1024, end: int | None = None,
                    seg: bool = True, png: bool = True, coco: bool = False, stats: bool = False):  # fmt: skip
    """Track ``prompts`` through ``video`` in the headless Slicer logic and export into ``out``
    (``o.seg.nrrd``, ``png/``, ``c.json``, ``stats/``); ``model`` None: the flow engine. Returns
    the logic (close it)."""
    from SAM2SSlicerLib.stats import segmentationStatistics, writeStatisticsFolder

    logic = createTrackingLogic()
    logic.importVideo(str(video))
    source = logic.videoNode
    objects = load_prompts(prompts, num_frames=_frames(logic), frame_size=_size(logic))
    logic.createSegmentation(Path(str(video)).stem + " masklets")
    ids = []
    for obj in objects:
        color = obj.color or tuple(c / 255 for c in color_for(obj.id))
        sid = logic.addSegment(obj.name, color, objectId=obj.id)
        ids.append(sid)
        for p in obj.prompts:
            if p.mask is not None:
                logic.setMaskPrompt(sid, p.frame, p.mask)
            if p.box is not None:
                logic.setBoxPrompt(sid, p.frame, [float(v) for v in p.box])
            if p.points is not None:
                for (x, y), label in zip(p.points, p.labels):
                    logic.addPointPrompt(sid, p.frame, float(x), float(y), positive=bool(label))
    engine = "flow" if model is None else "sam2"
    logic.setModelSettings(ModelSettings(engine=engine, imageSize=image_size, device="cpu"))
    if model is not None:
        logic.setModel(model)
    last = None if end is None else int(end)
    logic.track(ids, firstFrame=0, lastFrame=last, direction="both")
    out.mkdir(parents=True, exist_ok=True)
    if seg:
        logic.exportSegmentation(str(out / "o.seg.nrrd"))
    if png:
        logic.exportLabelPngs(str(out / "png"))
    if coco:
        logic.exportCoco(str(out / "c.json"), ids)
    if stats:
        statistics, colors = segmentationStatistics(
            logic.segmentationNode, source, ids, logic.segmentConfidences, labels=True
        )
        (out / "stats").mkdir()
        writeStatisticsFolder(statistics, out / "stats", colors, provenance=nodeProvenance(logic.segmentationNode))
    return logic


def _frames(logic) -> int:
    return int(logic.videoNode.GetImageData().GetDimensions()[2])


def _size(logic) -> tuple[int, int]:
    w, h, _ = logic.videoNode.GetImageData().GetDimensions()
    return int(h), int(w)
