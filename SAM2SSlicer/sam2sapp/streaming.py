"""``sam2s track``'s one path: frames go from the decoder through the tracker into sinks, one per output.

The tracker is any ``sam2s.Tracker`` (``sam2s.VideoTracker``, ``sam2s.FlowTracker``, or a tracking
server's ``sam2s.serving.client.RemoteSession``); :func:`stream_tracking` gives it the prompts and
consumes its one stream (``Tracker.run``). Each output is a sink (:class:`Sink`): label PNGs
(:class:`LabelPngSink`), COCO (:class:`CocoSink`), statistics and the review list
(:class:`StatsSink`), a ``.seg.nrrd`` (:class:`SegmentationSink`, over a disk-backed labelmap) and
the overlay video (:class:`OverlaySink`); the Slicer module's sink is the MRML segmentation
(``logic.SAM2STrackingLogic.applyTrackingResults``). A new output format is one more sink.

Nothing of size ``T x H x W`` is held in memory: frames are decoded on demand
(``sam2s.frames.open_frames``), the engine keeps a bounded state, label PNGs are written as
frames are tracked, and the masks needed by the ``.seg.nrrd`` and the overlay go to a
:class:`DiskLabelmap` (a ``numpy.memmap`` of a temporary file next to the output, mapped a few
frames at a time and removed afterwards).

Results equal the Slicer module's: the same prompts in the same order (objects with clicks or
boxes first, then mask-only ones, as ``SAM2STrackingLogic.collectPrompts`` sends them; per frame
the mask first, then the box with the clicks, or the clicks), the same passes
(``sam2s.session.plan_passes``, ``both``: forward from the earliest prompted frame in the range
to its end, then backward to its start), the same overlap rule in label images (the larger
object id wins, ``export.labelFrames``), and a ``.seg.nrrd`` with the header Slicer writes
(``export.exportSegmentation``; overlapping segments in extra layers, first fit in segment order).
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sam2s.session import TrackedFrame, TrackingPlan, plan_passes
from SAM2SSlicerLib.outputs import atomicFile, temporaryPath, unlinkEvenIfInterrupted
from SAM2SSlicerLib.provenance import Provenance, segmentTag, writeProvenanceFile

__all__ = [
    "CocoSink",
    "ContactSheetSink",
    "DiskLabelmap",
    "LabelPngSink",
    "OverlaySink",
    "SegmentationSink",
    "Sink",
    "StatsSink",
    "StreamObject",
    "assign_layers",
    "label_image",
    "objects_from_prompts",
    "segmentation_header",
    "send_prompts",
    "stream_tracking",
    "track_to_outputs",
    "write_label_png",
    "write_segmentation",
]
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
    def mask_frames(self) -> list[int]:
        """Frames with a mask prompt, sorted."""
        return [t for t, p in self.prompts.items() if p["mask"] is not None]

    @property
    def has_clicks(self) -> bool:
        """True when some frame has points or a box (a Slicer markups node holds them)."""
        return any(p["points"] is not None or p["box"] is not None for p in self.prompts.values())


def objects_from_prompts(objects: Sequence, colors: dict[int, tuple[float, float, float]]) -> list[StreamObject]:
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


def label_image(masks: dict[int, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` uint8 label image of one frame from ``{object_id: (H, W) bool mask}``: 0 background,
    else the object id; where masks overlap the larger id wins (as ``export.labelFrames``)."""
    labels = np.zeros(shape, dtype=np.uint8)
    for object_id in sorted(masks):
        labels[masks[object_id]] = object_id
    return labels


