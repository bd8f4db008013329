"""Streaming ``sam2s track``: frames go from the decoder through the engine to the writers one at a time.

The Slicer-volume path (``track.run_tracking`` with the headless ``SAM2STrackingLogic``) holds the
whole video and one labelmap per object in memory. Here nothing of size ``T x H x W`` is held in
memory: frames are decoded on demand (``sam2s.frames.open_frames``), the engine
(``sam2s.VideoTracker`` or ``sam2s.flow.FlowTracker``) keeps a bounded state, label PNGs are
written as frames are tracked, and the masks needed by ``--output`` (``.seg.nrrd``) and
``--overlay`` go to a disk-backed labelmap (:class:`DiskLabelmap`: a ``numpy.memmap`` of a
temporary file next to the output, mapped a few frames at a time and removed afterwards).

Results equal the Slicer path's: the same prompts in the same order (objects with clicks or boxes
first, then mask-only ones, as ``SAM2STrackingLogic.collectPrompts`` sends them; per frame the
mask first, then the box with the clicks, or the clicks), the same passes (forward from the
earliest prompted frame in the range to its end, then backward to its start, as
``logic.track(direction="both")``), the same overlap rule in label images (the larger object id
wins, ``export.labelFrames``), and a ``.seg.nrrd`` with the header Slicer writes
(``export.exportSegmentation``; overlapping segments in extra layers, first fit in segment order).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import string
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .outputs import atomicFile, temporaryPath

__all__ = [
    "DiskLabelmap",
    "StreamObject",
    "assignLayers",
    "labelImage",
    "objectsFromPrompts",
    "segmentationHeader",
    "streamTracking",
    "trackPasses",
    "trackToOutputs",
    "writeLabelPng",
    "writeSegmentation",
]

MAX_STREAM_OBJECTS = 64
"""Objects a :class:`DiskLabelmap` holds (one bit each of a uint64 voxel); more use the Slicer path."""
TERMINOLOGY = (
    "Segmentation category and type - 3D Slicer General Anatomy list~SCT^85756007^Tissue~SCT^85756007^Tissue~^^"
    "~Anatomic codes - DICOM master list~^^~^^"
)
"""The terminology entry Slicer gives a new segment (``TerminologyEntry`` tag)."""
CONVERSION_PARAMETERS = (
    "Decimation factor|0.0|Desired reduction in the total number of polygons. Range: 0.0 (no decimation) to 1.0 (as "
    "much simplification as possible). Value of 0.8 typically reduces data set size by 80% without losing too much "
    "details.&Smoothing factor|0.5|Smoothing factor. Range: 0.0 (no smoothing) to 1.0 (strong smoothing).&Compute "
    "surface normals|1|Compute surface normals. 1 (default) = surface normals are computed. 0 = surface normals are "
    "not computed (slightly faster but produces less smooth surface display, not used if vtkSurfaceNets3D is used)."
    "&Conversion method|0|Conversion method. 0 (default) = vtkDiscreteFlyingEdges3D is used to generate closed "
    "surface.1 = vtkSurfaceNets3D (more performant than flying edges).&SurfaceNets smoothing|0|SurfaceNets smoothing."
    " 0 (default) = Smoothing done by vtkWindowedSincPolyDataFilter1 = Smoothing done in surface nets filter.&Joint "
    "smoothing|0|Perform joint smoothing.&Reference image geometry|{geometry}|Image geometry description string "
    "determining the geometry of the labelmap that is created in course of conversion. Can be copied from a volume, "
    "using the button.&Oversampling factor|1|Determines the oversampling of the reference image geometry. If it's a "
    "number, then all segments are oversampled with the same value (value of 1 means no oversampling). If it has the "
    'value "A", then automatic oversampling is calculated.&Crop to reference image geometry|0|Crop the model to the '
    "extent of reference geometry. 0 (default) = created labelmap will contain the entire model. 1 = created labelmap "
    "extent will be within reference image extent.&Collapse labelmaps|1|Merge the labelmaps into as few shared "
    "labelmaps as possible 1 = created labelmaps will be shared if possible without overwriting each other.&Fractional"
    " labelmap oversampling factor|1|Determines the oversampling of the reference image geometry. All segments are "
    "oversampled with the same value (value of 1 means no oversampling).&Threshold fraction|0.5|Determines the "
    "threshold that the closed surface is created at as a fractional value between 0 and 1.&"
)
"""``Segmentation_ConversionParameters`` as Slicer writes it; ``{geometry}`` is the reference image geometry."""
WRITE_CHUNK_BYTES = 32 * 2**20
"""About this many voxel bytes are mapped, converted and compressed at a time when writing a ``.seg.nrrd``."""


@dataclass
class StreamObject:
    """One object to track, as the engine gets it.

    Attributes:
        id: object id (1..254): the label value in label PNGs. name: segment name.
        color: RGB floats 0..1. prompts: ``{frame: {"mask": (H, W) bool | None, "box": (4,) float64
            | None, "points": (N, 2) float64 | None, "labels": (N,) int64 | None}}``, frames sorted.
    """

    id: int
    name: str
    color: tuple[float, float, float]
    prompts: dict[int, dict] = field(default_factory=dict)

    @property
    def maskFrames(self) -> list[int]:
        """Frames with a mask prompt, sorted."""
        return [t for t, p in self.prompts.items() if p["mask"] is not None]

    @property
    def hasClicks(self) -> bool:
        """True when some frame has points or a box (a Slicer markups node holds them)."""
        return any(p["points"] is not None or p["box"] is not None for p in self.prompts.values())


def objectsFromPrompts(objects: Sequence, colors: dict[int, tuple[float, float, float]]) -> list[StreamObject]:
    """Merge the prompts file's objects (``promptsfile.ObjectPrompts``) per frame, as the Slicer
    logic stores them: one mask and one box per frame, the points of all prompts on a frame in file
    order. ``colors``: object id -> RGB 0..1. Returns the objects in file order."""
    result = []
    for obj in objects:
        frames: dict[int, dict] = {}
        for p in obj.prompts:
            entry = frames.setdefault(int(p.frame), {"mask": None, "box": None, "points": None, "labels": None})
            if p.mask is not None:
                entry["mask"] = np.asarray(p.mask) != 0
            if p.box is not None:
                entry["box"] = np.asarray(p.box, dtype=np.float64).reshape(4)
            if p.points is not None:
                points = np.asarray(p.points, dtype=np.float64).reshape(-1, 2)
                labels = np.asarray(p.labels, dtype=np.int64).reshape(-1)
                if entry["points"] is not None:
                    points = np.concatenate([entry["points"], points])
                    labels = np.concatenate([entry["labels"], labels])
                entry["points"], entry["labels"] = points, labels
        result.append(StreamObject(int(obj.id), obj.name, tuple(colors[obj.id]), dict(sorted(frames.items()))))
    return result


def labelImage(masks: dict[int, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` uint8 label image of one frame from ``{objectId: (H, W) bool mask}``: 0 background,
    else the object id; where masks overlap the larger id wins (as ``export.labelFrames``)."""
    labels = np.zeros(shape, dtype=np.uint8)
    for objectId in sorted(masks):
        labels[masks[objectId]] = objectId
    return labels


