"""Segments of a video segmentation: object ids, reading masks and writing frame ranges.

A video volume (see ``videoimport``) has IJK = (x, y, frame): I = column (x right), J = row
(y down, row 0 at the top of an axial view), K = frame index. The segmentation uses the video
volume as its reference geometry, so a segment's binary labelmap has the same lattice and a
mask array ``masks[k, y, x]`` maps to voxel IJK = (x, y, k).

Writing a frame range never uses ``MODE_REPLACE``: in Slicer's ``vtkSegmentationModifier``
``MODE_REPLACE`` replaces the WHOLE segment (every frame) even when an extent is given. The
pattern used here (the one of ``vtkSlicerSegmentEditorLogic::ModifySegmentByLabelmap`` for
"set"): first ``MODE_MERGE_MIN`` with a zero image over the frame range (clears only this
segment's voxels there: the modifier masks out other labels of a shared layer), then
``MODE_MERGE_MASK`` with the new mask (paints this segment's label value where the mask is 1;
if another segment of the same shared layer lies under the mask, the modifier first moves this
segment to its own layer, so the other segment keeps its voxels). Sources:
``Libs/vtkSegmentationCore/vtkSegmentationModifier.cxx`` (``AppendLabelmapToSegment``,
``SeparateModifiedSegmentFromSharedLabelmap``) and ``vtkSlicerSegmentEditorLogic.cxx`` in
Slicer/Slicer.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from sam2s.session import MAX_OBJECT_ID, MIN_OBJECT_ID  # the engine's object-id range (a torch-free module)
from vtk.util import numpy_support

OBJECT_ID_TAG = "SAM2S.ObjectId"
"""Segment tag holding the tracker's object id (an integer in ``MIN_OBJECT_ID..MAX_OBJECT_ID``, saved
in ``.seg.nrrd``)."""

_RANGE_REASON = (
    f"{MIN_OBJECT_ID}..{MAX_OBJECT_ID} (0 is the background and 255 the DAVIS void label, so ids fit 8-bit label PNGs)"
)

__all__ = [
    "MASK_PROMPT_TAG",
    "MAX_OBJECT_ID",
    "MIN_OBJECT_ID",
    "OBJECT_ID_TAG",
    "assignObjectId",
    "checkObjectId",
    "ensureReferenceGeometry",
    "frameRuns",
    "freeObjectId",
    "maskPromptFrames",
    "objectIdOfSegment",
    "objectIds",
    "readSegmentMask",
    "segmentIdForObject",
    "setMaskPromptFrames",
    "writeSegmentFrames",
]


def _segmentLogic():
    return slicer.vtkSlicerSegmentationsModuleLogic


def checkObjectId(objectId) -> int:
    """``objectId`` as an ``int`` if it is an integer in ``MIN_OBJECT_ID..MAX_OBJECT_ID`` (1..254).

    Accepts Python / numpy integers and integral floats (``3.0``); not bools or strings.

    Raises:
        ValueError: not an integer, or outside 1..254 (the message gives the range and why).
    """
    value = None
    if not isinstance(objectId, (bool, np.bool_)):
        if isinstance(objectId, (int, np.integer)):
            value = int(objectId)
        elif isinstance(objectId, (float, np.floating)) and float(objectId).is_integer():
            value = int(objectId)
    if value is None or not MIN_OBJECT_ID <= value <= MAX_OBJECT_ID:
        raise ValueError(
            f"Object id {objectId!r} is not allowed: object ids are integers in {_RANGE_REASON}. "
            f"Choose a free id in {MIN_OBJECT_ID}..{MAX_OBJECT_ID}, or leave it empty to assign the smallest free one."
        )
    return value


def objectIdOfSegment(segmentationNode, segmentId: str) -> int | None:
    """Object id stored in the segment's ``SAM2S.ObjectId`` tag, or None if it has none.

    Raises:
        KeyError: the segmentation has no segment ``segmentId``.
        ValueError: the tag is not an integer in 1..254 (edited by hand); the message says how to fix it.
    """
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    if segment is None:
        raise KeyError(f"Segmentation '{segmentationNode.GetName()}' has no segment with ID '{segmentId}'.")
    value = vtk.mutable("")
    if not segment.GetTag(OBJECT_ID_TAG, value):
        return None
    text = str(value).strip()
    objectId = int(text) if text.isdigit() else 0
    if not MIN_OBJECT_ID <= objectId <= MAX_OBJECT_ID:
        raise ValueError(
            f"Segment '{segment.GetName()}' has an invalid {OBJECT_ID_TAG} tag {str(value)!r}; it must be an integer "
            f"in {_RANGE_REASON}. Remove the tag (it is then re-assigned) or set it to a free id, e.g. 1."
        )
    return objectId


def objectIds(segmentationNode) -> dict[str, int]:
    """``{segmentId: objectId}`` for every segment that has an object id, in segment order."""
    segmentation = segmentationNode.GetSegmentation()
    result = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segmentId = segmentation.GetNthSegmentID(index)
        objectId = objectIdOfSegment(segmentationNode, segmentId)
        if objectId is not None:
            result[segmentId] = objectId
    return result


def segmentIdForObject(segmentationNode, objectId: int) -> str | None:
    """The ID of the segment whose object id is ``objectId``, or None."""
    for segmentId, value in objectIds(segmentationNode).items():
        if value == objectId:
            return segmentId
    return None


def _smallestFreeId(segmentationNode, ids: dict[str, int]) -> int:
    used = set(ids.values())
    objectId = next((i for i in range(MIN_OBJECT_ID, MAX_OBJECT_ID + 1) if i not in used), None)
    if objectId is None:
        raise ValueError(
            f"All {MAX_OBJECT_ID - MIN_OBJECT_ID + 1} object ids ({MIN_OBJECT_ID}..{MAX_OBJECT_ID}) are used by "
            f"segments of '{segmentationNode.GetName()}'; a segmentation can track at most "
            f"{MAX_OBJECT_ID - MIN_OBJECT_ID + 1} objects (ids {_RANGE_REASON}). Delete segments you do not "
            "track, or put the new object in another segmentation."
        )
    return objectId


def freeObjectId(segmentationNode) -> int:
    """The smallest object id in 1..254 that no segment of ``segmentationNode`` uses (nothing is changed).

    Raises:
        ValueError: all 254 ids are used, or a segment's tag is invalid (``objectIdOfSegment``).
    """
    return _smallestFreeId(segmentationNode, objectIds(segmentationNode))


def assignObjectId(segmentationNode, segmentId: str, objectId: int | None = None) -> int:
    """Give ``segmentId`` an object id (kept if it already has one and ``objectId`` is None).

    Args:
        objectId: the id to set, an integer in ``MIN_OBJECT_ID..MAX_OBJECT_ID`` (1..254) unique in this
            segmentation; None keeps the segment's id or assigns the smallest id in 1..254 that no
            other segment of the segmentation uses.

    Returns:
        The segment's object id.

    Raises:
        KeyError: unknown segment. ValueError: ``objectId`` is not an integer in 1..254, is used by
            another segment, or (automatic assignment) all 254 ids are used; a segment's tag is
            invalid (``objectIdOfSegment``). Nothing is changed then.
    """
    if objectId is not None:
        objectId = checkObjectId(objectId)
    current = objectIdOfSegment(segmentationNode, segmentId)
    ids = objectIds(segmentationNode)
    if objectId is None:
        if current is not None:
            return current
        objectId = _smallestFreeId(segmentationNode, ids)
    for otherId, value in ids.items():
        if value == objectId and otherId != segmentId:
            other = segmentationNode.GetSegmentation().GetSegment(otherId).GetName()
            raise ValueError(
                f"Object id {objectId} is already used by segment '{other}'; choose another id or leave it empty."
            )
    segmentationNode.GetSegmentation().GetSegment(segmentId).SetTag(OBJECT_ID_TAG, str(objectId))
    return objectId


def _geometryString(volumeNode) -> str:
    """Slicer's serialized image geometry (IJK to RAS matrix and extent) of ``volumeNode``."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return slicer.vtkSegmentationConverter.SerializeImageGeometry(matrix, volumeNode.GetImageData().GetExtent())