# ---------------------------------------------------------------------------------------------
# The disk-backed labelmap
# ---------------------------------------------------------------------------------------------
class DiskLabelmap:
    """A ``(T, H, W)`` labelmap in a temporary file: bit ``k % 8`` of byte ``k // 8`` of voxel
    ``[t, row, column]`` is set when object ``k`` (its index in ``object_ids``) covers it, so a
    voxel takes ``ceil(N / 8)`` bytes for ``N`` objects (any number of the 254 ids).

    The file is created next to ``near`` with the temporary name of ``outputs.temporaryPath`` (so
    a run killed before removing it has it removed by the next ``OutputSet.check``), allocated at
    once with ``posix_fallocate`` where available (a full disk is an ``OSError`` now, not a SIGBUS
    later), and mapped only a few frames at a time (``numpy.memmap`` windows), so the resident
    memory stays that of a few frames. Every frame reads as empty until written. Per object it
    records the voxel bounding box and per pair of objects whether they overlap (for the layers
    of :func:`write_segmentation`). Use as a context manager: the file is removed on exit, also on
    errors.

    Raises:
        OSError: the file cannot be created or allocated (read-only folder, disk full).
    """

    def __init__(self, near: str | os.PathLike, shape: tuple[int, int, int], object_ids: Sequence[int]) -> None:
        self.shape = tuple(int(v) for v in shape)
        self.object_ids = [int(o) for o in object_ids]
        self.depth = max(1, -(-len(self.object_ids) // 8))  # bytes per voxel
        self.frame_bytes = self.shape[1] * self.shape[2] * self.depth
        self.path = temporaryPath(near)
        self.extents: dict[int, list[int] | None] = dict.fromkeys(self.object_ids)  # [i0, i1, j0, j1, k0, k1]
        self.overlaps: set[tuple[int, int]] = set()
        size = max(1, self.frame_bytes * self.shape[0])
        try:  # an interrupt (Ctrl+C) at any point, even right after the open, leaves no file
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            try:
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(fd, 0, size)
                else:
                    os.ftruncate(fd, size)
            finally:
                os.close(fd)
        except BaseException:
            self.remove()
            raise

    def __enter__(self) -> DiskLabelmap:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Delete the file (nothing if already gone), also when Ctrl+C arrives just then."""
        with contextlib.suppress(FileNotFoundError):
            unlinkEvenIfInterrupted(self.path)

    def _window(self, begin: int, end: int, mode: str) -> np.memmap:
        shape = (end - begin, self.shape[1], self.shape[2], self.depth)
        return np.memmap(self.path, dtype=np.uint8, mode=mode, offset=begin * self.frame_bytes, shape=shape)

    def covers(self, bits: np.ndarray, object_id: int) -> np.ndarray:
        """``bits[..., byte]`` of :meth:`read_frames` -> the bool voxels ``object_id`` covers."""
        index = self.object_ids.index(object_id)
        return (bits[..., index // 8] & np.uint8(1 << (index % 8))) != 0

    def write_frame(self, frame: int, masks: dict[int, np.ndarray]) -> None:
        """Store the ``(H, W)`` bool masks ``{object_id: mask}`` of ``frame`` (objects not given: empty)."""
        bits = np.zeros((*self.shape[1:], self.depth), dtype=np.uint8)
        present = []
        for index, object_id in enumerate(self.object_ids):
            mask = masks.get(object_id)
            if mask is None or not mask.any():
                continue
            bits[mask, index // 8] |= np.uint8(1 << (index % 8))
            present.append(object_id)
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            box = [int(cols[0]), int(cols[-1]), int(rows[0]), int(rows[-1]), frame, frame]
            old = self.extents[object_id]
            self.extents[object_id] = box if old is None else [f(a, b) for f, a, b in zip((min, max) * 3, old, box)]
        for i, a in enumerate(present):
            for b in present[i + 1 :]:
                if (a, b) not in self.overlaps and (masks[a] & masks[b]).any():
                    self.overlaps.add((a, b))
        window = self._window(frame, frame + 1, "r+")
        window[0] = bits
        del window  # unmapped: the page cache keeps the data, not this process

    def read_frames(self, begin: int, end: int) -> np.ndarray:
        """``(end - begin, H, W, bytes)`` copy of the bit voxels of frames ``begin .. end - 1``."""
        window = self._window(begin, end, "r")
        try:
            return np.array(window)
        finally:
            del window

    def masks(self, frame: int) -> dict[int, np.ndarray]:
        """``{object_id: (H, W) bool mask}`` of ``frame``."""
        bits = self.read_frames(frame, frame + 1)[0]
        return {o: self.covers(bits, o) for o in self.object_ids}


# ---------------------------------------------------------------------------------------------
# The .seg.nrrd writer
# ---------------------------------------------------------------------------------------------
def assign_layers(object_ids: Sequence[int], overlaps: set[tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """``{object_id: (layer, labelValue)}`` as Slicer collapses segments into shared labelmaps when it
    writes a ``.seg.nrrd``: in segment order, each goes into the first layer none of whose segments it
    overlaps, with the next label value of that layer (1, 2, ...)."""
    layers: list[list[int]] = []
    result = {}
    for object_id in object_ids:
        for index, members in enumerate(layers):
            if not any((a, object_id) in overlaps or (object_id, a) in overlaps for a in members):
                members.append(object_id)
                result[object_id] = (index, len(members))
                break
        else:
            layers.append([object_id])
            result[object_id] = (len(layers) - 1, 1)
    return result


def _escape(text: str) -> str:
    """teem's key/value escapes: ``\\`` -> ``\\\\``, newline -> ``\\n``."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _segment_id(object_id: int) -> str:
    """The segment ID of ``object_id`` in a streamed ``.seg.nrrd``: fixed (``Segment_<id>``, as Slicer
    names a segment it creates), so that the same run writes the same file."""
    return f"Segment_{int(object_id)}"


def segmentation_header(
    shape: tuple[int, int, int],
    objects: Sequence[StreamObject],
    layers: dict[int, tuple[int, int]],
    extents: dict[int, list[int] | None],
    segment_ids: dict[int, str] | None = None,
    provenance: Provenance | None = None,
) -> bytes:
    """The NRRD header (with the blank line that ends it) of the ``.seg.nrrd`` Slicer writes for a
    video of ``shape`` = ``(T, H, W)`` frames imported by the SAM2S module (IJK = column, row, frame;
    identity directions in LPS, origin 0), gzip encoding, one layer per ``layers`` group.

    Args:
        objects: the segments in order. layers: ``{object_id: (layer, labelValue)}`` (:func:`assign_layers`).
        extents: ``{object_id: [i0, i1, j0, j1, k0, k1] or None}`` voxel bounding boxes; each segment
            gets its layer's (the union of the layer's segments), as Slicer writes them.
        segment_ids: ``{object_id: segment ID}`` (default: ``Segment_<object_id>``).
        provenance: recorded as every segment's tag ``provenance.segmentTag`` (as
            ``provenance.setNodeProvenance`` tags a node's segments for Slicer's writer), or None.

    Returns:
        UTF-8 bytes; names and tags are written as Slicer does (UTF-8, teem escapes).
    """
    frames, height, width = shape
    count = 1 + max((layer for layer, _ in layers.values()), default=0)
    layer_extent: dict[int, list[int] | None] = {}
    for obj in objects:
        layer, box = layers[obj.id][0], extents.get(obj.id)
        old = layer_extent.get(layer)
        if box is not None:
            box = list(box) if old is None else [f(a, b) for f, a, b in zip((min, max) * 3, old, box)]
            layer_extent[layer] = box
        else:
            layer_extent.setdefault(layer, None)
    fields: dict[str, str] = {}
    for index, obj in enumerate(objects):
        layer, value = layers[obj.id]
        box = layer_extent.get(layer)
        tags = {"SAM2S.ObjectId": str(obj.id), "TerminologyEntry": TERMINOLOGY}
        if obj.mask_frames:
            tags["SAM2S.MaskPromptFrames"] = ",".join(str(t) for t in obj.mask_frames)
        if provenance is not None:
            tag, record = segmentTag(provenance)
            tags[tag] = record
        prefix = f"Segment{index}_"
        fields[prefix + "Color"] = " ".join(f"{float(c):g}" for c in obj.color)
        fields[prefix + "ColorAutoGenerated"] = "0"
        fields[prefix + "Extent"] = " ".join(str(v) for v in (box if box is not None else (0, -1, 0, -1, 0, -1)))
        fields[prefix + "ID"] = (segment_ids or {}).get(obj.id) or _segment_id(obj.id)
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


def write_segmentation(
    path: str | os.PathLike,
    labelmap: DiskLabelmap,
    objects: Sequence[StreamObject],
    level: int = 6,
    provenance: Provenance | None = None,
) -> Path:
    """Write ``labelmap`` as a Slicer ``.seg.nrrd`` at ``path``, streaming: the header, then the
    gzip-compressed voxels (``(T, H, W[, layers])`` uint8, a few frames at a time through
    ``zlib.compressobj``), into a temporary file that is checked (``export.verifyNrrdFile``) and
    renamed to ``path`` (``outputs.atomicFile``: an existing file is only replaced by a complete one).

    Args:
        objects: the segments in order (the ids of ``labelmap.object_ids``). level: gzip level 0..9.
        provenance: recorded in the segments' tags (:func:`segmentation_header`), or None.

    Returns:
        ``path``. Raises OSError: writing failed (disk full, read-only); ``path`` is unchanged.
    """
    from SAM2SSlicerLib.export import verifyNrrdFile

    frames, height, width = labelmap.shape
    layers = assign_layers([o.id for o in objects], labelmap.overlaps)
    count = 1 + max(layer for layer, _ in layers.values())
    header = segmentation_header(labelmap.shape, objects, layers, labelmap.extents, provenance=provenance)
    step = max(1, WRITE_CHUNK_BYTES // max(1, height * width * max(count, labelmap.depth)))
    path = Path(path)
    with atomicFile(path) as temp:
        with open(temp, "wb") as file:
            file.write(header)
            deflater = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS | 16)
            for begin in range(0, frames, step):
                bits = labelmap.read_frames(begin, min(frames, begin + step))
                out = np.zeros((*bits.shape[:3], count), dtype=np.uint8)  # (t, row, column, layer): NRRD order
                for obj in objects:
                    layer, value = layers[obj.id]
                    out[..., layer][labelmap.covers(bits, obj.id)] = value
                file.write(deflater.compress(out.tobytes()))
            file.write(deflater.flush())
            file.flush()
            os.fsync(file.fileno())
        verifyNrrdFile(str(temp))
    return path


# ---------------------------------------------------------------------------------------------
# Tracking
# ---------------------------------------------------------------------------------------------
def send_prompts(tracker, objects: Sequence[StreamObject]) -> None:
    """Give ``tracker`` (a ``sam2s.Tracker``) every prompt, in the Slicer logic's order (see the
    module docstring). Raises ``sam2s.PromptError`` for a prompt the engine refuses."""
    ordered = [o for o in objects if o.has_clicks] + [o for o in objects if not o.has_clicks]
    for obj in ordered:
        for frame, p in obj.prompts.items():
            if p["mask"] is not None:
                tracker.add_mask(frame, obj.id, p["mask"])
            if p["box"] is not None:
                tracker.add_box(frame, obj.id, p["box"], p["points"], p["labels"])
            elif p["points"] is not None:
                tracker.add_points(frame, obj.id, p["points"], p["labels"])


def stream_plan(objects: Sequence[StreamObject], first: int, last: int) -> TrackingPlan:
    """The ``sam2s.TrackingPlan`` of ``sam2s track``: every object, ``plan_passes(..., "both")`` over
    ``first .. last`` from the earliest prompted frame there; tracked results are dropped as the
    stream goes (``keep_tracked=False``: nothing is tracked again)."""
    passes = plan_passes([t for o in objects for t in o.prompts], first, last, "both")
    return TrackingPlan(tuple(passes), tuple(o.id for o in objects), keep_tracked=False)


def stream_tracking(
    tracker,
    objects: Sequence[StreamObject],
    first: int,
    last: int,
    progress: Callable[[int, int, int], None] | None = None,
) -> Iterator[TrackedFrame]:
    """Prompt ``tracker`` (a ``sam2s.Tracker``) with ``objects`` and yield its stream
    (``Tracker.run(stream_plan(...))``): one ``sam2s.TrackedFrame`` per tracked frame of
    ``first .. last``, in tracking order. ``progress(done, total, frame)`` after each frame.

    Raises:
        sam2s.PromptError: a prompt the engine refuses (e.g. the flow engine with nothing to start from).
    """
    send_prompts(tracker, objects)
    with contextlib.closing(tracker.run(stream_plan(objects, first, last))) as stream:
        for tracked in stream:
            if progress is not None:
                progress(tracked.done, tracked.total, tracked.frame_idx)
            yield tracked


# ---------------------------------------------------------------------------------------------
# Sinks
# ---------------------------------------------------------------------------------------------
def label_palette(objects: Sequence[StreamObject]) -> list[int]:
    """The 768-entry PNG palette of the label images: entry ``id`` = the object's colour
    (``round(255 * c)``, as ``export.exportLabelPngs``), others black."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for obj in objects:
        palette[obj.id] = np.round(np.asarray(obj.color) * 255)
    return palette.reshape(-1).tolist()


def write_label_png(path: str | os.PathLike, labels: np.ndarray, palette: list[int]) -> None:
    """Write an ``(H, W)`` uint8 label image as an 8-bit palette PNG, byte for byte as
    ``export.exportLabelPngs`` does. Raises OSError: the file cannot be written."""
    from PIL import Image

    image = Image.fromarray(labels)  # mode "L": the pixel values are the object ids
    image.putpalette(palette)  # becomes mode "P" with the same values
    image.save(path, format="PNG")


@dataclass
class StreamInfo:
    """What sinks know of the run: the video's ``frames`` (T), ``height``, ``width`` (pixels), ``fps``
    (or None), ``name`` (its stem) and ``source`` (the ``sam2s.FrameSource``, read again by the
    overlay and the contact sheet), and the run's ``provenance`` (``provenance.Provenance``, recorded
    in every output that has a place for it), or None."""

    frames: int
    height: int
    width: int
    fps: float | None
    name: str
    source: object = None
    provenance: Provenance | None = None


class Sink:
    """One output of the stream. ``key`` names it in ``track_to_outputs``'s result, ``path`` is where
    it goes. ``open`` runs before the first frame (inside an ``ExitStack`` that closes whatever it
    holds, also on errors), ``add`` gets every frame's masks, ``finish`` writes the output
    completely (atomically) after the last frame. Each raises ``OSError`` when writing fails."""

    key = ""

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self, stack: contextlib.ExitStack, video: StreamInfo, objects: Sequence[StreamObject]) -> None:
        """Prepare (allocate, create a staging folder); the default does nothing."""

    def add(self, frame: int, masks: dict[int, np.ndarray], tracked: TrackedFrame | None) -> None:
        """The ``(H, W)`` bool masks ``{object_id: mask}`` of ``frame`` (``tracked``: the stream's
        frame, None for a mask prompt outside the tracked range)."""

    def finish(self, missing: Sequence[int]) -> None:
        """Write the output; ``missing``: frames never added (empty)."""


class LabelPngSink(Sink):
    """Label PNGs ``{frame:05d}.png`` (``export.labelPngPattern``) of every frame, written into the
    staging folder of ``outputs.OutputSet.writeFolder`` as frames come and committed at the end."""

    key = "png_dir"

    def __init__(self, path: Path, outputs) -> None:
        super().__init__(path)
        self.outputs = outputs

    def open(self, stack, video, objects) -> None:
        self.palette, self.shape = label_palette(objects), (video.height, video.width)
        self.provenance = video.provenance
        self._commit = contextlib.ExitStack()  # closed by finish: the commit
        self.staging = self._commit.enter_context(self.outputs.writeFolder(self.path))
        stack.push(self._commit.__exit__)  # on errors the folder keeps its old content

    def add(self, frame, masks, tracked) -> None:
        write_label_png(self.staging / f"{frame:05d}.png", label_image(masks, self.shape), self.palette)

    def finish(self, missing) -> None:
        empty = np.zeros(self.shape, dtype=np.uint8)
        for frame in missing:
            write_label_png(self.staging / f"{int(frame):05d}.png", empty, self.palette)
        if self.provenance is not None:
            writeProvenanceFile(self.staging, self.provenance)
        self._commit.close()


class CocoSink(Sink):
    """A COCO instance ``.json`` (``coco.CocoWriter``: each frame's masks are encoded to RLE as they
    come, so no ``T x H x W`` array is held)."""

    key = "coco"

    def open(self, stack, video, objects) -> None:
        from SAM2SSlicerLib.coco import CocoWriter

        self.writer = CocoWriter(
            [(o.id, o.name) for o in objects], video.name, video.frames, video.height, video.width, video.fps,
            provenance=video.provenance,
        )  # fmt: skip

    def add(self, frame, masks, tracked) -> None:
        self.writer.addFrame(frame, masks)

    def finish(self, missing) -> None:
        self.writer.write(self.path)


class StatsSink(Sink):
    """The statistics folder (``stats.STATS_FILES``) of the label images, as the PNGs, with the
    model's confidences; only a few numbers per frame and object are kept while tracking."""

    key = "stats"

    def __init__(self, path: Path, outputs) -> None:
        super().__init__(path)
        self.outputs = outputs

    def open(self, stack, video, objects) -> None:
        from SAM2SSlicerLib.stats import MaskletStatistics

        self.statistics = MaskletStatistics({o.id: o.name for o in objects}, video.frames)
        self.provenance = video.provenance
        self.shape, self.colors = (video.height, video.width), {o.id: o.color for o in objects}

    def add(self, frame, masks, tracked) -> None:
        self.statistics.addLabels(frame, label_image(masks, self.shape))
        if tracked is not None:
            for object_id, value in zip(tracked.obj_ids, tracked.confidences):
                if value is not None:
                    self.statistics.setConfidence(frame, object_id, value)

    def finish(self, missing) -> None:
        from SAM2SSlicerLib.stats import writeStatisticsFolder

        with self.outputs.writeFolder(self.path) as staging:  # the four files appear together
            writeStatisticsFolder(self.statistics, staging, self.colors, provenance=self.provenance)


class SegmentationSink(Sink):
    """A Slicer ``.seg.nrrd`` (:func:`write_segmentation`) of a :class:`DiskLabelmap` next to it."""

    key = "segmentation"

    def open(self, stack, video, objects) -> None:
        self.objects, self.provenance = objects, video.provenance
        self.labelmap = stack.enter_context(
            DiskLabelmap(self.path, (video.frames, video.height, video.width), [o.id for o in objects])
        )

    def add(self, frame, masks, tracked) -> None:
        self.labelmap.write_frame(frame, masks)

    def finish(self, missing) -> None:
        write_segmentation(self.path, self.labelmap, self.objects, provenance=self.provenance)


class OverlaySink(SegmentationSink):
    """The overlay video (``visualize.overlay`` of each frame and its label image, H.264), written
    after the last frame from its own :class:`DiskLabelmap` (frames come in tracking order) and
    the frames read again from the same ``sam2s.FrameSource``."""

    key = "overlay"

    def open(self, stack, video, objects) -> None:
        super().open(stack, video, objects)
        self.video, self.colors = video, {o.id: o.color for o in objects}

    def finish(self, missing) -> None:
        from .visualize import overlay as blend
        from .visualize import write_video

        video, shape = self.video, (self.video.height, self.video.width)
        frames = (
            blend(video.source.get(t), label_image(self.labelmap.masks(t), shape), self.colors)
            for t in range(video.frames)
        )
        with atomicFile(self.path) as temp:
            write_video(temp, frames, video.fps or 10)


class ContactSheetSink(Sink):
    """A PNG of ``count`` frames spread over the video, each with its objects blended in
    (``visualize.contact_sheet``); it keeps only those frames' label images and reads their
    pixels from the same ``sam2s.FrameSource`` at the end."""

    key = "contact_sheet"

    def __init__(self, path: Path, count: int = 12) -> None:
        super().__init__(path)
        self.count = count

    def open(self, stack, video, objects) -> None:
        self.video, self.colors = video, {o.id: o.color for o in objects}
        picks = np.linspace(0, video.frames - 1, min(self.count, video.frames)).round().astype(int)
        self.labels = {int(t): np.zeros((video.height, video.width), dtype=np.uint8) for t in picks}

    def add(self, frame, masks, tracked) -> None:
        if frame in self.labels:
            self.labels[frame] = label_image(masks, self.labels[frame].shape)

    def finish(self, missing) -> None:
        from .visualize import contact_sheet
        from .visualize import overlay as blend

        images = [blend(self.video.source.get(t), labels, self.colors) for t, labels in self.labels.items()]
        with atomicFile(self.path) as temp:
            contact_sheet(images, [f"frame {t}" for t in self.labels]).save(temp, format="PNG")


def track_to_outputs(
    tracker,
    video: StreamInfo,
    objects: Sequence[StreamObject],
    first: int,
    last: int,
    sinks: Sequence[Sink],
    progress: Callable[[int, int, int], None] | None = None,
) -> tuple[dict[str, str], list[dict]]:
    """Track ``objects`` with ``tracker`` over frames ``first .. last`` and feed every frame to ``sinks``.

    Mask prompts outside the range are added first (they stay, as in Slicer), then the stream
    (:func:`stream_tracking`); frames never added are empty. Then each sink writes its output, in
    the order given (an earlier output stays written when a later one fails).

    Args:
        tracker: a ``sam2s.Tracker``. video: the video's :class:`StreamInfo`. objects:
            :func:`objects_from_prompts`. progress: ``(done, total, frame)`` after each tracked frame.

    Returns:
        ``(written, summary)``: ``{sink.key: path}`` and one row per object ``{"id", "name",
        "frames_present", "frames", "mean_area_px"}``.

    Raises:
        outputs.OutputWriteError: an output (or a temporary labelmap) could not be written;
            ``.written`` lists the outputs written completely; the others keep their old content.
        sam2s.PromptError: a prompt the engine refuses.
    """
    from SAM2SSlicerLib.outputs import OutputWriteError

    written: dict[str, str] = {}
    areas = {o.id: np.zeros(video.frames, dtype=np.int64) for o in objects}
    seen = np.zeros(video.frames, dtype=bool)
    current: Sink | None = None

    def feed(frame: int, masks: dict[int, np.ndarray], tracked: TrackedFrame | None) -> None:
        nonlocal current
        seen[frame] = True
        for object_id, mask in masks.items():
            areas[object_id][frame] = int(np.count_nonzero(mask))
        for sink in sinks:
            current = sink
            sink.add(frame, masks, tracked)

    try:
        with contextlib.ExitStack() as stack:
            for sink in sinks:
                current = sink
                sink.open(stack, video, objects)
            outside: dict[int, dict[int, np.ndarray]] = {}
            for obj in objects:
                for t in obj.mask_frames:
                    if not first <= t <= last:
                        outside.setdefault(t, {})[obj.id] = obj.prompts[t]["mask"]
            for frame, masks in sorted(outside.items()):
                feed(frame, masks, None)
            for tracked in stream_tracking(tracker, objects, first, last, progress):
                feed(tracked.frame_idx, tracked.masks(), tracked)
            missing = [int(t) for t in np.flatnonzero(~seen)]
            for sink in sinks:
                current = sink
                sink.finish(missing)
                written[sink.key] = str(sink.path)
    except OSError as error:
        raise OutputWriteError(current.path, error, [Path(p) for p in written.values()]) from error
    summary = []
    for obj in objects:
        area = areas[obj.id]
        present = area > 0
        summary.append(
            {
                "id": obj.id,
                "name": obj.name,
                "frames_present": int(present.sum()),
                "frames": video.frames,
                "mean_area_px": float(area[present].mean()) if present.any() else 0.0,
            }
        )
    return written, summary