# ---------------------------------------------------------------------------------------------
# The disk-backed labelmap
# ---------------------------------------------------------------------------------------------
class DiskLabelmap:
    """A ``(T, H, W)`` labelmap in a temporary file: bit ``k`` of voxel ``[t, row, column]`` is set when
    object ``k`` (its index in ``objectIds``) covers it (uint8 / uint16 / uint32 / uint64 voxels for up
    to 8 / 16 / 32 / 64 objects).

    The file is created next to ``near`` with the temporary name of ``outputs.temporaryPath`` (so
    a run killed before removing it has it removed by the next ``OutputSet.check``), allocated at
    once with ``posix_fallocate`` where available (a full disk is an ``OSError`` now, not a SIGBUS
    later), and mapped only a few frames at a time (``numpy.memmap`` windows), so the resident
    memory stays that of a few frames. Every frame reads as empty until written. Per object it
    records the voxel bounding box and per pair of objects whether they overlap (for the layers
    of :func:`writeSegmentation`). Use as a context manager: the file is removed on exit, also on
    errors.

    Raises:
        ValueError: more than ``MAX_STREAM_OBJECTS`` objects. OSError: the file cannot be created
            or allocated (read-only folder, disk full).
    """

    def __init__(self, near: str | os.PathLike, shape: tuple[int, int, int], objectIds: Sequence[int]) -> None:
        if len(objectIds) > MAX_STREAM_OBJECTS:
            raise ValueError(f"A DiskLabelmap holds at most {MAX_STREAM_OBJECTS} objects; got {len(objectIds)}.")
        self.shape = tuple(int(v) for v in shape)
        self.objectIds = [int(o) for o in objectIds]
        self.dtype = np.dtype(
            next(d for d in (np.uint8, np.uint16, np.uint32, np.uint64) if np.dtype(d).itemsize * 8 >= len(objectIds))
        )
        self.frameBytes = self.shape[1] * self.shape[2] * self.dtype.itemsize
        self.path = temporaryPath(near)
        self.extents: dict[int, list[int] | None] = dict.fromkeys(self.objectIds)  # [i0, i1, j0, j1, k0, k1]
        self.overlaps: set[tuple[int, int]] = set()
        size = max(1, self.frameBytes * self.shape[0])
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, size)
            else:
                os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)
            self.remove()
            raise
        os.close(fd)

    def __enter__(self) -> DiskLabelmap:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Delete the file (nothing if already gone)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _window(self, begin: int, end: int, mode: str) -> np.memmap:
        return np.memmap(
            self.path, dtype=self.dtype, mode=mode, offset=begin * self.frameBytes, shape=(end - begin, *self.shape[1:])
        )

    def writeFrame(self, frame: int, masks: dict[int, np.ndarray]) -> None:
        """Store the ``(H, W)`` bool masks ``{objectId: mask}`` of ``frame`` (objects not given: empty)."""
        bits = np.zeros(self.shape[1:], dtype=self.dtype)
        present = []
        for index, objectId in enumerate(self.objectIds):
            mask = masks.get(objectId)
            if mask is None or not mask.any():
                continue
            bits[mask] |= self.dtype.type(1 << index)
            present.append(objectId)
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            box = [int(cols[0]), int(cols[-1]), int(rows[0]), int(rows[-1]), frame, frame]
            old = self.extents[objectId]
            self.extents[objectId] = box if old is None else [
                min(old[0], box[0]), max(old[1], box[1]), min(old[2], box[2]),
                max(old[3], box[3]), min(old[4], frame), max(old[5], frame),
            ]  # fmt: skip
        for i, a in enumerate(present):
            for b in present[i + 1 :]:
                if (a, b) not in self.overlaps and (masks[a] & masks[b]).any():
                    self.overlaps.add((a, b))
        window = self._window(frame, frame + 1, "r+")
        window[0] = bits
        del window  # unmapped: the page cache keeps the data, not this process

    def readFrames(self, begin: int, end: int) -> np.ndarray:
        """``(end - begin, H, W)`` copy of the bit voxels of frames ``begin .. end - 1``."""
        window = self._window(begin, end, "r")
        try:
            return np.array(window)
        finally:
            del window

    def masks(self, frame: int) -> dict[int, np.ndarray]:
        """``{objectId: (H, W) bool mask}`` of ``frame``."""
        bits = self.readFrames(frame, frame + 1)[0]
        return {o: (bits & self.dtype.type(1 << i)) != 0 for i, o in enumerate(self.objectIds)}


