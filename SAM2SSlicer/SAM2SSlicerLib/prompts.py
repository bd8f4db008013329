"""Tracking prompts (positive / negative clicks, boxes) per segment and frame, stored in MRML.

Storage (saved with the scene as ``.mrk.json`` files, editable in the Markups module):

* one ``vtkMRMLMarkupsFiducialNode`` per prompted segment, named ``"<segment name> prompts"``,
  with node attributes ``SAM2S.Role = "prompts"`` and ``SAM2S.SegmentID = <segment ID>`` and a
  node reference ``SAM2S.segmentation`` to its segmentation node (remapped by Slicer on scene
  import, so it survives saving and loading);
* one control point per click or box corner, placed at RAS = IJK-to-RAS of the video voxel
  (x, y, frame): it shows on that frame only, in the frame's slice view;
* the control point's *description* holds its kind: ``"positive"``, ``"negative"`` or ``"box"``
  (an empty description, e.g. a point added by hand in the Markups module, counts as positive);
  its *label* shows ``+``, ``-`` or ``box``; positive points are drawn in the node's selected
  colour (green), negative ones in its colour (red);
* a box is the two ``"box"`` control points of one frame (opposite corners, any order).

Coordinates: pixels of the video frame, x = column (right), y = row (down, 0 at the top), frame
= K index of the video volume; the position's K is rounded to the nearest frame. These are the
coordinates ``sam2s.VideoTracker`` takes.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import vtk
from sam2s.session import PromptError  # the engine's: one error class for every invalid prompt

ROLE_ATTRIBUTE = "SAM2S.Role"
ROLE_PROMPTS = "prompts"
SEGMENT_ATTRIBUTE = "SAM2S.SegmentID"
SEGMENTATION_REFERENCE = "SAM2S.segmentation"
KIND_POSITIVE, KIND_NEGATIVE, KIND_BOX = "positive", "negative", "box"
_LABELS = {KIND_POSITIVE: "+", KIND_NEGATIVE: "-", KIND_BOX: "box"}
POSITIVE_COLOR = (0.2, 0.9, 0.2)
NEGATIVE_COLOR = (0.95, 0.2, 0.2)

__all__ = [
    "KIND_BOX",
    "KIND_NEGATIVE",
    "KIND_POSITIVE",
    "FramePrompts",
    "PromptError",
    "PromptStore",
    "checkMaskPrompt",
]


@dataclasses.dataclass(frozen=True)
class FramePrompts:
    """The prompts of one segment on one frame.

    Attributes:
        points: ``((x, y), ...)`` click positions in pixels (x right, y down).
        labels: one per point, 1 = positive (inside the object), 0 = negative.
        box: ``(x0, y0, x1, y1)`` pixels with x0 < x1, y0 < y1, or None.
        mask: ``(H, W)`` bool mask prompt (the segment's own voxels on a frame marked as a mask
            prompt, see ``segments.MASK_PROMPT_TAG``), or None; compared through ``maskDigest``.
    """

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)
    maskDigest: str = ""

    def isEmpty(self) -> bool:
        """True when the frame has neither points, nor a box, nor a mask."""
        return not self.points and self.box is None and self.mask is None

    def pointArray(self) -> np.ndarray:
        """``(N, 2)`` float64 array of the points (x, y)."""
        return np.asarray(self.points, dtype=np.float64).reshape(-1, 2)

    def labelArray(self) -> np.ndarray:
        """``(N,)`` int64 array of the labels."""
        return np.asarray(self.labels, dtype=np.int64).reshape(-1)


def checkMaskPrompt(mask, videoShape: tuple[int, int, int], frameIndex) -> np.ndarray:
    """Check a mask prompt for frame ``frameIndex`` of a video of ``videoShape`` = ``(T, H, W)``
    frames, rows and columns; returns the mask as an array (unchanged values).

    Args:
        mask: ``(H, W)`` bool or 0/1 array, row 0 at the top (``[row, column]`` of the frame).

    Raises:
        ValueError: wrong mask shape, values other than 0/1 (threshold a probability map first),
            or a frame outside the video.
    """
    mask = np.asarray(mask)
    frames, height, width = videoShape
    if mask.ndim != 2 or mask.shape != (height, width):
        raise ValueError(
            f"The mask prompt must have the frame's shape (H, W) = ({height}, {width}) (rows, columns); got "
            f"{mask.shape}. Resize or crop the mask to the imported frames."
        )
    if isinstance(frameIndex, bool) or int(frameIndex) != frameIndex or not 0 <= frameIndex < frames:
        raise ValueError(f"Frame {frameIndex} is outside the video (frames 0..{frames - 1}); pick a frame in it.")
    if mask.dtype != bool and (mask.dtype.kind not in "biuf" or not np.isin(mask, (0, 1)).all()):
        raise ValueError(
            f"Mask prompt values must be 0/1 or bool; got {mask.dtype} values "
            f"{np.unique(mask)[:4].tolist() if mask.dtype.kind in 'biuf' else '(not numbers)'}. Threshold a "
            "probability map first (e.g. mask > 0.5)."
        )
    return mask


class PromptStore:
    """Reads and writes prompts of a segmentation's segments as markups nodes in ``scene``.

    Every method takes the video volume node whose IJK (x, y, frame) the prompts refer to.
    """

    def __init__(self, scene) -> None:
        self.scene = scene

    # ------------------------------------------------------------------ nodes
    def promptsNode(self, segmentationNode, segmentId: str, create: bool = False):
        """The markups node holding ``segmentId``'s prompts; None if it has none and not ``create``.

        A created node gets the segment's colour, its name and the attributes listed in the module
        docstring. Raises ``KeyError`` when the segment does not exist and ``create`` is true.
        """
        for node in self._promptNodes(segmentationNode):
            if node.GetAttribute(SEGMENT_ATTRIBUTE) == segmentId:
                return node
        if not create:
            return None
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        if segment is None:
            raise KeyError(f"Segmentation '{segmentationNode.GetName()}' has no segment with ID '{segmentId}'.")
        node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"{segment.GetName()} prompts")
        node.SetAttribute(ROLE_ATTRIBUTE, ROLE_PROMPTS)
        node.SetAttribute(SEGMENT_ATTRIBUTE, segmentId)
        node.SetNodeReferenceID(SEGMENTATION_REFERENCE, segmentationNode.GetID())
        node.SetMarkupLabelFormat("%N")
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        if display is not None:
            display.SetSelectedColor(*POSITIVE_COLOR)
            display.SetColor(*NEGATIVE_COLOR)
            display.SetActiveColor(*segment.GetColor())
            display.SetPointLabelsVisibility(True)
            display.SetGlyphScale(2.0)
            display.SetTextScale(2.5)
        return node

    def _promptNodes(self, segmentationNode) -> list:
        nodes = []
        collection = self.scene.GetNodesByClass("vtkMRMLMarkupsFiducialNode")
        for index in range(collection.GetNumberOfItems()):
            node = collection.GetItemAsObject(index)
            if (
                node.GetAttribute(ROLE_ATTRIBUTE) == ROLE_PROMPTS
                and node.GetNodeReferenceID(SEGMENTATION_REFERENCE) == segmentationNode.GetID()
            ):
                nodes.append(node)
        return nodes

    def promptedSegmentIds(self, segmentationNode) -> list[str]:
        """IDs of the existing segments of ``segmentationNode`` that have at least one control point."""
        segmentation = segmentationNode.GetSegmentation()
        ids = []
        for node in self._promptNodes(segmentationNode):
            segmentId = node.GetAttribute(SEGMENT_ATTRIBUTE)
            if segmentation.GetSegment(segmentId) is not None and node.GetNumberOfControlPoints() > 0:
                ids.append(segmentId)
        order = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
        return sorted(ids, key=order.index)

    # ------------------------------------------------------------------ coordinates
    @staticmethod
    def _frameSize(videoNode) -> tuple[int, int, int]:
        dims = videoNode.GetImageData().GetDimensions()
        return dims[2], dims[1], dims[0]  # T, H, W

    def _checkPixel(self, videoNode, frameIndex: int, x: float, y: float) -> None:
        frames, height, width = self._frameSize(videoNode)
        if isinstance(frameIndex, bool) or int(frameIndex) != frameIndex or not 0 <= frameIndex < frames:
            raise PromptError(f"Frame {frameIndex} is outside the video (frames 0..{frames - 1}).")
        if not (math.isfinite(x) and math.isfinite(y) and 0 <= x <= width and 0 <= y <= height):
            raise PromptError(
                f"Point ({x}, {y}) lies outside frame {frameIndex} (x in 0..{width}, y in 0..{height} pixels, "
                "x right, y down); click inside the image."
            )

    @staticmethod
    def _ijkToRas(videoNode, x: float, y: float, frame: float) -> list[float]:
        matrix = vtk.vtkMatrix4x4()
        videoNode.GetIJKToRASMatrix(matrix)
        return list(matrix.MultiplyPoint([x, y, frame, 1.0])[:3])

    @staticmethod
    def _rasToIjk(videoNode, ras) -> tuple[float, float, float]:
        matrix = vtk.vtkMatrix4x4()
        videoNode.GetRASToIJKMatrix(matrix)
        i, j, k, _ = matrix.MultiplyPoint([ras[0], ras[1], ras[2], 1.0])
        return i, j, k

    def _addControlPoint(self, node, videoNode, frameIndex: int, x: float, y: float, kind: str) -> int:
        ras = self._ijkToRas(videoNode, float(x), float(y), float(frameIndex))
        index = node.AddControlPoint(vtk.vtkVector3d(*ras), _LABELS[kind])
        node.SetNthControlPointDescription(index, kind)
        node.SetNthControlPointSelected(index, kind != KIND_NEGATIVE)
        node.SetNthControlPointAssociatedNodeID(index, videoNode.GetID())
        return index

    # ------------------------------------------------------------------ editing
    def addPoint(
        self, segmentationNode, segmentId: str, videoNode, frameIndex: int, x: float, y: float, positive: bool = True
    ) -> int:
        """Add a click at pixel (x, y) (x right, y down) of frame ``frameIndex``; returns its control point index.

        Raises:
            PromptError: frame or point outside the video (nothing is added). KeyError: unknown segment.
        """
        self._checkPixel(videoNode, frameIndex, x, y)
        node = self.promptsNode(segmentationNode, segmentId, create=True)
        return self._addControlPoint(
            node, videoNode, int(frameIndex), x, y, KIND_POSITIVE if positive else KIND_NEGATIVE
        )

    def setBox(self, segmentationNode, segmentId: str, videoNode, frameIndex: int, box) -> None:
        """Set the box ``(x0, y0, x1, y1)`` (pixels, any two opposite corners) of frame ``frameIndex``,
        replacing that frame's earlier box (the tracker takes one box per frame).

        Raises:
            PromptError: a corner outside the frame, or a box without area (nothing is changed).
        """
        x0, y0, x1, y1 = (float(v) for v in box)
        self._checkPixel(videoNode, frameIndex, x0, y0)
        self._checkPixel(videoNode, frameIndex, x1, y1)
        if abs(x1 - x0) < 1 or abs(y1 - y0) < 1:
            raise PromptError(
                f"Box {[x0, y0, x1, y1]} is less than one pixel wide or high; drag over the object's extent."
            )
        node = self.promptsNode(segmentationNode, segmentId, create=True)
        wasModifying = node.StartModify()
        try:
            self._removePoints(node, videoNode, frameIndex, kinds=(KIND_BOX,))
            self._addControlPoint(node, videoNode, int(frameIndex), min(x0, x1), min(y0, y1), KIND_BOX)
            self._addControlPoint(node, videoNode, int(frameIndex), max(x0, x1), max(y0, y1), KIND_BOX)
        finally:
            node.EndModify(wasModifying)

    def clear(self, segmentationNode, segmentId: str, videoNode, frameIndex: int | None = None) -> int:
        """Remove the prompts of ``segmentId`` on ``frameIndex`` (all frames when None); returns how many
        control points were removed. The markups node itself stays (empty) when all are removed."""
        node = self.promptsNode(segmentationNode, segmentId)
        if node is None:
            return 0
        if frameIndex is None:
            count = node.GetNumberOfControlPoints()
            node.RemoveAllControlPoints()
            return count
        return self._removePoints(node, videoNode, frameIndex)

    def removeLastPoint(self, segmentationNode, segmentId: str, videoNode, frameIndex: int) -> bool:
        """Remove the last click (not a box corner) added on ``frameIndex``; False if there is none."""
        node = self.promptsNode(segmentationNode, segmentId)
        if node is None:
            return False
        for index in reversed(range(node.GetNumberOfControlPoints())):
            kind, frame, _, _ = self._readPoint(node, videoNode, index)
            if frame == frameIndex and kind != KIND_BOX:
                node.RemoveNthControlPoint(index)
                return True
        return False

    def _removePoints(self, node, videoNode, frameIndex: int, kinds=(KIND_POSITIVE, KIND_NEGATIVE, KIND_BOX)) -> int:
        removed = 0
        for index in reversed(range(node.GetNumberOfControlPoints())):
            kind, frame, _, _ = self._readPoint(node, videoNode, index)
            if frame == frameIndex and kind in kinds:
                node.RemoveNthControlPoint(index)
                removed += 1
        return removed

    # ------------------------------------------------------------------ reading
    def _readPoint(self, node, videoNode, index: int) -> tuple[str, int, float, float]:
        position = [0.0, 0.0, 0.0]
        node.GetNthControlPointPosition(index, position)
        x, y, k = self._rasToIjk(videoNode, position)
        kind = (node.GetNthControlPointDescription(index) or "").strip().lower() or KIND_POSITIVE
        if kind not in _LABELS:
            kind = KIND_POSITIVE
        return kind, int(round(k)), x, y

    def framePrompts(self, segmentationNode, segmentId: str, videoNode) -> dict[int, FramePrompts]:
        """``{frame: FramePrompts}`` of ``segmentId`` in frame order (frames without prompts are absent).

        Control points whose ``positionStatus`` is not "defined" (being placed) are skipped.

        Raises:
            PromptError: a point outside the video (moved by hand), or a frame with other than two
                box corners; the message names the segment and frame and how to fix it.
        """
        node = self.promptsNode(segmentationNode, segmentId)
        if node is None:
            return {}
        frames, height, width = self._frameSize(videoNode)
        name = node.GetName()
        collected: dict[int, dict] = {}
        for index in range(node.GetNumberOfControlPoints()):
            if node.GetNthControlPointPositionStatus(index) != node.PositionDefined:
                continue
            kind, frame, x, y = self._readPoint(node, videoNode, index)
            if not (0 <= frame < frames and -0.5 <= x <= width and -0.5 <= y <= height):
                raise PromptError(
                    f"Control point {index + 1} ('{node.GetNthControlPointLabel(index)}') of '{name}' lies outside "
                    f"the video (frame {frame}, x {x:.1f}, y {y:.1f}); move it into the image or delete it."
                )
            x, y = min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))
            entry = collected.setdefault(frame, {"points": [], "labels": [], "box": []})
            if kind == KIND_BOX:
                entry["box"].append((x, y))
            else:
                entry["points"].append((x, y))
                entry["labels"].append(1 if kind == KIND_POSITIVE else 0)
        result = {}
        for frame in sorted(collected):
            entry = collected[frame]
            box = None
            if entry["box"]:
                if len(entry["box"]) != 2:
                    raise PromptError(
                        f"'{name}' has {len(entry['box'])} box corners on frame {frame}; a box needs exactly 2. "
                        "Delete the extra corners or draw the box again."
                    )
                (ax, ay), (bx, by) = entry["box"]
                box = (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))
                if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                    raise PromptError(f"The box of '{name}' on frame {frame} has no area; draw it again.")
            prompts = FramePrompts(tuple(entry["points"]), tuple(entry["labels"]), box)
            if not prompts.isEmpty():
                result[frame] = prompts
        return result
