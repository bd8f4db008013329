"""DICOM video input: endoscopic video (encapsulated MPEG-2 / H.264 / HEVC) and multi-frame images.

:func:`openVideo` is what ``sam2s track`` and the module's import open a video with: a DICOM file
(recognised by its content, the ``"DICM"`` prefix at byte 128 of the file, PS3.10 Section 7.1,
whatever its suffix) becomes a :class:`DicomFrames`; anything else goes to the engine's
``sam2s.frames.open_frames``. The engine never imports pydicom: DICOM is the application's
file format (``pyproject.toml``'s import-linter contracts).

Two kinds of DICOM pixel data are read (pydicom, ``pip install -e ".[dicom]"``):

- Video (e.g. Video Endoscopic Image Storage, SOP Class UID 1.2.840.10008.5.1.4.1.1.77.1.1.1):
  the Pixel Data is one encapsulated elementary stream (PS3.5 Sections 8.2.5 - 8.2.8 and A.4.5 -
  A.4.13), split into fragments. The fragments are concatenated and the stream is decoded with
  PyAV from memory (raw ``mpeg2video``, ``h264`` or ``hevc`` demuxer, :data:`VIDEO_TRANSFER_SYNTAXES`).
- Multi-frame images (ultrasound, endoscopy, any SOP class) in a transfer syntax pydicom can decode
  (native, RLE, JPEG ... with the matching plugins installed): decoded one frame at a time
  (``pydicom.pixels.get_decoder(uid).as_array(ds, index=i, raw=True)``; pydicom < 3 decodes all
  frames at once with ``Dataset.pixel_array``).

Every frame is returned as ``(H, W, 3)`` uint8 RGB, x right, y down: RGB as is; YBR_FULL and
YBR_FULL_422 converted with ``pydicom.pixels.convert_color_space`` (PS3.3 Section C.7.6.3.1.2);
PALETTE COLOR through its lookup table (``apply_color_lut``); MONOCHROME2 replicated to R, G and B,
MONOCHROME1 inverted first; samples wider than 8 bits scaled linearly from their stored range
(Bits Stored, Pixel Representation) to 0..255.

Frame rate (frames per second), first tag present and > 0 wins (PS3.3 Section C.7.6.5, Cine Module):

1. Frame Time (0018,1063), ms per frame -> ``1000 / FrameTime``: the nominal interval the Frame
   Increment Pointer (0028,0009) of these IODs normally points to;
2. Cine Rate (0018,0040), frames per second;
3. Recommended Display Frame Rate (0008,2144), frames per second (a display hint).

Frame Time Vector (0018,1065), when it has one entry per frame, gives ``frame_times`` (the first
entry is 0, then the ms since the previous frame) and, without any of the tags above, the mean rate.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from sam2s.extras import install_hint
from sam2s.frames import FrameSource, FrameSourceError, open_frames

__all__ = [
    "DICOM_EXTRA_HINT",
    "VIDEO_ENDOSCOPIC_SOP_CLASS",
    "VIDEO_TRANSFER_SYNTAXES",
    "DicomDependencyError",
    "DicomFrames",
    "isDicomFile",
    "openVideo",
]

DICOM_EXTRA_HINT = install_hint("dicom", '"pydicom>=2.4"')
"""How to install DICOM support (pydicom)."""

VIDEO_ENDOSCOPIC_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
"""Video Endoscopic Image Storage (PS3.4 Annex B.5)."""

VIDEO_TRANSFER_SYNTAXES: dict[str, str] = {
    "1.2.840.10008.1.2.4.100": "mpeg2video",  # MPEG2 Main Profile / Main Level (PS3.5 A.4.5)
    "1.2.840.10008.1.2.4.100.1": "mpeg2video",  # Fragmentable MPEG2 MP@ML
    "1.2.840.10008.1.2.4.101": "mpeg2video",  # MPEG2 Main Profile / High Level (A.4.6)
    "1.2.840.10008.1.2.4.101.1": "mpeg2video",  # Fragmentable MPEG2 MP@HL
    "1.2.840.10008.1.2.4.102": "h264",  # MPEG-4 AVC/H.264 High Profile / Level 4.1 (A.4.7)
    "1.2.840.10008.1.2.4.102.1": "h264",
    "1.2.840.10008.1.2.4.103": "h264",  # MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1
    "1.2.840.10008.1.2.4.103.1": "h264",
    "1.2.840.10008.1.2.4.104": "h264",  # MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video
    "1.2.840.10008.1.2.4.104.1": "h264",
    "1.2.840.10008.1.2.4.105": "h264",  # ... Level 4.2 For 3D Video
    "1.2.840.10008.1.2.4.105.1": "h264",
    "1.2.840.10008.1.2.4.106": "h264",  # MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2
    "1.2.840.10008.1.2.4.106.1": "h264",
    "1.2.840.10008.1.2.4.107": "hevc",  # HEVC/H.265 Main Profile / Level 5.1 (A.4.13)
    "1.2.840.10008.1.2.4.108": "hevc",  # HEVC/H.265 Main 10 Profile / Level 5.1
}
"""Video transfer syntax UID -> the PyAV (FFmpeg) demuxer of its elementary stream (PS3.5 Table A-1)."""


class DicomDependencyError(FrameSourceError):
    """A DICOM file was given but pydicom is not installed; the message says how to install it."""


def isDicomFile(path: str | os.PathLike) -> bool:
    """True when ``path`` is a regular file starting with a DICOM preamble: 128 bytes, then ``b"DICM"``
    (PS3.10 Section 7.1), whatever its name. Never opens anything but a regular file (a FIFO would block)."""
    try:
        if not os.path.isfile(path) or os.path.getsize(path) < 132:
            return False
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def openVideo(source: Any) -> FrameSource:
    """Open a video for tracking or import: a DICOM file as :class:`DicomFrames`, anything else
    (video file, image folder, ``(T, H, W, 3)`` uint8 array, ``FrameSource``) with
    ``sam2s.frames.open_frames``.

    Raises:
        DicomDependencyError: a DICOM file without pydicom installed (before any decoding).
        FrameSourceError, FileNotFoundError, ValueError, TypeError: as ``DicomFrames`` /
            ``open_frames``.
    """
    if isinstance(source, (str, os.PathLike)) and isDicomFile(source):
        return DicomFrames(source)
    return open_frames(source)


def _import_pydicom():
    try:
        import pydicom
    except ImportError as err:
        raise DicomDependencyError(
            f"reading DICOM needs pydicom ({err}); install it with: {DICOM_EXTRA_HINT}"
        ) from None
    return pydicom


def _positive(ds, keyword: str) -> float | None:
    try:
        value = float(ds.get(keyword))
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def dicomFrameRate(ds) -> float | None:
    """Frames per second from a pydicom ``Dataset`` (precedence in the module docstring), or None."""
    frame_time = _positive(ds, "FrameTime")
    if frame_time:
        return 1000.0 / frame_time
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _positive(ds, keyword)
        if rate:
            return rate
    return None


class DicomFrames(FrameSource):
    """The frames of a DICOM file: an encapsulated video stream or multi-frame pixel data.

    ``get(i)`` returns ``(H, W, 3)`` uint8 RGB (conversions in the module docstring). ``len`` is
    the number of frames: the decoded pictures of a video stream (Number of Frames (0028,0008) may
    differ slightly in real files; the stream is what is shown), Number of Frames otherwise.
    ``fps`` and ``frame_times`` come from the tags (module docstring). A video stream is decoded
    sequentially (a raw elementary stream has no index to seek in): reading frames in order is
    cheap, going back restarts decoding from the first frame; the last ``cache_size`` frames are kept.

    Args:
        path: the DICOM file.
        cache_size: decoded frames kept in memory.

    Raises:
        DicomDependencyError: pydicom is not installed.
        FrameSourceError: not readable as DICOM, no Pixel Data, a video stream PyAV cannot decode or
            that holds no picture, pixel data pydicom cannot decode (the message names the transfer
            syntax and the missing plugin), or an unsupported photometric interpretation.
    """

    def __init__(self, path: str | os.PathLike, cache_size: int = 8) -> None:
        pydicom = _import_pydicom()
        self._path = Path(path)
        self._name = str(self._path)
        try:
            ds = pydicom.dcmread(self._path)
        except Exception as err:  # noqa: BLE001 - pydicom raises many kinds on a damaged file
            raise FrameSourceError(f"{self._path} cannot be read as DICOM: {err}") from None
        if "PixelData" not in ds:
            raise FrameSourceError(f"{self._path} is a DICOM file without Pixel Data (7FE0,0010): no frames to read.")
        self._ds = ds
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = max(1, int(cache_size))
        meta = getattr(ds, "file_meta", None)
        self.transfer_syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
        self.sop_class = str(ds.get("SOPClassUID", "") or "")
        self._format = VIDEO_TRANSFER_SYNTAXES.get(self.transfer_syntax)
        self._fps = dicomFrameRate(ds)
        self._times = None
        if self._format is not None:
            self._init_video()
        else:
            self._init_images()
        vector = ds.get("FrameTimeVector")
        if vector is not None and len(vector) == len(self):
            times = np.cumsum([float(v) for v in vector]) / 1000.0
            self._times = [float(t - times[0]) for t in times]
            if self._fps is None and len(self) > 1 and self._times[-1] > 0:
                self._fps = (len(self) - 1) / self._times[-1]

    # -------------------------------------------------------------------------- encapsulated video
    def _init_video(self) -> None:
        import av
        from pydicom import encaps

        try:
            if hasattr(encaps, "generate_frames"):  # pydicom >= 3: one "frame" = the whole stream
                chunks = encaps.generate_frames(self._ds.PixelData, number_of_frames=1)
            else:  # pydicom 2.x
                chunks = encaps.generate_pixel_data_frame(self._ds.PixelData, 1)
            self._stream = b"".join(chunks)
        except Exception as err:  # noqa: BLE001
            raise FrameSourceError(f"{self._path}: the encapsulated Pixel Data cannot be read: {err}") from None
        self._decoder = None
        self._next = 0
        try:
            with av.open(io.BytesIO(self._stream), format=self._format) as container:
                count = sum(1 for _ in container.decode(video=0))
        except (av.FFmpegError, ValueError, IndexError) as err:
            raise FrameSourceError(
                f"{self._path}: the {self._format} stream of transfer syntax {self.transfer_syntax} cannot be "
                f"decoded by PyAV: {err}"
            ) from None
        if count == 0:
            raise FrameSourceError(f"{self._path}: the {self._format} stream holds no picture.")
        self._count = count
        first = self._decode(0)
        self._height, self._width = first.shape[:2]

    def _restart(self) -> None:
        import av

        self._close_decoder()
        container = av.open(io.BytesIO(self._stream), format=self._format)
        self._decoder = (container, container.decode(video=0))
        self._next = 0

    def _decode(self, index: int) -> np.ndarray:
        if self._decoder is None or index < self._next:
            self._restart()
        _, frames = self._decoder
        while self._next <= index:
            try:
                frame = next(frames)
            except StopIteration:
                raise FrameSourceError(f"{self._path}: the video stream ended before frame {index}.") from None
            rgb = frame.to_ndarray(format="rgb24")
            self._remember(self._next, rgb)
            self._next += 1
        return self._cache[index]

    # ------------------------------------------------------------------------ multi-frame pixels
    def _init_images(self) -> None:
        ds = self._ds
        self._count = int(ds.get("NumberOfFrames", 1) or 1)
        self._height, self._width = int(ds.Rows), int(ds.Columns)
        self._photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        supported = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR")
        if self._photometric not in supported and not self._photometric.startswith(("YBR_ICT", "YBR_RCT")):
            raise FrameSourceError(
                f"{self._path}: photometric interpretation {self._photometric} is not supported "
                f"(supported: {', '.join(supported)}, and JPEG 2000's YBR_ICT / YBR_RCT)."
            )
        self._all = None
        try:
            from pydicom.pixels import get_decoder

            self._decoder_of_images = get_decoder(self.transfer_syntax)
        except ImportError:  # pydicom 2.x: Dataset.pixel_array (all frames at once, on first use)
            self._decoder_of_images = None
        except Exception as err:  # noqa: BLE001 - NotImplementedError / ValueError for unknown syntaxes
            raise FrameSourceError(
                f"{self._path}: pydicom cannot decode transfer syntax {self.transfer_syntax}: {err}"
            ) from None
        if self._decoder_of_images is not None and not self._decoder_of_images.is_available:
            missing = getattr(self._decoder_of_images, "missing_dependencies", [])
            raise FrameSourceError(
                f"{self._path}: pydicom has no working plugin to decode transfer syntax {self.transfer_syntax}"
                + (f" ({'; '.join(missing)})" if missing else "")
                + "; install one (https://pydicom.github.io/pydicom/stable/guides/plugin_table.html) or convert "
                "the file to an uncompressed transfer syntax."
            )
        self._read_image(0)  # decoding errors now, not in the middle of tracking

    def _read_image(self, index: int) -> np.ndarray:
        ds = self._ds
        try:
            if self._decoder_of_images is not None:
                arr, meta = self._decoder_of_images.as_array(ds, index=index, raw=True)
                photometric = str(meta.get("photometric_interpretation", self._photometric)).upper()
            else:
                if self._all is None:
                    self._all = ds.pixel_array
                arr = self._all[index] if self._count > 1 else self._all
                photometric = self._photometric
        except Exception as err:  # noqa: BLE001 - pydicom / plugin errors on damaged data
            raise FrameSourceError(f"{self._path}: frame {index} cannot be decoded: {err}") from None
        return self._to_rgb(np.asarray(arr), photometric)

    def _to_rgb(self, arr: np.ndarray, photometric: str) -> np.ndarray:
        from pydicom.pixels import apply_color_lut, convert_color_space

        ds = self._ds
        if photometric in ("YBR_FULL", "YBR_FULL_422"):
            arr = convert_color_space(arr, photometric, "RGB")
        elif photometric == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
            arr = arr if arr.dtype == np.uint8 else (arr.astype(np.float64) / 257.0).round()
        if arr.dtype != np.uint8:
            bits = int(ds.get("BitsStored", 8) or 8)
            if arr.dtype.kind == "f" and photometric == "PALETTE COLOR":
                pass
            elif int(ds.get("PixelRepresentation", 0) or 0) == 1:  # signed: shift to 0..2**bits-1
                arr = arr.astype(np.float64) + 2 ** (bits - 1)
                arr = arr * (255.0 / (2**bits - 1))
            else:
                arr = arr.astype(np.float64) * (255.0 / (2**bits - 1))
            arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        if arr.ndim == 2:
            if photometric == "MONOCHROME1":
                arr = 255 - arr
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        elif arr.ndim == 3 and arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        if arr.shape != (self._height, self._width, 3):
            raise FrameSourceError(
                f"{self._path}: a decoded frame has shape {arr.shape}; expected ({self._height}, {self._width}, 3)."
            )
        return np.ascontiguousarray(arr)

    # ------------------------------------------------------------------------------- FrameSource
    def _remember(self, index: int, frame: np.ndarray) -> None:
        self._cache[index] = frame
        self._cache.move_to_end(index)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def __len__(self) -> int:
        return self._count

    def _read(self, index: int) -> np.ndarray:
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        if self._format is not None:
            return self._decode(index)
        frame = self._read_image(index)
        self._remember(index, frame)
        return frame

    @property
    def frame_times(self) -> list[float] | None:
        """Seconds from the first frame: the Frame Time Vector when it has one entry per frame, else
        ``i / fps`` (``None`` without a frame rate)."""
        if self._times is not None:
            return list(self._times)
        return super().frame_times

    def _close_decoder(self) -> None:
        if getattr(self, "_decoder", None) is not None:
            self._decoder[0].close()
            self._decoder = None

    def close(self) -> None:
        """Close the video decoder and drop the cached frames (the source can still be read)."""
        self._close_decoder()
        self._cache.clear()
