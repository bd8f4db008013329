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

That path costs time in proportion to the whole layer, not to the frames written: the modifier
copies the layer and shrinks it to its effective extent on every call (``ModifyBinaryLabelmap``:
``AppendLabelmapToSegment``, ``ShrinkSegmentToEffectiveExtent``), about 14 ms per call for 48
frames of 854 x 480 here, so a GUI timer writing a few frames per tick would stall longer and
longer as tracking goes on. :func:`writeSegmentFrames` therefore writes the frames straight into
the segment's layer when the result is the same: the layer has the video's lattice (the
segmentation's reference geometry); when another segment of that layer lies under the new mask,
the segment first moves to a layer of its own, as in the modifier. The layer grows
to hold the voxels written (with margins: ``_grow``; never beyond the video, whose labelmap the import planned memory for: ``videoimport.checkVideoMemory``), and the
segmentation announces the change as the modifier does (``SourceRepresentationModified``
and ``RepresentationModified`` with the segment ID), so displays follow. A segment that also has
other representations (a closed surface while shown in 3D) takes the modifier's path, which
converts them again (``vtkSlicerSegmentationsModuleLogic::SetBinaryLabelmapToSegment``).
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
    "shrinkLayers",
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


def writeSegmentFrames(
    segmentationNode,
    segmentId: str,
    volumeNode,
    firstFrame: int,
    masks: np.ndarray,
    direct: bool = True,
    reserve: tuple[int, int] | None = None,
) -> None:
    """Replace frames ``firstFrame .. firstFrame + n - 1`` of one segment by ``masks``.

    Args:
        masks: ``(n, H, W)`` bool or 0/1 array; ``masks[i, y, x]`` is voxel IJK = (x, y, firstFrame + i)
            of ``volumeNode`` (frame, row from the top, column from the left).
        direct: write straight into the segment's layer where that gives the modifier's result
            (see the module docstring); False always uses Slicer's modifier (the reference the
            direct write is tested against).
        reserve: ``(first, last)`` frames (inclusive) that later writes will fill, e.g. a
            propagation's range: a direct write that must grow the layer along the frames grows it
            to cover them at once, so that a propagation copies the layer once instead of every
            few frames (each copy of a long layer is a long GUI tick). Voxels are unchanged by it.

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
    if direct and _writeIntoLayer(segmentationNode, segmentId, volumeNode, firstFrame, masks != 0, reserve=reserve):
        return
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


def _writeIntoLayer(
    segmentationNode,
    segmentId: str,
    volumeNode,
    firstFrame: int,
    masks: np.ndarray,
    separated: bool = False,
    reserve: tuple[int, int] | None = None,
) -> bool:
    """Replace frames ``firstFrame ..`` of the segment by ``masks`` ((n, H, W) bool) directly in its
    binary labelmap layer (see the module docstring); False where the modifier's result could
    differ (another lattice; voxels outside the video; an empty layer shared with other segments;
    a segment with other representations, which
    ``SetBinaryLabelmapToSegment`` converts again): the caller then uses the modifier. The layer
    only grows to hold the mask's voxels (frames by at least ``LAYER_FRAME_STEP``). When another
    segment of the layer lies under the mask, this segment first moves to a layer of its own
    (:func:`_separate`, as the modifier does)."""
    segmentation = segmentationNode.GetSegmentation()
    segment = segmentation.GetSegment(segmentId)
    layer = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    names: list[str] = []
    segment.GetContainedRepresentationNames(names)
    if layer is None or len(names) != 1 or not _sameLattice(layer, volumeNode):
        return False
    frames, height, width = _volumeShape(volumeNode)
    extent = list(layer.GetExtent())
    empty = layer.GetPointData().GetScalars() is None or extent[0] > extent[1]
    video = [0, width - 1, 0, height - 1, 0, frames - 1]
    if empty and len(segmentation.GetSegmentIDsForLayer(segmentation.GetLayerIndex(segmentId))) != 1:
        return False
    if not empty and not _contains(video, extent):
        return False
    if not empty and (layer.GetScalarType() != vtk.VTK_UNSIGNED_CHAR or layer.GetNumberOfScalarComponents() != 1):
        return False
    needed = _maskExtent(masks, firstFrame)
    if needed is None and empty:
        return True  # nothing to clear, nothing to paint
    if empty or (needed is not None and not _contains(extent, needed)):
        _grow(layer, None if empty else extent, needed, video, reserve)
    e = layer.GetExtent()
    last = firstFrame + masks.shape[0] - 1
    k0, k1 = max(firstFrame, e[4]), min(last, e[5])
    if k0 <= k1:
        voxels = numpy_support.vtk_to_numpy(layer.GetPointData().GetScalars()).reshape(
            e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1
        )
        region = voxels[k0 - e[4] : k1 - e[4] + 1]
        new = masks[k0 - firstFrame : k1 - firstFrame + 1, e[2] : e[3] + 1, e[0] : e[1] + 1]
        label = segment.GetLabelValue()
        if np.any(new & (region != 0) & (region != label)):
            # another segment of the layer lies under the mask: this segment moves to a layer of
            # its own first, as the modifier does (SeparateModifiedSegmentFromSharedLabelmap)
            if separated:
                return False
            _separate(segment, layer, voxels, e)
            return _writeIntoLayer(
                segmentationNode, segmentId, volumeNode, firstFrame, masks, separated=True, reserve=reserve
            )
        region[region == label] = 0
        region[new] = label
        layer.GetPointData().GetScalars().Modified()
        layer.Modified()
    segmentation.InvokeEvent(slicer.vtkSegmentation.SourceRepresentationModified, segmentId)
    segmentation.InvokeEvent(slicer.vtkSegmentation.RepresentationModified, segmentId)
    return True


def _separate(segment, layer, voxels: np.ndarray, extent) -> None:
    """Move ``segment`` out of its shared ``layer`` (``voxels``: the layer's ``(K, J, I)`` view over
    ``extent``) into a layer of its own with label value 1, as
    ``vtkSegmentation::SeparateSegmentLabelmap`` does (Libs/vtkSegmentationCore/vtkSegmentation.cxx:
    a new labelmap for the segment via ``vtkSegment::AddRepresentation``, its voxels erased from the
    shared one, ``SetLabelValue(DEFAULT_LABEL_VALUE)``), in numpy and cropped to the segment's
    voxels, so that it costs one pass over the layer."""
    label = segment.GetLabelValue()
    # the frames holding the segment, one frame at a time (no layer-sized temporary: a new, empty
    # segment in the shared layer of a tracked video costs one comparison pass, ~10 ms for 127
    # frames of 854 x 480, instead of a full-layer mask and assignment)
    frames = [k for k in range(voxels.shape[0]) if (voxels[k] == label).any()]
    own = slicer.vtkOrientedImageData()
    own.ShallowCopy(layer)  # the geometry
    if frames:
        k0, k1 = frames[0], frames[-1]
        sub = voxels[k0 : k1 + 1]
        mine = sub == label
        rows = np.flatnonzero(mine.any(axis=(0, 2)))
        columns = np.flatnonzero(mine.any(axis=(0, 1)))
        j0, j1, i0, i1 = int(rows[0]), int(rows[-1]), int(columns[0]), int(columns[-1])
        part = mine[:, j0 : j1 + 1, i0 : i1 + 1]
        own.SetExtent(extent[0] + i0, extent[0] + i1, extent[2] + j0, extent[2] + j1, extent[4] + k0, extent[4] + k1)
        own.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        numpy_support.vtk_to_numpy(own.GetPointData().GetScalars())[:] = part.reshape(-1)
        sub[mine] = 0  # the segment leaves the shared layer (the other segments keep theirs)
        layer.GetPointData().GetScalars().Modified()
    else:
        own.SetExtent(0, -1, 0, -1, 0, -1)
        own.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    segment.AddRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName(), own)
    segment.SetLabelValue(1)


LAYER_FRAME_STEP = 16
"""Frames a layer grows by at least when a write needs more (so that a propagation, writing a few
frames per GUI tick, copies the layer a few times, not once per tick)."""


def _contains(outer, inner) -> bool:
    return all(outer[2 * a] <= inner[2 * a] and inner[2 * a + 1] <= outer[2 * a + 1] for a in range(3))


def _maskExtent(masks: np.ndarray, firstFrame: int) -> list[int] | None:
    """The IJK extent ``[i0, i1, j0, j1, k0, k1]`` of the True voxels of ``masks`` (None: none)."""
    ks = np.flatnonzero(masks.any(axis=(1, 2)))
    if ks.size == 0:
        return None
    rows = np.flatnonzero(masks.any(axis=(0, 2)))
    columns = np.flatnonzero(masks.any(axis=(0, 1)))
    k = firstFrame + ks
    return [int(columns[0]), int(columns[-1]), int(rows[0]), int(rows[-1]), int(k[0]), int(k[-1])]


def _sameLattice(layer, volumeNode) -> bool:
    """True when the layer's image-to-world matrix is the video's IJK-to-RAS matrix."""
    mine, video = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    layer.GetImageToWorldMatrix(mine)
    volumeNode.GetIJKToRASMatrix(video)
    return all(abs(mine.GetElement(r, c) - video.GetElement(r, c)) < 1e-6 for r in range(4) for c in range(4))


def _grow(
    layer, old: list[int] | None, needed: list[int], video: list[int], reserve: tuple[int, int] | None = None
) -> None:
    """Make the layer (in place: every segment of it sees the change) hold ``old`` (its extent, or
    None when empty) and ``needed``, zeros elsewhere, in one numpy copy (as
    ``vtkOrientedImageDataResample::PadImageToContainImage``), within the ``video`` extent. A side
    that grows gets a margin (``LAYER_FRAME_STEP`` frames or half the layer's frames, and an eighth
    of the frame in-plane), so that a propagation copies the layer a few times, not once per tick;
    with ``reserve`` (frames ``(first, last)``) a side that grows along the frames reaches it at once."""
    new = (
        list(needed)
        if old is None
        else [min(old[a], needed[a]) if a % 2 == 0 else max(old[a], needed[a]) for a in range(6)]
    )
    margins = (
        max(16, (video[1] + 1) // 8),
        max(16, (video[3] + 1) // 8),
        max(LAYER_FRAME_STEP, 0 if old is None else (old[5] - old[4] + 1) // 2),
    )
    for axis, margin in enumerate(margins):
        if old is None or new[2 * axis] < old[2 * axis]:
            new[2 * axis] = max(video[2 * axis], new[2 * axis] - margin)
            if axis == 2 and reserve is not None:
                new[4] = max(video[4], min(new[4], int(reserve[0])))
        if old is None or new[2 * axis + 1] > old[2 * axis + 1]:
            new[2 * axis + 1] = min(video[2 * axis + 1], new[2 * axis + 1] + margin)
            if axis == 2 and reserve is not None:
                new[5] = min(video[5], max(new[5], int(reserve[1])))
    # numpy.zeros (calloc): the zero pages cost nothing until a write touches them, so growing a
    # layer by many frames costs the copy of its old voxels only, not a pass over the new size
    voxels = np.zeros((new[5] - new[4] + 1, new[3] - new[2] + 1, new[1] - new[0] + 1), dtype=np.uint8)
    if old is not None:
        voxels[
            old[4] - new[4] : old[5] - new[4] + 1,
            old[2] - new[2] : old[3] - new[2] + 1,
            old[0] - new[0] : old[1] - new[0] + 1,
        ] = numpy_support.vtk_to_numpy(layer.GetPointData().GetScalars()).reshape(
            old[5] - old[4] + 1, old[3] - old[2] + 1, old[1] - old[0] + 1
        )
    # the VTK array uses the numpy memory (VTK keeps the array alive: numpy_support stores it on the
    # wrapper, whose attributes VTK keeps while the C++ array lives) and never frees it itself
    scalars = numpy_support.numpy_to_vtk(voxels.reshape(-1), deep=False, array_type=vtk.VTK_UNSIGNED_CHAR)
    grown = slicer.vtkOrientedImageData()
    grown.ShallowCopy(layer)  # the geometry
    grown.SetExtent(*new)
    grown.GetPointData().SetScalars(scalars)
    layer.ShallowCopy(grown)


def shrinkLayers(segmentationNode) -> None:
    """Crop every binary labelmap layer of the segmentation to its voxels (its effective extent),
    as Slicer's modifier does after each change (``vtkSegmentationModifier::
    ShrinkSegmentToEffectiveExtent``; an empty layer is left as it is). Direct writes
    (:func:`writeSegmentFrames`) leave margins around the voxels; an export calls this first so
    that a ``.seg.nrrd`` holds the extents Slicer would write. Voxels do not change."""
    segmentation = segmentationNode.GetSegmentation()
    for index in range(segmentation.GetNumberOfLayers()):
        layer = segmentation.GetLayerDataObject(index)
        scalars = layer.GetPointData().GetScalars() if layer is not None else None
        e = layer.GetExtent() if layer is not None else (0, -1, 0, -1, 0, -1)
        if scalars is None or e[0] > e[1] or e[2] > e[3] or e[4] > e[5] or scalars.GetNumberOfComponents() != 1:
            continue
        voxels = numpy_support.vtk_to_numpy(scalars).reshape(e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1)
        frames = np.flatnonzero(voxels.any(axis=(1, 2)))
        if frames.size == 0:
            continue
        k0, k1 = int(frames[0]), int(frames[-1])
        rows = np.flatnonzero(voxels[k0 : k1 + 1].any(axis=(0, 2)))
        columns = np.flatnonzero(voxels[k0 : k1 + 1].any(axis=(0, 1)))
        j0, j1, i0, i1 = int(rows[0]), int(rows[-1]), int(columns[0]), int(columns[-1])
        if (k0, j0, i0) == (0, 0, 0) and (k1, j1, i1) == tuple(n - 1 for n in voxels.shape):
            continue
        cropped = slicer.vtkOrientedImageData()
        cropped.ShallowCopy(layer)  # the geometry
        cropped.SetExtent(e[0] + i0, e[0] + i1, e[2] + j0, e[2] + j1, e[4] + k0, e[4] + k1)
        cropped.AllocateScalars(scalars.GetDataType(), 1)
        numpy_support.vtk_to_numpy(cropped.GetPointData().GetScalars())[:] = voxels[
            k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1
        ].reshape(-1)
        layer.ShallowCopy(cropped)


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