def ensureReferenceGeometry(segmentationNode, volumeNode) -> None:
    """Make ``volumeNode`` (the video) the reference geometry of ``segmentationNode``.

    A segmentation that already has another geometry is accepted only when it holds no voxels
    (then its geometry is replaced); otherwise its masks would not line up with the frames.

    Raises:
        ValueError: the segmentation has voxels in another geometry; create a new segmentation
            for this video (nothing is changed).
    """
    segmentation = segmentationNode.GetSegmentation()
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    current = segmentation.GetConversionParameter(name)
    wanted = _geometryString(volumeNode)
    if current == wanted:
        return
    if current and _hasVoxels(segmentationNode):
        raise ValueError(
            f"Segmentation '{segmentationNode.GetName()}' was drawn on another image geometry than video "
            f"'{volumeNode.GetName()}'; create a new segmentation for this video (the existing one is left as is)."
        )
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)


def _hasVoxels(segmentationNode) -> bool:
    segmentation = segmentationNode.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        image = _segmentLabelmap(segmentationNode, segmentation.GetNthSegmentID(index))
        extent = image.GetExtent()
        if extent[0] <= extent[1] and extent[2] <= extent[3] and extent[4] <= extent[5]:
            return True
    return False


def _segmentLabelmap(segmentationNode, segmentId: str):
    """The labelmap layer holding the segment (effective extent) as a new ``vtkOrientedImageData``:
    voxels equal to the segment's label value are the segment's (other values: other segments)."""
    image = slicer.vtkOrientedImageData()
    _segmentLogic().GetSegmentBinaryLabelmapRepresentation(segmentationNode, segmentId, image, False)
    return image