# ---------------------------------------------------------------------------------------------
# The .seg.nrrd writer
# ---------------------------------------------------------------------------------------------
def assignLayers(objectIds: Sequence[int], overlaps: set[tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """``{objectId: (layer, labelValue)}`` as Slicer collapses segments into shared labelmaps when it
    writes a ``.seg.nrrd``: in segment order, each goes into the first layer none of whose segments it
    overlaps, with the next label value of that layer (1, 2, ...)."""
    layers: list[list[int]] = []
    result = {}
    for objectId in objectIds:
        for index, members in enumerate(layers):
            if not any((a, objectId) in overlaps or (objectId, a) in overlaps for a in members):
                members.append(objectId)
                result[objectId] = (index, len(members))
                break
        else:
            layers.append([objectId])
            result[objectId] = (len(layers) - 1, 1)
    return result


def _escape(text: str) -> str:
    """teem's key/value escapes: ``\\`` -> ``\\\\``, newline -> ``\\n``."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _segmentId() -> str:
    """A new segment ID like Slicer's (``S_`` and 16 random letters and digits)."""
    alphabet = string.ascii_letters + string.digits
    return "S_" + "".join(secrets.choice(alphabet) for _ in range(16))


def segmentationHeader(
    shape: tuple[int, int, int],
    objects: Sequence[StreamObject],
    layers: dict[int, tuple[int, int]],
    extents: dict[int, list[int] | None],
    segmentIds: dict[int, str] | None = None,
) -> bytes:
    """The NRRD header (with the blank line that ends it) of the ``.seg.nrrd`` Slicer writes for a
    video of ``shape`` = ``(T, H, W)`` frames imported by the SAM2S module (IJK = column, row, frame;
    identity directions in LPS, origin 0), gzip encoding, one layer per ``layers`` group.

    Args:
        objects: the segments in order. layers: ``{objectId: (layer, labelValue)}`` (:func:`assignLayers`).
        extents: ``{objectId: [i0, i1, j0, j1, k0, k1] or None}`` voxel bounding boxes; each segment
            gets its layer's (the union of the layer's segments), as Slicer writes them.
        segmentIds: ``{objectId: segment ID}`` (default: new random IDs like Slicer's).

    Returns:
        UTF-8 bytes; names and tags are written as Slicer does (UTF-8, teem escapes).
    """
    frames, height, width = shape
    count = 1 + max((layer for layer, _ in layers.values()), default=0)
    layerExtent: dict[int, list[int] | None] = {}
    for obj in objects:
        layer, box = layers[obj.id][0], extents.get(obj.id)
        old = layerExtent.get(layer)
        if box is not None:
            box = list(box) if old is None else [f(a, b) for f, a, b in zip((min, max) * 3, old, box)]
            layerExtent[layer] = box
        else:
            layerExtent.setdefault(layer, None)
    fields: dict[str, str] = {}
    for index, obj in enumerate(objects):
        layer, value = layers[obj.id]
        box = layerExtent.get(layer)
        tags = {"SAM2S.ObjectId": str(obj.id), "TerminologyEntry": TERMINOLOGY}
        if obj.maskFrames:
            tags["SAM2S.MaskPromptFrames"] = ",".join(str(t) for t in obj.maskFrames)
        prefix = f"Segment{index}_"
        fields[prefix + "Color"] = " ".join(f"{float(c):g}" for c in obj.color)
        fields[prefix + "ColorAutoGenerated"] = "0"
        fields[prefix + "Extent"] = " ".join(str(v) for v in (box if box is not None else (0, -1, 0, -1, 0, -1)))
        fields[prefix + "ID"] = (segmentIds or {}).get(obj.id) or _segmentId()
        fields[prefix + "LabelValue"] = str(value)
        fields[prefix + "Layer"] = str(layer)
        fields[prefix + "Name"] = _escape(obj.name)
        fields[prefix + "NameAutoGenerated"] = "0"
        fields[prefix + "Tags"] = "".join(f"{k}:{_escape(v)}|" for k, v in sorted(tags.items()))
    geometry = f"-1;0;0;0;0;-1;0;0;0;0;1;0;0;0;0;1;0;{width - 1};0;{height - 1};0;{frames - 1};"
    fields["Segmentation_ContainedRepresentationNames"] = "Binary labelmap|"
    fields["Segmentation_ConversionParameters"] = CONVERSION_PARAMETERS.format(geometry=geometry)
    fields["Segmentation_MasterRepresentation"] = "Binary labelmap"
    fields["Segmentation_ReferenceImageExtentOffset"] = "0 0 0"
    four = count > 1
    lines = [
        "NRRD0004",
        "# Complete NRRD file format specification at:",
        "# http://teem.sourceforge.net/nrrd/format.html",
        "type: unsigned char",
        f"dimension: {4 if four else 3}",
        "space: left-posterior-superior",
        f"sizes: {f'{count} ' if four else ''}{width} {height} {frames}",
        f"space directions: {'none ' if four else ''}(1,0,0) (0,1,0) (0,0,1)",
        f"kinds: {'list ' if four else ''}domain domain domain",
        "encoding: gzip",
        "space origin: (0,0,0)",
    ]
    lines += [f"{key}:={fields[key]}" for key in sorted(fields, key=lambda k: k.encode("utf-8"))]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def writeSegmentation(
    path: str | os.PathLike,
    labelmap: DiskLabelmap,
    objects: Sequence[StreamObject],
    level: int = 6,
) -> Path:
    """Write ``labelmap`` as a Slicer ``.seg.nrrd`` at ``path``, streaming: the header, then the
    gzip-compressed voxels (``(T, H, W[, layers])`` uint8, a few frames at a time through
    ``zlib.compressobj``), into a temporary file that is checked (``export.verifyNrrdFile``) and
    renamed to ``path`` (``outputs.atomicFile``: an existing file is only replaced by a complete one).

    Args:
        objects: the segments in order (the ids of ``labelmap.objectIds``). level: gzip level 0..9.

    Returns:
        ``path``. Raises OSError: writing failed (disk full, read-only); ``path`` is unchanged.
    """
    from .export import verifyNrrdFile

    frames, height, width = labelmap.shape
    layers = assignLayers([o.id for o in objects], labelmap.overlaps)
    count = 1 + max(layer for layer, _ in layers.values())
    header = segmentationHeader(labelmap.shape, objects, layers, labelmap.extents)
    bitOf = {o: labelmap.dtype.type(1 << i) for i, o in enumerate(labelmap.objectIds)}
    step = max(1, WRITE_CHUNK_BYTES // max(1, height * width * max(count, labelmap.dtype.itemsize)))
    path = Path(path)
    with atomicFile(path) as temp:
        with open(temp, "wb") as file:
            file.write(header)
            deflater = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS | 16)
            for begin in range(0, frames, step):
                bits = labelmap.readFrames(begin, min(frames, begin + step))
                out = np.zeros((*bits.shape, count), dtype=np.uint8)  # (t, row, column, layer): NRRD order
                for obj in objects:
                    layer, value = layers[obj.id]
                    out[..., layer][(bits & bitOf[obj.id]) != 0] = value
                file.write(deflater.compress(out.tobytes()))
            file.write(deflater.flush())
            file.flush()
            os.fsync(file.fileno())
        verifyNrrdFile(str(temp))
    return path


# ---------------------------------------------------------------------------------------------
# Tracking
# ---------------------------------------------------------------------------------------------
def _createTracker(engine: str, source, model, memory: str):
    if engine == "flow":
        from sam2s.flow import FlowTracker

        return FlowTracker(source)
    from sam2s import VideoTracker

    return VideoTracker(model, source, memory=memory)


def _sendPrompts(tracker, objects: Sequence[StreamObject]) -> None:
    """Give the engine every prompt, in the Slicer logic's order (see the module docstring)."""
    ordered = [o for o in objects if o.hasClicks] + [o for o in objects if not o.hasClicks]
    for obj in ordered:
        for frame, p in obj.prompts.items():
            if p["mask"] is not None:
                tracker.add_mask(frame, obj.id, p["mask"])
            if p["box"] is not None:
                tracker.add_box(frame, obj.id, p["box"], p["points"], p["labels"])
            elif p["points"] is not None:
                tracker.add_points(frame, obj.id, p["points"], p["labels"])


def trackPasses(objects: Sequence[StreamObject], first: int, last: int) -> list[tuple[int, int, bool]]:
    """``[(start, end, reverse)]``: forward from the earliest prompted frame in ``first .. last`` (else
    ``first``) to ``last``, then backward from the frame before it to ``first`` (``direction="both"``)."""
    prompted = sorted({t for o in objects for t in o.prompts if first <= t <= last})
    start = prompted[0] if prompted else first
    return [(start, last, False)] + ([(start - 1, first, True)] if start > first else [])


def streamTracking(
    source,
    objects: Sequence[StreamObject],
    first: int,
    last: int,
    engine: str,
    model=None,
    memory: str = "sam2",
    progress: Callable[[int, int, int], None] | None = None,
    confidences: dict[tuple[int, int], tuple[float, float]] | None = None,
) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
    """Track ``objects`` through ``source`` (a ``sam2s.frames.FrameSource``) over frames
    ``first .. last`` and yield ``(frame, {objectId: (H, W) bool mask})`` in tracking order
    (:func:`trackPasses`). ``progress(done, total, frame)`` after each frame. ``confidences``:
    a dict that gets ``{(frame, objectId): (predicted_iou, object_score)}`` of each yielded frame
    where the engine gives them (``sam2s.VideoTracker.confidence``; the flow engine gives none).

    Raises:
        sam2s.PromptError: a prompt the engine refuses (e.g. the flow engine with nothing to start from).
    """
    tracker = _createTracker(engine, source, model, memory)
    _sendPrompts(tracker, objects)
    ids = [o.id for o in objects]
    passes = trackPasses(objects, first, last)
    total = sum(abs(end - begin) + 1 for begin, end, _ in passes)
    done = 0
    forget = getattr(tracker, "forget_tracked", None)
    for begin, end, reverse in passes:
        previous = None
        with contextlib.closing(tracker.propagate(begin, end, reverse, obj_ids=ids)) as frames:
            for frame, frameIds, logits in frames:
                masks = {o: logits[i] > 0 for i, o in enumerate(frameIds)}
                if confidences is not None:
                    for o in frameIds:
                        score = tracker.confidence(o, frame)
                        if score is not None:
                            confidences[(frame, o)] = score
                done += 1
                if progress is not None:
                    progress(done, total, frame)
                yield frame, masks
                # the flow engine keeps every tracked mask: drop those no later frame starts from
                if forget is not None and previous is not None and previous != passes[0][0]:
                    forget([previous])
                previous = frame


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------
def labelPalette(objects: Sequence[StreamObject]) -> list[int]:
    """The 768-entry PNG palette of the label images: entry ``id`` = the object's colour
    (``round(255 * c)``, as ``export.exportLabelPngs``), others black."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for obj in objects:
        palette[obj.id] = np.round(np.asarray(obj.color) * 255)
    return palette.reshape(-1).tolist()


def writeLabelPng(path: str | os.PathLike, labels: np.ndarray, palette: list[int]) -> None:
    """Write an ``(H, W)`` uint8 label image as an 8-bit palette PNG, byte for byte as
    ``export.exportLabelPngs`` does. Raises OSError: the file cannot be written."""
    from PIL import Image

    image = Image.fromarray(labels)  # mode "L": the pixel values are the object ids
    image.putpalette(palette)  # becomes mode "P" with the same values
    image.save(path, format="PNG")


def trackToOutputs(
    source,
    objects: Sequence[StreamObject],
    first: int,
    last: int,
    engine: str,
    outputs,
    segPath: Path | None = None,
    pngPath: Path | None = None,
    overlayPath: Path | None = None,
    model=None,
    memory: str = "sam2",
    progress: Callable[[int, int, int], None] | None = None,
    statsPath: Path | None = None,
    cocoPath: Path | None = None,
    videoName: str = "video",
) -> tuple[dict[str, str], list[dict]]:
    """Track and write the outputs of ``sam2s track`` frame by frame (see the module docstring).

    Args:
        source: ``sam2s.frames.FrameSource`` of the video (``T`` frames of ``H x W``).
        objects: :func:`objectsFromPrompts`. first, last: inclusive frame range to track.
        engine: ``"sam2"`` (needs ``model``) or ``"flow"``. outputs: the checked
            ``outputs.OutputSet`` that declared the paths. segPath / pngPath / overlayPath: the
            ``.seg.nrrd``, the label PNG folder (``{frame:05d}.png`` for every frame of the video)
            and the overlay video, or None.
        progress: ``(done, total, frame)`` after each tracked frame.
        statsPath: a folder (declared in ``outputs``) for the files of ``stats.MaskletStatistics``
            (``stats.STATS_FILES``, computed from the label images, as the PNGs), or None; only a few
            numbers per frame and object are kept while tracking; ``"stats"`` in ``written``.
        cocoPath: a COCO instance ``.json`` (``coco.CocoWriter``: each frame's masks are encoded to
            RLE as they come, so no ``T x H x W`` array is held), or None. videoName: its video's name.

    Returns:
        ``(written, summary)``: ``{"segmentation" | "png_dir" | "overlay" | "coco": path}`` and one row per
        object ``{"id", "name", "frames_present", "frames", "mean_area_px"}``.

    Raises:
        outputs.OutputWriteError: an output (or the temporary labelmap) could not be written;
            ``.written`` lists the outputs written completely. sam2s.PromptError: a prompt the
            engine refuses. Frames outside ``first .. last`` are empty but for mask prompts there.
    """
    from .outputs import OutputWriteError
    from .visualize import overlay as blend
    from .visualize import write_video

    frames, height, width = len(source), source.height, source.width
    written: dict[str, str] = {}
    statistics = confidences = None
    if statsPath is not None:
        from .stats import MaskletStatistics

        statistics = MaskletStatistics({o.id: o.name for o in objects}, frames)
        confidences = {}
    areas = {o.id: np.zeros(frames, dtype=np.int64) for o in objects}
    palette = labelPalette(objects)
    colors = {o.id: o.color for o in objects}
    outside: dict[int, dict[int, np.ndarray]] = {}  # mask prompts outside the range stay, as in Slicer
    for obj in objects:
        for t in obj.maskFrames:
            if not first <= t <= last:
                outside.setdefault(t, {})[obj.id] = obj.prompts[t]["mask"]

    def failed(path: Path, error: OSError) -> OutputWriteError:
        return OutputWriteError(path, error, [Path(p) for p in written.values()])

    cocoWriter = None
    if cocoPath is not None:
        from .coco import CocoWriter

        cocoWriter = CocoWriter([(o.id, o.name) for o in objects], videoName, frames, height, width, source.fps)
    needMap = segPath is not None or overlayPath is not None
    with contextlib.ExitStack() as stack:
        labelmap = None
        if needMap:
            near = segPath if segPath is not None else overlayPath
            try:
                labelmap = stack.enter_context(DiskLabelmap(near, (frames, height, width), [o.id for o in objects]))
            except OSError as error:
                raise failed(near, error) from error
        seen = np.zeros(frames, dtype=bool)

        def store(frame: int, masks: dict[int, np.ndarray], staging: Path | None) -> None:
            seen[frame] = True
            for objectId, mask in masks.items():
                areas[objectId][frame] = int(np.count_nonzero(mask))
            if statistics is not None:
                statistics.addLabels(frame, labelImage(masks, (height, width)))
            if cocoWriter is not None:
                cocoWriter.addFrame(frame, masks)
            if labelmap is not None:
                try:
                    labelmap.writeFrame(frame, masks)
                except OSError as error:
                    raise failed(near, error) from error
            if staging is not None:
                try:
                    writeLabelPng(staging / f"{frame:05d}.png", labelImage(masks, (height, width)), palette)
                except OSError as error:
                    raise failed(pngPath, error) from error

        def trackAll(staging: Path | None) -> None:
            for frame, masks in sorted(outside.items()):
                store(frame, masks, staging)
            stream = streamTracking(source, objects, first, last, engine, model, memory, progress, confidences)
            for frame, masks in stream:
                store(frame, masks, staging)
            if staging is not None:
                empty = np.zeros((height, width), dtype=np.uint8)
                try:
                    for frame in np.flatnonzero(~seen):
                        writeLabelPng(staging / f"{int(frame):05d}.png", empty, palette)
                except OSError as error:
                    raise failed(pngPath, error) from error

        if pngPath is None:
            trackAll(None)
        else:
            try:
                with outputs.writeFolder(pngPath) as staging:  # committed at the end, or left as it was
                    trackAll(staging)
            except OutputWriteError:
                raise
            except OSError as error:
                raise failed(pngPath, error) from error
            written["png_dir"] = str(pngPath)
        if segPath is not None:
            try:
                writeSegmentation(segPath, labelmap, objects)
            except OSError as error:
                raise failed(segPath, error) from error
            written["segmentation"] = str(segPath)
        if overlayPath is not None:
            try:
                with atomicFile(overlayPath) as temp:
                    write_video(
                        temp,
                        (
                            blend(source.get(t), labelImage(labelmap.masks(t), (height, width)), colors)
                            for t in range(frames)
                        ),
                        source.fps or 10,
                    )
            except OSError as error:
                raise failed(overlayPath, error) from error
            written["overlay"] = str(overlayPath)
        if statsPath is not None:
            from .stats import writeStatisticsFolder

            for (frame, objectId), score in confidences.items():
                statistics.setConfidence(frame, objectId, score)
            try:
                with outputs.writeFolder(statsPath) as staging:  # the four files appear together
                    writeStatisticsFolder(statistics, staging, colors)
            except OSError as error:
                raise failed(statsPath, error) from error
            written["stats"] = str(statsPath)
        if cocoWriter is not None:
            try:
                cocoWriter.write(cocoPath)
            except OSError as error:
                raise failed(cocoPath, error) from error
            written["coco"] = str(cocoPath)
    summary = []
    for obj in objects:
        area = areas[obj.id]
        present = area > 0
        summary.append(
            {
                "id": obj.id,
                "name": obj.name,
                "frames_present": int(present.sum()),
                "frames": frames,
                "mean_area_px": float(area[present].mean()) if present.any() else 0.0,
            }
        )
    return written, summary
