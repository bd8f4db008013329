"""Frame sources: lazy, random access to the frames of a video, and SAM 2 frame preprocessing.

A frame is an ``(H, W, 3)`` uint8 RGB numpy array; pixel ``frame[y, x]`` has x to the right and
y down, row 0 at the top. Sources decode one frame at a time, never the whole video at once.
``preprocess`` reproduces Meta's reference video predictor bit for bit (``sam2/utils/misc.py``:
``_load_img_as_tensor`` and ``load_video_frames_from_jpg_images``).

Frames come from a numpy array, a video file or a folder of images; any other kind of path (a
named pipe, a device, a socket) is refused without being opened (opening a FIFO blocks). Images
are decoded strictly: a truncated or damaged image, an unreadable file or folder, and an image
larger than PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) raise
``FrameSourceError`` naming the file; PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is forced off
while sam2s decodes (half images are never accepted silently).

Frame times: ``FrameSource.frame_times`` gives each frame's time in seconds relative to the first
frame (video files: decoded presentation timestamps times the stream's time base), or None for
sources without timing (image folders, arrays without ``fps``). torch is imported only by
``preprocess``.
"""

from __future__ import annotations

import bisect
import operator
import os
import re
import stat
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile

if TYPE_CHECKING:
    import av
    import torch


def _av():
    """PyAV, imported when a video file is first opened (not by importing this module: the Slicer
    extension factory, which tests the module, has no PyAV; frame folders and arrays need none)."""
    import av

    return av


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMG_MEAN = (0.485, 0.456, 0.406)  # ImageNet mean and std, as in the reference
IMG_STD = (0.229, 0.224, 0.225)
# PIL modes with 8-bit samples; ``convert("RGB")`` turns them into RGB, as the reference does.
_8BIT_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
_REENCODE = "re-encode it, e.g. `ffmpeg -i INPUT -c:v libx264 -pix_fmt yuv420p out.mp4`"


class FrameSourceError(ValueError):
    """A frame source that cannot be read: not a file or folder, no frames, undecodable or unreadable
    file, decompression bomb, unsupported pixel format. The message names the path and the fix."""


def _special_kind(path: Path) -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a folder (``"a named
    pipe (FIFO)"``, ``"a character device"``, ``"a block device"``, ``"a socket"``), else None
    (also for a missing path).

    Uses :func:`os.stat` only (follows symbolic links): the path is never opened, since opening
    a FIFO blocks until a writer appears. Raises ``PermissionError`` when a parent folder may
    not be searched.
    """
    try:
        mode = os.stat(path).st_mode
    except PermissionError:
        raise
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _refuse_special(path: Path, image: bool = False) -> None:
    """Raise ``FrameSourceError`` when ``path`` is a named pipe, device or socket (see
    ``_special_kind``), or when it cannot be examined for lack of permission. ``image``: the
    path is a frame image inside a folder (the message says so)."""
    try:
        kind = _special_kind(path)
    except PermissionError as error:
        raise FrameSourceError(
            f"{path} cannot be examined ({error.strerror or error}): a folder above it may not be searched; "
            + _permission_hint(path.parent, "u+rx")
        ) from error
    if kind is not None and image:
        raise FrameSourceError(
            f"frame image {path} is {kind}, not a regular file: it is not read (that could block or never end); "
            "frames must come from a video file or an image folder holding regular image files: remove it or "
            "replace it with the image file"
        )
    if kind is not None:
        raise FrameSourceError(
            f"{path} is {kind}, not a regular file or folder: frames must come from a video file "
            f"({'/'.join(e[1:] for e in VIDEO_EXTENSIONS)}) or an image folder (a folder of frame images); pass such a path "
            "(or a (T, H, W, 3) uint8 numpy array)"
        )


def _permission_hint(path: Path, what: str) -> str:
    return f"check its permissions (e.g. `chmod {what} {path}`) or run as a user who may read it"


class ImageSizeError(ValueError):
    """An image with more pixels than PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``):
    it may be a small file that expands to gigabytes, so it is not decoded."""


@contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """Open an image with PIL for decoding that never accepts a damaged or oversized image.

    Inside the block ``ImageFile.LOAD_TRUNCATED_IMAGES`` is False (a truncated file raises instead
    of giving half an image; the previous value is restored after) and the image's header has
    been checked against PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, 89,478,485
    pixels by default; None disables it), before any pixel is decoded. Used for frames, mask
    prompts and label images.

    Yields:
        The open ``PIL.Image.Image`` (not decoded yet).

    Raises:
        ImageSizeError: more pixels than the limit (the message gives W x H and the limit).
        OSError / SyntaxError / ValueError: PIL cannot read the file (as ``Image.open`` and ``load``).
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked here
            try:
                image = Image.open(path)
            except Image.DecompressionBombError as error:  # over twice the limit: PIL refuses by itself
                raise ImageSizeError(f"{path} is too large to decode ({error}); it was not decoded") from error
            with image:
                w, h = image.size
                limit = Image.MAX_IMAGE_PIXELS
                if limit is not None and w * h > limit:
                    raise ImageSizeError(
                        f"{path} is {w}x{h} pixels ({w * h:,} pixels), more than PIL's decompression-bomb limit "
                        f"PIL.Image.MAX_IMAGE_PIXELS = {limit:,}; it was not decoded"
                    )
                yield image
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


