"""COCO instance export of the masklets (``sam2s track --coco OUT.json``, the module's Export > COCO).

The file is a COCO *instance segmentation* document with the video extension used by surgical
data sets such as Endoscapes and CholecInstanceSeg:

* ``info``: ``description``, ``version`` (this package's), ``date_created`` (UTC, ISO 8601) and,
  when given, ``provenance`` (``provenance.Provenance.toDict()``: model, checkpoint and prompts
  SHA-256, settings, frames and passes); ``licenses``: ``[]``.
* ``categories``: one per distinct segment name, ``{"id": 1.., "name"}``, in order of the
  objects' ids (two objects with the same name share a category).
* ``videos``: ``[{"id": 1, "name": video stem, "frames": T, "width": W, "height": H, "fps"}]``
  (``fps`` rounded to 6 decimals, or null when unknown).
* ``images``: one per frame ``t`` of the video (0-based), ``{"id": t + 1, "file_name":
  "{t:05d}.png"`` (the name of the frame's label PNG), ``"width", "height", "video_id": 1,
  "frame_id": t}``.
* ``annotations``: one per object and frame where the object has at least one pixel, ordered by
  frame then object id, ``{"id": 1.., "image_id", "category_id", "segmentation": RLE,
  "area", "bbox", "iscrowd": 0, "track_id": object id}``. ``segmentation`` is
  ``{"size": [H, W], "counts": str}``, the compressed RLE of ``pycocotools.mask.encode``
  (column-major, as COCO defines it) with ``counts`` decoded as UTF-8; ``area`` is the pixel
  count (``pycocotools.mask.area``); ``bbox`` is ``[x, y, width, height]`` in pixels, x to
  the right and y down from the image's top-left corner (``pycocotools.mask.toBbox``).

Masks are in the frame's original pixels (``H x W`` of the source video; a video volume the
module imported downscaled is scaled back with nearest-neighbour interpolation). Overlapping
objects: each annotation holds the object's own mask, so pixels may belong to several
annotations of one image -- unlike the label PNGs, where the larger object id wins.

``pycocotools`` is an optional dependency (``pip install -e ".[coco]"``), imported only when a
COCO file is written: :func:`requirePycocotools` says how to install it.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from sam2s.extras import install_hint

from .provenance import Provenance, cocoInfo, nodeProvenance

__all__ = [
    "COCO_INSTALL_HINT",
    "CocoUnavailableError",
    "CocoWriter",
    "requirePycocotools",
    "segmentationCoco",
]

COCO_INSTALL_HINT = install_hint("coco", "pycocotools")
"""The command that installs the optional COCO dependency (``pycocotools``)."""
LABEL_PNG_NAME = "{frame:05d}.png"
"""``file_name`` of each image: the name of the frame's label PNG (``export.exportLabelPngs``'s default)."""


class CocoUnavailableError(ImportError):
    """``pycocotools`` is not installed; the message says how to install it."""


def requirePycocotools():
    """Import and return ``pycocotools.mask``.

    Raises:
        CocoUnavailableError: pycocotools is missing (or broken); the message names
            ``pip install -e ".[coco]"``.
    """
    try:
        from pycocotools import mask
    except ImportError as error:
        raise CocoUnavailableError(
            f"COCO export needs pycocotools, which is not installed ({error}); install it with {COCO_INSTALL_HINT}."
        ) from None
    return mask


class CocoWriter:
    """Collects a video's masks frame by frame as RLE and writes the COCO document.

    Only the RLE strings are kept (not ``T x H x W`` masks), so it serves the streaming path.

    Args:
        objects: ``(object id, name)`` of every object (ids 1..254, distinct).
        videoName: the ``videos[0].name`` (e.g. the video file's stem).
        frames: the number of frames ``T``. height, width: the frame size in pixels.
        fps: frames per second, or None when unknown.
        provenance: what made the masks, written into ``info["provenance"]``; None: not recorded.

    Raises:
        CocoUnavailableError: pycocotools is missing. ValueError: repeated object ids, or
            a non-positive frame count or size.
    """

    def __init__(
        self,
        objects: Sequence[tuple[int, str]],
        videoName: str,
        frames: int,
        height: int,
        width: int,
        fps: float | None = None,
        provenance: Provenance | None = None,
    ) -> None:
        self._mask = requirePycocotools()
        self.provenance = provenance
        ids = [int(i) for i, _ in objects]
        if len(set(ids)) != len(ids):
            raise ValueError(f"COCO export: object ids {ids} repeat; every object needs its own id.")
        if frames < 1 or height < 1 or width < 1:
            raise ValueError(f"COCO export: {frames} frames of {width}x{height} pixels; need at least 1 of 1x1.")
        self.frames, self.height, self.width = int(frames), int(height), int(width)
        self.videoName = str(videoName)
        self.fps = None if not fps else round(float(fps), 6)
        self.categories: list[dict] = []
        self.categoryOf: dict[int, int] = {}
        byName: dict[str, int] = {}
        for objectId, name in sorted(((int(i), str(n)) for i, n in objects), key=lambda o: o[0]):
            if name not in byName:
                byName[name] = len(byName) + 1
                self.categories.append({"id": byName[name], "name": name})
            self.categoryOf[objectId] = byName[name]
        self._rles: dict[int, dict[int, dict]] = {}  # frame -> object id -> RLE (counts as str)

    def addFrame(self, frame: int, masks: Mapping[int, np.ndarray]) -> None:
        """Encode the masks of one frame (replacing earlier masks of the same objects there).

        Args:
            frame: 0-based frame index. masks: ``{object id: (H, W) bool or 0/1 array}``, row-major
                ``[row, column]`` in the frame's pixels; empty masks are skipped.

        Raises:
            ValueError: frame outside ``0 .. T-1``, unknown object id, or a mask of another size.
        """
        if not 0 <= frame < self.frames:
            raise ValueError(f"COCO export: frame {frame} is outside the video's frames 0..{self.frames - 1}.")
        ids, arrays = [], []
        for objectId, mask in masks.items():
            if objectId not in self.categoryOf:
                raise ValueError(f"COCO export: unknown object id {objectId}; known: {sorted(self.categoryOf)}.")
            mask = np.asarray(mask)
            if mask.shape != (self.height, self.width):
                raise ValueError(
                    f"COCO export: the mask of object {objectId} on frame {frame} is {mask.shape}, "
                    f"not the frame's {(self.height, self.width)}."
                )
            if mask.any():
                ids.append(int(objectId))
                arrays.append(mask != 0)
            else:
                self._rles.get(frame, {}).pop(int(objectId), None)
        if not ids:
            return
        stack = np.asfortranarray(np.stack(arrays, axis=-1).astype(np.uint8))  # (H, W, N), column-major
        rles = self._mask.encode(stack)
        slot = self._rles.setdefault(int(frame), {})
        for objectId, rle in zip(ids, rles):
            slot[objectId] = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]}

    def document(self) -> dict:
        """The COCO document (see the module docstring) as a JSON-serialisable dict."""
        images = [
            {
                "id": t + 1,
                "file_name": LABEL_PNG_NAME.format(frame=t),
                "width": self.width,
                "height": self.height,
                "video_id": 1,
                "frame_id": t,
            }
            for t in range(self.frames)
        ]
        annotations = []
        for t in sorted(self._rles):
            slot = self._rles[t]
            ids = sorted(slot)
            rles = [slot[i] for i in ids]
            areas = self._mask.area(rles)
            boxes = self._mask.toBbox(rles)
            for objectId, rle, area, box in zip(ids, rles, areas, boxes):
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": t + 1,
                        "category_id": self.categoryOf[objectId],
                        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("utf-8")},
                        "area": int(area),
                        "bbox": [float(v) for v in box],
                        "iscrowd": 0,
                        "track_id": objectId,
                    }
                )
        return {
            "info": {
                "description": f"SAM2S masklets of {self.videoName}",
                "version": _version(),
                "date_created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                **(cocoInfo(self.provenance) if self.provenance is not None else {}),
            },
            "licenses": [],
            "categories": [dict(c) for c in self.categories],
            "videos": [
                {
                    "id": 1,
                    "name": self.videoName,
                    "frames": self.frames,
                    "width": self.width,
                    "height": self.height,
                    "fps": self.fps,
                }
            ],
            "images": images,
            "annotations": annotations,
        }

    def write(self, path: str | os.PathLike) -> Path:
        """Write the document to ``path`` atomically (``outputs.atomicFile``: an existing file is
        replaced only by a complete one; the caller decides whether it may be replaced).

        Raises:
            OSError: the file cannot be written (the old file, if any, is left as it was).
        """
        from .outputs import atomicFile

        path = Path(path)
        with atomicFile(path) as temp:
            with open(temp, "w", encoding="utf-8") as stream:
                json.dump(self.document(), stream, separators=(",", ":"))
        return path


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("sam2s")
    except metadata.PackageNotFoundError:
        return "unknown"


def segmentationCoco(
    segmentationNode,
    videoNode,
    segmentIds: Iterable[str] | None = None,
    videoName: str | None = None,
    provenance: Provenance | None = None,
) -> CocoWriter:
    """The COCO writer holding the segments of a Slicer segmentation over a video volume.

    Each segment is one object: ``track_id`` = its object id (``segments.assignObjectId``, given
    one when missing), category = its name. Masks are read one segment at a time
    (``segments.readSegmentMask``: ``(T, H, W)`` uint8) and scaled back to the source frame size
    (``SAM2S.SourceSize``) when the volume was imported downscaled.

    Args:
        segmentIds: the segments (default: all). videoName: default the stem of the video's source
            (``SAM2S.Source``), else the volume node's name. provenance: for ``info["provenance"]``
            (default: the segmentation node's, ``provenance.nodeProvenance``; None if it has none).

    Raises:
        CocoUnavailableError: pycocotools is missing. KeyError: unknown segments.
        ValueError: a segment's object id tag is invalid, or all ids are used (``provenance.ProvenanceError``:
            the node's provenance attribute cannot be read).
    """
    from . import segments as _segments
    from . import videoimport as _videoimport

    requirePycocotools()
    segmentation = segmentationNode.GetSegmentation()
    ids = list(segmentIds) if segmentIds is not None else list(segmentation.GetSegmentIDs())
    missing = [s for s in ids if segmentation.GetSegment(s) is None]
    if missing:
        raise KeyError(f"Unknown segments {missing}; the segmentation has {list(segmentation.GetSegmentIDs())}.")
    objectIds = {s: _segments.assignObjectId(segmentationNode, s) for s in ids}
    width, height, frames = videoNode.GetImageData().GetDimensions()
    sourceWidth, sourceHeight = width, height
    sourceSize = (videoNode.GetAttribute(_videoimport.SOURCE_SIZE) or "").split(",")
    if len(sourceSize) == 2 and all(v.strip().isdigit() and int(v) > 0 for v in sourceSize):
        sourceWidth, sourceHeight = int(sourceSize[0]), int(sourceSize[1])
    if videoName is None:
        source = videoNode.GetAttribute(_videoimport.SOURCE) or ""
        videoName = Path(source).stem if source and not source.startswith("sequence:") else videoNode.GetName()
    writer = CocoWriter(
        [(objectIds[s], segmentation.GetSegment(s).GetName()) for s in ids],
        videoName,
        frames,
        sourceHeight,
        sourceWidth,
        _videoimport.frameRate(videoNode),
        provenance if provenance is not None else nodeProvenance(segmentationNode),
    )
    resize = (sourceWidth, sourceHeight) != (width, height)
    for segmentId in ids:
        mask = _segments.readSegmentMask(segmentationNode, segmentId, videoNode)
        for t in np.flatnonzero(mask.reshape(frames, -1).any(axis=1)):
            frameMask = mask[t]
            if resize:
                frameMask = _resizeNearest(frameMask, sourceWidth, sourceHeight)
            writer.addFrame(int(t), {objectIds[segmentId]: frameMask})
    return writer


def _resizeNearest(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((width, height), Image.NEAREST))