def _volumeShape(volumeNode) -> tuple[int, int, int]:
    """``(T, H, W)``: frames, rows, columns of the video volume."""
    dims = volumeNode.GetImageData().GetDimensions()
    return dims[2], dims[1], dims[0]


def readSegmentMask(segmentationNode, segmentId: str, volumeNode) -> np.ndarray:
    """The segment as a ``(T, H, W)`` uint8 array (1 inside, 0 outside) on the video's lattice.

    ``mask[k, y, x]`` is voxel IJK = (x, y, k) of ``volumeNode``: frame k, row y (0 at the top),
    column x. Works without ``slicer.mrmlScene`` (unlike ``slicer.util.arrayFromSegmentBinaryLabelmap``).
    A labelmap on another lattice is resampled (nearest neighbour) to the video's.

    Raises:
        KeyError: unknown segment.
    """
    if segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
        raise KeyError(f"Segmentation '{segmentationNode.GetName()}' has no segment with ID '{segmentId}'.")
    frames, height, width = _volumeShape(volumeNode)
    out = np.zeros((frames, height, width), dtype=np.uint8)
    image = _segmentLabelmap(segmentationNode, segmentId)
    extent = list(image.GetExtent())
    if extent[0] > extent[1] or extent[2] > extent[3] or extent[4] > extent[5]:
        return out
    reference = _referenceImage(volumeNode)
    if not slicer.vtkOrientedImageDataResample.DoGeometriesMatch(image, reference):
        resampled = slicer.vtkOrientedImageData()
        slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            image, reference, resampled, False, False
        )
        image, extent = resampled, list(resampled.GetExtent())
    data = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    data = data.reshape(extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    # Clip to the video's extent (a labelmap can extend beyond it).
    lo = [max(extent[2 * a], 0) for a in range(3)]
    hi = [min(extent[2 * a + 1], (width, height, frames)[a] - 1) for a in range(3)]
    if any(lo[a] > hi[a] for a in range(3)):
        return out
    src = data[
        lo[2] - extent[4] : hi[2] - extent[4] + 1,
        lo[1] - extent[2] : hi[1] - extent[2] + 1,
        lo[0] - extent[0] : hi[0] - extent[0] + 1,
    ]
    # The representation is the segment's shared labelmap layer: other segments of the layer have
    # other label values, so select this segment's value (a 0/1 image if it has a layer of its own).
    label = segmentationNode.GetSegmentation().GetSegment(segmentId).GetLabelValue()
    out[lo[2] : hi[2] + 1, lo[1] : hi[1] + 1, lo[0] : hi[0] + 1] = src == label
    return out


def _referenceImage(volumeNode, extent: list[int] | None = None):
    """An empty ``vtkOrientedImageData`` with the video's IJK-to-RAS and ``extent`` (default: whole video)."""
    image = slicer.vtkOrientedImageData()
    image.SetExtent(*(extent if extent is not None else volumeNode.GetImageData().GetExtent()))
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    return image


def _modifierImage(volumeNode, firstFrame: int, masks: np.ndarray):
    """A uint8 oriented image covering frames ``firstFrame .. firstFrame + n - 1`` with ``masks`` (n, H, W)."""
    count, height, width = masks.shape
    image = _referenceImage(volumeNode, [0, width - 1, 0, height - 1, firstFrame, firstFrame + count - 1])
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    view = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    view[:] = np.ascontiguousarray(masks, dtype=np.uint8).reshape(-1)
    return image


def writeSegmentFrames(segmentationNode, segmentId: str, volumeNode, firstFrame: int, masks: np.ndarray) -> None:
    """Replace frames ``firstFrame .. firstFrame + n - 1`` of one segment by ``masks``.

    Args:
        masks: ``(n, H, W)`` bool or 0/1 array; ``masks[i, y, x]`` is voxel IJK = (x, y, firstFrame + i)
            of ``volumeNode`` (frame, row from the top, column from the left).

    Other frames of the segment and all other segments (also those sharing its labelmap layer)
    keep their voxels; see the module docstring for why ``MODE_REPLACE`` is not used.

    Raises:
        KeyError: unknown segment. ValueError: wrong mask shape or frames outside the video.
        RuntimeError: Slicer's segmentation logic refused the change.
    """
    segmentation = segmentationNode.GetSegmentation()
    if segmentation.GetSegment(segmentId) is None:
        raise KeyError(f"Segmentation '{segmentationNode.GetName()}' has no segment with ID '{segmentId}'.")
    frames, height, width = _volumeShape(volumeNode)
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[1:] != (height, width):
        raise ValueError(f"masks must have shape (n, {height}, {width}) (frames, rows, columns); got {masks.shape}.")
    if firstFrame < 0 or firstFrame + masks.shape[0] > frames or masks.shape[0] == 0:
        raise ValueError(
            f"Frames {firstFrame}..{firstFrame + masks.shape[0] - 1} are outside the video's frames 0..{frames - 1}."
        )
    logic = _segmentLogic()
    zeros = _modifierImage(volumeNode, firstFrame, np.zeros(masks.shape, dtype=np.uint8))
    extent = zeros.GetExtent()
    if not logic.SetBinaryLabelmapToSegment(
        zeros, segmentationNode, segmentId, logic.MODE_MERGE_MIN, extent, False, []
    ):
        raise RuntimeError(f"Slicer could not clear frames {extent[4]}..{extent[5]} of segment '{segmentId}'.")
    if masks.any():
        modifier = _modifierImage(volumeNode, firstFrame, masks != 0)
        if not logic.SetBinaryLabelmapToSegment(
            modifier, segmentationNode, segmentId, logic.MODE_MERGE_MASK, extent, False, []
        ):
            raise RuntimeError(f"Slicer could not write frames {extent[4]}..{extent[5]} of segment '{segmentId}'.")


def frameRuns(frames) -> list[tuple[int, int]]:
    """Group frame indices into runs of consecutive frames: ``[3, 1, 2, 7]`` -> ``[(1, 3), (7, 7)]``."""
    runs: list[tuple[int, int]] = []
    for frame in sorted(set(int(f) for f in frames)):
        if runs and frame == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], frame)
        else:
            runs.append((frame, frame))
    return runs


MASK_PROMPT_TAG = "SAM2S.MaskPromptFrames"
"""Segment tag: comma-separated frames whose voxels are a mask prompt of the segment (saved with
the scene and in ``.seg.nrrd``)."""


def maskPromptFrames(segmentationNode, segmentId: str) -> list[int]:
    """Frames marked as mask prompts of a segment (sorted; empty when none)."""
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    value = ""
    if segment is not None:
        import vtk

        out = vtk.mutable("")
        if segment.GetTag(MASK_PROMPT_TAG, out):
            value = str(out)
    return sorted({int(v) for v in value.split(",") if v.strip()})


def setMaskPromptFrames(segmentationNode, segmentId: str, frames) -> None:
    """Set the frames marked as mask prompts of a segment (an empty list removes the tag)."""
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    frames = sorted({int(f) for f in frames})
    if frames:
        segment.SetTag(MASK_PROMPT_TAG, ",".join(str(f) for f in frames))
    else:
        segment.RemoveTag(MASK_PROMPT_TAG)