class FrameSource(ABC):
    """Random access to the ``T`` frames of a video: ``get(i)`` for ``0 <= i < T = len(source)``.

    ``height`` and ``width`` are the size of the original frames in pixels, ``name`` describes
    the source (a path, or the shape of an array), ``fps`` is frames per second or ``None``,
    ``frame_times`` the time of each frame in seconds (or ``None``).
    """

    _height: int
    _width: int
    _name: str
    _fps: float | None = None

    @abstractmethod
    def __len__(self) -> int:
        """The number of frames ``T``."""

    @abstractmethod
    def _read(self, index: int) -> np.ndarray:
        """Frame ``index`` (already range-checked) as an ``(H, W, 3)`` uint8 RGB array."""

    def get(self, index: int) -> np.ndarray:
        """Return frame ``index`` as an ``(H, W, 3)`` uint8 RGB array (x right, y down).

        The array may be a view of the caller's array or a cached frame: do not modify it.
        Raises ``IndexError`` naming the valid range ``0..T-1``, ``TypeError`` for a non-integer,
        ``FrameSourceError`` naming the file when the frame cannot be decoded (e.g. a truncated
        JPEG in an image folder).
        """
        index = operator.index(index)
        if not 0 <= index < len(self):
            raise IndexError(f"frame index {index} is out of range 0..{len(self) - 1} for {self.name}")
        return self._read(index)

    @property
    def height(self) -> int:
        """Frame height ``H`` in pixels."""
        return self._height

    @property
    def width(self) -> int:
        """Frame width ``W`` in pixels."""
        return self._width

    @property
    def name(self) -> str:
        """A description of the source: a path, or the shape of an array."""
        return self._name

    @property
    def fps(self) -> float | None:
        """Frames per second, or ``None`` when the source has no frame rate."""
        return self._fps

    @property
    def frame_times(self) -> list[float] | None:
        """Time of each frame in seconds relative to the first frame (``T`` floats, the first 0.0,
        non-decreasing), or ``None`` when the source has no timing.

        This default gives ``i / fps`` for frame ``i`` when ``fps`` is known (arrays opened with an
        ``fps``, custom sources), else ``None`` (image folders, plain arrays). ``VideoFileFrames``
        uses the decoded presentation timestamps instead (variable frame rates are exact).
        Returns a new list on each call.
        """
        fps = self.fps
        if not fps:
            return None
        return [i / float(fps) for i in range(len(self))]

    def close(self) -> None:  # noqa: B027 (optional hook, deliberately not abstract)
        """Release open files (nothing to do for most sources)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, T={len(self)}, H={self.height}, W={self.width})"


class ArrayFrames(FrameSource):
    """Frames of a ``(T, H, W, 3)`` uint8 RGB numpy array, used zero-copy: ``get`` returns views.

    Also accepted: grey ``(T, H, W)`` or ``(T, H, W, 1)`` arrays (``get`` replicates the grey
    value to R, G and B, a copy of one frame) and RGBA ``(T, H, W, 4)`` arrays (alpha is ignored,
    ``get`` returns a view). Raises ``TypeError`` for non-arrays and dtypes other than uint8
    (uint16, float ...: scale to 0..255 and cast to uint8), ``ValueError`` for other shapes.
    """

    def __init__(self, array: np.ndarray, fps: float | None = None) -> None:
        if not isinstance(array, np.ndarray):
            raise TypeError(f"frames must be a numpy array, not {type(array).__name__}; convert with np.asarray")
        shape = array.shape
        if array.ndim == 3 and shape[-1] in (3, 4):
            raise ValueError(f"an array of shape {shape} looks like one (H, W, C) image; pass array[None]")
        if array.ndim not in (3, 4) or (array.ndim == 4 and shape[-1] not in (1, 3, 4)):
            raise ValueError(
                f"frames array has shape {shape}; expected (T, H, W, 3) RGB "
                "(or grey (T, H, W) or (T, H, W, 1), or RGBA (T, H, W, 4))"
            )
        if array.dtype != np.uint8:
            raise TypeError(
                f"frames array has dtype {array.dtype}; expected uint8: scale it to 0..255 and cast, "
                "e.g. (255 * (a - a.min()) / (a.max() - a.min())).round().astype(np.uint8)"
            )
        if min(shape[:3]) == 0:
            raise ValueError(f"frames array of shape {shape} is empty; it needs T, H, W >= 1")
        self._grey = array.ndim == 3 or shape[-1] == 1
        self._array = array if self._grey or shape[-1] == 3 else array[..., :3]
        self._height, self._width, self._fps = shape[1], shape[2], fps
        self._name = f"numpy array {shape} uint8"

    def __len__(self) -> int:
        return self._array.shape[0]

    def _read(self, index: int) -> np.ndarray:
        frame = self._array[index]
        if self._grey:
            return np.repeat(frame.reshape(self._height, self._width, 1), 3, axis=2)
        return frame


def sort_frame_names(names: list[str]) -> list[str]:
    """Sort image file names in frame order.

    By integer stem when every stem is an integer (``00000.jpg``, ``2.png``, ``10.png``), as the
    reference ``load_video_frames_from_jpg_images`` does; otherwise in natural order, where digit
    runs compare as numbers (``img2.png`` before ``img10.png``).
    """
    stems = [Path(n).stem for n in names]
    if all(s.isdigit() for s in stems):
        return [n for _, n in sorted(zip((int(s) for s in stems), names))]
    return sorted(names, key=lambda n: ([int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", n)], n))


def frame_image_names(names: Iterable[str]) -> list[str]:
    """The frame images among the file names of a folder, in frame order: names with an image
    extension (``IMAGE_EXTENSIONS``, any case) that are not hidden (no leading dot), sorted by
    ``sort_frame_names``. ``ImageFolderFrames`` reads exactly these files (and the path-access
    rule of ``sam2s.serving.access`` checks exactly these)."""
    picked = [n for n in names if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS and not n.startswith(".")]
    return sort_frame_names(picked)


class ImageFolderFrames(FrameSource):
    """Frames stored as image files (jpg/jpeg/png/bmp/tif/tiff) in one folder, read with PIL per ``get``.

    Files are ordered by ``sort_frame_names``; hidden files and other extensions are ignored.
    8-bit PIL modes (L, LA, P, RGBA, CMYK ...) are converted with ``Image.convert("RGB")`` as in
    the reference; EXIF orientation is ignored, as in the reference. Opening reads every image's
    header (its size); the pixels are decoded by ``get``. Raises ``FileNotFoundError`` (no folder)
    and ``FrameSourceError`` naming the folder or file (the path is a named pipe, device or socket,
    or an image file is one; the folder or an image cannot be read for lack of permission; no
    images; a truncated, damaged or unreadable image, also later in ``get``; an image above PIL's
    decompression-bomb limit ``PIL.Image.MAX_IMAGE_PIXELS``; images of differing sizes;
    16-bit, 32-bit or float images).
    """

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        _refuse_special(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} does not exist; pass an existing folder")
        try:
            entries = list(folder.iterdir())
        except PermissionError as error:
            raise FrameSourceError(
                f"image folder {folder} cannot be listed ({error.strerror or error}); "
                + _permission_hint(folder, "u+rx")
            ) from error
        except OSError as error:
            raise FrameSourceError(f"image folder {folder} cannot be listed ({error}); check the path") from error
        names = frame_image_names(p.name for p in entries)
        if not names:
            raise FrameSourceError(
                f"no images found in {folder}; it must hold the frames as "
                f"{'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} files, e.g. 00000.jpg, 00001.jpg ..."
            )
        self._paths = [folder / n for n in names]
        self._name = str(folder)
        sizes: dict[tuple[int, int], Path] = {}
        for path in self._paths:
            sizes.setdefault(self._load(path, pixels=False), path)
        if len(sizes) > 1:
            found = ", ".join(f"{w}x{h} ({p.name})" for (w, h), p in sizes.items())
            raise FrameSourceError(f"images in {folder} differ in size: {found}; resize them to one size")
        ((self._width, self._height),) = sizes

    @staticmethod
    def _load(path: Path, pixels: bool = True):
        """The ``(H, W, 3)`` RGB pixels of image ``path``, or only its ``(W, H)`` (header only).

        Raises ``FrameSourceError`` naming the file for an unreadable, truncated or damaged image,
        a decompression bomb (more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels) and 16-bit,
        32-bit or float pixels.
        """
        _refuse_special(path, image=True)  # never open a FIFO (it blocks) or a device
        try:
            with open_image(path) as img:
                if img.mode not in _8BIT_MODES:
                    raise FrameSourceError(
                        f"image {path} has PIL mode {img.mode!r} (16-bit, 32-bit or float pixels); frames "
                        "must be 8-bit: rescale them to 0..255 and save them as 8-bit RGB or grey images"
                    )
                return np.asarray(img.convert("RGB")) if pixels else img.size
        except (FrameSourceError, MemoryError):
            raise
        except PermissionError as error:
            raise FrameSourceError(
                f"image {path} cannot be opened ({error.strerror or error}); " + _permission_hint(path, "a+r")
            ) from error
        except ImageSizeError as error:
            raise FrameSourceError(
                f"image {error}: it may be a decompression bomb (a small file that expands to gigabytes); replace "
                "it with a frame of the video's real size, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
            ) from error
        except Exception as error:  # noqa: BLE001 (PIL raises OSError, SyntaxError, ValueError ... for bad data)
            raise FrameSourceError(
                f"image {path} could not be read ({type(error).__name__}: {error}): the file is damaged or "
                "incomplete (e.g. a truncated download); replace or remove it"
            ) from error

    def __len__(self) -> int:
        return len(self._paths)

    def _read(self, index: int) -> np.ndarray:
        return self._load(self._paths[index])


class VideoFileFrames(FrameSource):
    """Frames of a video file (mp4/avi/mov/mkv/webm/m4v), decoded lazily with PyAV (FFmpeg).

    Frame ``i`` is the ``i``-th frame the decoder outputs (presentation order). Opening indexes
    the frame timestamps: from the packets when their count equals the container's frame count,
    otherwise by one decoding pass. ``get`` seeks to the last keyframe at or before the frame and
    decodes forward, keeping the last ``cache_size`` frames, so forward sequential access decodes
    each frame once (backward access decodes one keyframe interval per ``cache_size`` frames).
    Colours are FFmpeg's ``frame.to_ndarray(format="rgb24")``. Raises ``FileNotFoundError`` (no
    file) and ``FrameSourceError`` (a named pipe, device or socket, refused without opening it;
    undecodable file, no video stream or frames, no timestamps).
    """

    def __init__(self, path: str | Path, cache_size: int = 8) -> None:
        self._path = Path(path)
        _refuse_special(self._path)
        if not self._path.is_file():
            raise FileNotFoundError(f"video file {self._path} does not exist; check the path")
        self._name = str(self._path)
        self._container = None
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = max(1, cache_size)
        self._live: Iterator | None = None  # decoder running forward, at frame self._live_next
        self._live_next = 0
        self._time_base: Fraction | None = None  # of the video stream, set by _open
        try:
            with self._av_errors():
                self._open()
                pts, key_pts = self._index_from_packets() or self._index_from_decoding()
            if not pts:
                raise FrameSourceError(f"video file {self._path} contains no video frames; check it is complete")
            self._pts, self._index_of = pts, {p: i for i, p in enumerate(pts)}
            self._keys = sorted({0} | {self._index_of[p] for p in key_pts if p in self._index_of})
            self._height, self._width = self.get(0).shape[:2]
        except BaseException:
            self.close()
            raise

    @contextmanager
    def _av_errors(self) -> Iterator[None]:
        try:
            yield
        except _av().FFmpegError as error:
            raise FrameSourceError(
                f"video file {self._path} could not be decoded ({error}); check that it plays, or {_REENCODE}"
            ) from error

    @property
    def frame_times(self) -> list[float] | None:
        """Time of each frame in seconds relative to the first: its presentation timestamp (PTS,
        in decoding index order, see the class docstring) minus the first frame's, times the
        video stream's ``time_base`` (exact rational arithmetic, then float). Falls back to
        ``i / fps`` (``FrameSource.frame_times``) when the stream has no time base. Returns a new
        list on each call."""
        if self._time_base is None:
            return super().frame_times
        first, base = Fraction(self._pts[0]), self._time_base
        return [float((Fraction(p) - first) * base) for p in self._pts]

    def _open(self) -> None:
        self.close()
        self._container = _av().open(str(self._path))
        if not self._container.streams.video:
            raise FrameSourceError(f"{self._path} has no video stream (audio only or empty?); pass a video")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        base = self._stream.time_base
        self._time_base = Fraction(base) if base else None
        rate = self._stream.average_rate or self._stream.guessed_rate
        self._fps = float(rate) if rate else None

    def _index_from_packets(self) -> tuple[list[int], set[int]] | None:
        """Sorted packet and keyframe timestamps; None when they may not match the decoded frames."""
        pts, key_pts = [], set()
        if self._stream.frames > 0:
            for packet in self._container.demux(self._stream):
                if packet.size == 0 or packet.is_discard:  # end-of-stream packet, cut by an edit list
                    continue
                if packet.pts is None:
                    return None
                pts.append(packet.pts)
                if packet.is_keyframe:
                    key_pts.add(packet.pts)
        if len(pts) != self._stream.frames or len(set(pts)) != len(pts) or not pts:
            return None
        return sorted(pts), key_pts

    def _index_from_decoding(self) -> tuple[list[int], set[int]]:
        """Timestamps of all decoded frames (one decoding pass) and of the keyframes among them."""
        self._open()
        pts, key_pts = [], set()
        for frame in self._container.decode(self._stream):
            pts.append(frame.pts)
            if frame.key_frame:
                key_pts.add(frame.pts)
        if None in pts or pts != sorted(set(pts)):
            raise FrameSourceError(f"{self._path} has missing or unordered frame timestamps; {_REENCODE}")
        return pts, key_pts

    def _decode_from(self, start: int, seek: bool = True) -> Iterator[tuple[int, av.VideoFrame]]:
        """Yield ``(index, frame)`` for the decoded frames from keyframe index ``start`` on."""
        if seek:
            self._container.seek(self._pts[start], stream=self._stream, backward=True, any_frame=False)
        for frame in self._container.decode(self._stream):
            index = self._index_of.get(frame.pts)
            if index is not None and index >= start:  # skips the leading frames of an open GOP
                yield index, frame

    def _advance(self, index: int) -> bool:
        """Run the live decoder up to frame ``index``, caching the last frames; False if missed."""
        for i, frame in self._live:
            if i < self._live_next:
                continue
            self._live_next = i + 1
            if i > index:
                break
            if i > index - self._cache_size:
                self._cache[i] = np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
                self._cache[i].flags.writeable = False
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            if i == index:
                return True
        self._live = None
        return False

    def __len__(self) -> int:
        return len(self._pts)

    def _read(self, index: int) -> np.ndarray:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        with self._av_errors():
            if self._container is None:
                self._open()
            start = self._keys[bisect.bisect_right(self._keys, index) - 1]
            if self._live is None or not start <= self._live_next <= index:
                self._live, self._live_next = self._decode_from(start), start
            if not self._advance(index):  # the seek went wrong: decode from the beginning
                self._open()
                self._live, self._live_next = self._decode_from(0, seek=False), 0
                if not self._advance(index):
                    raise FrameSourceError(f"frame {index} of {self._path} could not be decoded; {_REENCODE}")
        return self._cache[index]

    def close(self) -> None:
        """Close the video file; a later ``get`` reopens it."""
        self._live = None
        if self._container is not None:
            self._container.close()
            self._container = None


def open_frames(source: FrameSource | np.ndarray | str | Path) -> FrameSource:
    """Open ``source`` as a ``FrameSource``.

    ``source`` is a ``FrameSource`` (returned as is), a ``(T, H, W, 3)`` uint8 RGB numpy array
    (``ArrayFrames``, which also takes grey and RGBA), a folder of images (``ImageFolderFrames``)
    or a video file (``VideoFileFrames``) given as ``str`` or ``pathlib.Path``. Raises
    ``TypeError`` for other types, ``FileNotFoundError`` for a missing path, ``FrameSourceError``
    for a path that is neither a regular file nor a folder (named pipe, device, socket: never
    opened), ``ValueError`` for an unsupported file extension, and the errors of the classes above.
    """
    if isinstance(source, FrameSource):
        return source
    if isinstance(source, np.ndarray):
        return ArrayFrames(source)
    if not isinstance(source, (str, Path)):
        raise TypeError(
            f"cannot read frames from a {type(source).__name__}; pass a (T, H, W, 3) uint8 numpy array, "
            "an image folder or a video file path"
        )
    path = Path(source)
    _refuse_special(path)  # before anything opens it: opening a FIFO blocks forever
    if path.is_dir():
        return ImageFolderFrames(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass an existing image folder or video file")
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise ValueError(
            f"{path} has an unsupported extension {path.suffix!r}; pass a video file "
            f"({'/'.join(e[1:] for e in VIDEO_EXTENSIONS)}) or the folder that holds the frame images"
        )
    return VideoFileFrames(path)


def preprocess(frame: np.ndarray, image_size: int) -> torch.Tensor:
    """Resize and normalise one frame for SAM 2, exactly as Meta's reference video predictor.

    ``frame`` is an ``(H, W, 3)`` uint8 RGB array. Returns a ``(3, image_size, image_size)``
    float32 tensor: PIL ``resize((image_size, image_size))`` with PIL's default (bicubic) filter,
    ignoring the aspect ratio; ``/ 255`` in float64, cast to float32; minus the ImageNet mean and
    divided by its std per channel. Bit-identical to ``inference_state["images"][i]`` from
    ``sam2/utils/misc.py::load_video_frames_from_jpg_images``. Raises ``ValueError`` otherwise.
    """
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        found = f"{frame.shape} {frame.dtype}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"preprocess expects an (H, W, 3) uint8 RGB frame, got {found}")
    import torch  # here, not at module level: frame sources work without torch

    resized = np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize((image_size, image_size)))
    image = torch.from_numpy(np.ascontiguousarray((resized / 255.0).transpose(2, 0, 1))).float()
    mean = torch.tensor(IMG_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMG_STD, dtype=torch.float32)[:, None, None]
    return (image - mean) / std
