"""Tests of sam2s.frames: frame sources (array, image folder, video file) and SAM 2 preprocessing.

Generated data (small arrays, images and videos written with PIL/PyAV into tmp_path) covers every
source and error; the real clip ``../shared/data/endoscapes_v4`` (skipped when absent, never
copied into the repository) checks real JPEGs, a real H.264 mp4 and the reference preprocessing.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from sam2s.frames import (
    ArrayFrames,
    FrameSource,
    FrameSourceError,
    ImageFolderFrames,
    VideoFileFrames,
    open_frames,
    preprocess,
    sort_frame_names,
)

DATA = Path(__file__).resolve().parents[3] / "shared/data/endoscapes_v4"
needs_data = pytest.mark.skipif(not (DATA / "video.mp4").is_file(), reason=f"{DATA} is absent")

# mp4 (H.264) vs the JPEG frames of endoscapes_v4, mean |difference| per frame in 0..255 units:
# measured 0.74 .. 1.29 (mean 1.04, PSNR >= 42.9 dB); both are lossy encodings of the same frames.
# Neighbouring frames differ by 10.6 .. (median 22.6), so 2.0 still tells frame i from i +- 1.
MP4_VS_JPEG_MEAN_ABS = 2.0
# Generated 64x48 clips re-encoded losslessly-ish: measured <= 1.7 (x264 crf 12), <= 9.4 (mpeg4).
GENERATED_MEAN_ABS = {"mp4": 3.0, "mkv": 3.0, "avi": 12.0}


def moving_square(t: int = 20, h: int = 48, w: int = 64) -> np.ndarray:
    """A (t, h, w, 3) uint8 clip: colour gradients and a white square moving 2 px right per frame."""
    yy, xx = np.mgrid[:h, :w]
    frames = np.empty((t, h, w, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = xx * 3, yy * 4, 60
    for i in range(t):
        frames[i, 10:22, 4 + 2 * i : 16 + 2 * i] = 255
    return frames


def write_video(path: Path, frames: np.ndarray, codec: str = "libx264", options: dict | None = None) -> Path:
    """Encode ``frames`` (T, H, W, 3) uint8 RGB at 10 fps with PyAV; no frames gives an empty video."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=10)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = options or {}
        out.start_encoding()
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def plain_decode(path: Path) -> list[np.ndarray]:
    """All frames of a video, decoded in order by PyAV without seeking: the ground truth."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# --- numpy arrays ---------------------------------------------------------------------------------


def test_array_source_is_zero_copy():
    frames = moving_square()
    source = open_frames(frames)
    assert isinstance(source, ArrayFrames) and open_frames(source) is source
    assert (len(source), source.height, source.width, source.fps) == (20, 48, 64, None)
    assert "(20, 48, 64, 3)" in source.name
    for i in (0, 7, 19):
        frame = source.get(i)
        assert np.shares_memory(frame, frames) and np.array_equal(frame, frames[i])
    assert source.get(np.int64(3)).shape == (48, 64, 3)


def test_array_grey_and_rgba_are_converted():
    rgb = moving_square(t=3)
    for grey in (rgb[..., 1], rgb[..., 1:2]):
        frame = open_frames(grey).get(2)
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
        assert np.array_equal(frame, np.repeat(rgb[2, :, :, 1:2], 3, axis=2))
    rgba = np.concatenate([rgb, np.full((3, 48, 64, 1), 7, np.uint8)], axis=3)
    frame = open_frames(rgba).get(1)
    assert np.array_equal(frame, rgb[1]) and np.shares_memory(frame, rgba)


@pytest.mark.parametrize(
    "array, error, fragment",
    [
        ([[1, 2]], TypeError, "numpy array"),
        (np.zeros((2, 8, 8, 3), np.float32), TypeError, "astype(np.uint8)"),
        (np.zeros((2, 8, 8, 3), np.uint16), TypeError, "scale it to 0..255"),
        (np.zeros((8, 8, 3), np.uint8), ValueError, "array[None]"),
        (np.zeros((2, 8, 8, 2), np.uint8), ValueError, "expected (T, H, W, 3)"),
        (np.zeros((2, 8), np.uint8), ValueError, "expected (T, H, W, 3)"),
        (np.zeros((0, 8, 8, 3), np.uint8), ValueError, "empty"),
    ],
)
def test_array_errors(array, error, fragment):
    with pytest.raises(error) as info:
        open_frames(array) if isinstance(array, np.ndarray) else ArrayFrames(array)
    assert fragment in str(info.value)


def test_index_errors():
    source = open_frames(moving_square(t=5))
    for bad in (5, -1, 100):
        with pytest.raises(IndexError, match=r"out of range 0\.\.4"):
            source.get(bad)
    with pytest.raises(TypeError):
        source.get(1.5)


def test_open_frames_rejects_other_types(tmp_path):
    with pytest.raises(TypeError, match="numpy array, an image folder or a video file"):
        open_frames(42)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_frames(tmp_path / "missing")
    (tmp_path / "clip.gif").write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="unsupported extension '.gif'.*mp4"):
        open_frames(str(tmp_path / "clip.gif"))


# --- image folders --------------------------------------------------------------------------------


def test_sort_frame_names():
    assert sort_frame_names(["10.jpg", "2.jpg", "00001.jpg"]) == ["00001.jpg", "2.jpg", "10.jpg"]
    assert sort_frame_names(["img10.png", "img2.png", "Img1.png"]) == ["Img1.png", "img2.png", "img10.png"]
    assert sort_frame_names(["b.png", "a.png", "1.png"]) == ["1.png", "a.png", "b.png"]


def test_folder_source_order_and_modes(tmp_path):
    rgb = moving_square(t=4)
    Image.fromarray(rgb[0]).save(tmp_path / "10.png")
    Image.fromarray(rgb[1, ..., 0]).save(tmp_path / "2.png")  # mode L
    Image.fromarray(rgb[2]).convert("P").save(tmp_path / "1.png")  # palette
    Image.fromarray(np.dstack([rgb[3], np.full((48, 64), 9, np.uint8)])).save(tmp_path / "3.bmp")  # RGBA
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden.png").write_bytes(b"ignored")
    source = open_frames(tmp_path)
    assert isinstance(source, ImageFolderFrames)
    assert (len(source), source.height, source.width, source.fps) == (4, 48, 64, None)
    expected = [Image.open(tmp_path / n).convert("RGB") for n in ("1.png", "2.png", "3.bmp", "10.png")]
    for i, image in enumerate(expected):
        assert source.get(i).dtype == np.uint8 and np.array_equal(source.get(i), np.asarray(image))
    assert np.array_equal(source.get(1), np.repeat(rgb[1, :, :, :1], 3, axis=2))
    assert np.array_equal(source.get(2), rgb[3]) and np.array_equal(source.get(3), rgb[0])


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderFrames(tmp_path / "missing")
    with pytest.raises(FrameSourceError, match="no images found"):
        open_frames(tmp_path)
    Image.new("RGB", (8, 6)).save(tmp_path / "0.png")
    Image.new("RGB", (8, 7)).save(tmp_path / "1.png")
    with pytest.raises(FrameSourceError, match="differ in size: 8x6 .*8x7"):
        open_frames(tmp_path)
    for name, image in [
        ("a.png", Image.fromarray(np.zeros((6, 8), np.uint16))),  # I;16
        ("b.tif", Image.fromarray(np.zeros((6, 8), np.float32))),  # F
        ("c.tif", Image.fromarray(np.zeros((6, 8), np.int32))),  # I
    ]:
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        image.save(folder / name)
        with pytest.raises(FrameSourceError, match="16-bit, 32-bit or float.*rescale them to 0..255"):
            open_frames(folder)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "00000.jpg").write_text("not an image")
    with pytest.raises(FrameSourceError, match="00000.jpg could not be read"):
        open_frames(broken)


def test_paths_that_are_not_files_or_folders_are_refused_without_opening(tmp_path):
    """A named pipe (opening it would block forever), a device or a socket: FrameSourceError saying
    what it is; a FIFO among the frame images too."""
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    sock_path = tmp_path / "s.mp4"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        for source, what in [
            (fifo, "a named pipe (FIFO)"),
            (str(fifo), "a named pipe (FIFO)"),
            ("/dev/null", "a character device"),
            (sock_path, "a socket"),
        ]:
            for opener in (open_frames, VideoFileFrames, ImageFolderFrames):
                with pytest.raises(FrameSourceError, match=rf"is {re.escape(what)}, not a regular file.*video file"):
                    opener(source)
    finally:
        sock.close()
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(moving_square(t=1)[0]).save(folder / "00000.png")
    os.mkfifo(folder / "00001.png")
    with pytest.raises(FrameSourceError, match=r"frame image .*00001\.png is a named pipe.*remove it"):
        open_frames(folder)


def test_truncated_image_in_the_middle_fails_on_get(tmp_path, monkeypatch):
    """Only headers are read when a folder is opened: a JPEG cut in half opens, and ``get`` raises
    FrameSourceError naming it, even if someone set PIL's LOAD_TRUNCATED_IMAGES (left as it was)."""
    frames = moving_square(t=3)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{i:05d}.jpg", quality=95)
    data = (tmp_path / "00001.jpg").read_bytes()
    (tmp_path / "00001.jpg").write_bytes(data[: len(data) // 2])
    source = open_frames(tmp_path)
    assert len(source) == 3 and source.get(0).shape == (48, 64, 3)
    for flag in (False, True):
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", flag)
        with pytest.raises(FrameSourceError, match=r"00001\.jpg could not be read .*truncated.*replace or remove it"):
            source.get(1)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is flag
    assert source.get(2).shape == (48, 64, 3)


# --- video files ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """The moving square as mp4 / mkv (H.264 with B-frames, a keyframe every 5) and avi (MPEG-4)."""
    folder, frames = tmp_path_factory.mktemp("videos"), moving_square()
    x264 = {"g": "5", "bf": "2", "crf": "12"}
    return {
        "mp4": write_video(folder / "clip.mp4", frames, options=x264),
        "mkv": write_video(folder / "clip.mkv", frames, options=x264),  # no frame count: decoding pass
        "avi": write_video(folder / "clip.avi", frames, "mpeg4", {"g": "5"}),
    }


@pytest.mark.parametrize("ext", ["mp4", "mkv", "avi"])
def test_video_source_matches_plain_decoding(videos, ext):
    truth, frames = plain_decode(videos[ext]), moving_square()
    source = open_frames(videos[ext])
    assert isinstance(source, VideoFileFrames) and source.name == str(videos[ext])
    assert (len(source), source.height, source.width, source.fps) == (20, 48, 64, 10.0)
    for i in (12, 3, 4, 19, 0, 9, 8, 7, 6, 5, 2, 1, 18, 17, 10):  # random, backward, forward
        assert source.get(i).shape == (48, 64, 3) and np.array_equal(source.get(i), truth[i]), i
    for i in range(20):  # each decoded frame is closest to its own source frame
        errors = [mean_abs(source.get(i), frame) for frame in frames]
        assert int(np.argmin(errors)) == i and errors[i] < GENERATED_MEAN_ABS[ext]
    source.close()
    assert np.array_equal(source.get(11), truth[11])  # reopens
    source.close()


def test_video_sequential_access_does_not_seek(videos, monkeypatch):
    starts = []
    decode_from = VideoFileFrames._decode_from
    monkeypatch.setattr(
        VideoFileFrames, "_decode_from", lambda self, i, **k: starts.append(i) or decode_from(self, i, **k)
    )
    source = VideoFileFrames(videos["mp4"], cache_size=4)
    truth = plain_decode(videos["mp4"])
    assert all(np.array_equal(source.get(i), truth[i]) for i in range(20)) and starts == [0]
    assert len(source._cache) == 4
    assert all(np.array_equal(source.get(i), truth[i]) for i in range(19, 15, -1)) and starts == [0]
    assert np.array_equal(source.get(15), truth[15]) and starts == [0, 15]  # keyframe 15


def write_vfr_video(path: Path, frames: np.ndarray, times_ms: list[int]) -> Path:
    """Encode ``frames`` with H.264 at the given presentation times in milliseconds (variable rate)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for frame, ms in zip(frames, times_ms):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts, picture.time_base = ms, Fraction(1, 1000)
            out.mux(stream.encode(picture))
        out.mux(stream.encode())
    return path


@pytest.mark.parametrize("ext", ["mp4", "mkv", "avi"])
def test_video_frame_times_are_the_presentation_times(videos, ext):
    """``frame_times`` of a video file: seconds from the first frame, from the decoded timestamps
    (10 fps clips: i / 10), a new list on each call."""
    source = open_frames(videos[ext])
    times = source.frame_times
    assert times == pytest.approx([i / 10 for i in range(20)], abs=1e-9) and times[0] == 0.0
    times.append(99.0)
    assert len(source.frame_times) == 20
    source.close()


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_variable_frame_rate_times(tmp_path, ext):
    """Frames at 0, 100, 300, 350 and 1000 ms: ``frame_times`` follows the timestamps, not the rate."""
    path = write_vfr_video(tmp_path / f"vfr.{ext}", moving_square(t=5), [0, 100, 300, 350, 1000])
    source = open_frames(path)
    assert source.frame_times == pytest.approx([0.0, 0.1, 0.3, 0.35, 1.0], abs=1e-9)
    source.close()


def test_frame_times_of_arrays_and_folders(tmp_path):
    """No timing for image folders and plain arrays (None); ``i / fps`` for an array given an fps."""
    frames = moving_square(t=4)
    assert open_frames(frames).frame_times is None
    assert ArrayFrames(frames, fps=4.0).frame_times == [0.0, 0.25, 0.5, 0.75]
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{i:05d}.png")
    assert open_frames(tmp_path).frame_times is None


def test_video_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoFileFrames(tmp_path / "missing.mp4")
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is a text file, not a video\n" * 20)
    with pytest.raises(FrameSourceError, match="notes.mp4 could not be decoded.*re-encode"):
        open_frames(fake)
    with pytest.raises(FrameSourceError, match="contains no video frames"):
        open_frames(write_video(tmp_path / "empty.avi", moving_square(t=0), "mpeg4"))


# --- preprocessing --------------------------------------------------------------------------------


def test_preprocess_shape_and_errors():
    x = preprocess(moving_square(t=1)[0], 32)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and x.is_contiguous()
    assert torch.allclose(x[2, 0, 0], torch.tensor((60 / 255 - 0.406) / 0.225))
    for bad in (np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32), [[0]]):
        with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
            preprocess(bad, 32)


# --- the real clip --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jpegs() -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted((DATA / "frames").glob("*.jpg"))]


@pytest.fixture(scope="module")
def mp4_frames() -> list[np.ndarray]:
    return plain_decode(DATA / "video.mp4")


@needs_data
def test_data_folder_source(jpegs):
    source = open_frames(DATA / "frames")
    assert (len(source), source.height, source.width) == (127, 480, 854)
    for i in (0, 1, 63, 126):
        assert np.array_equal(source.get(i), jpegs[i])


@needs_data
def test_data_video_is_close_to_jpegs(jpegs, mp4_frames):
    source = open_frames(str(DATA / "video.mp4"))
    assert (len(source), source.height, source.width, source.fps) == (127, 480, 854, 1.0)
    errors = [mean_abs(source.get(i), jpegs[i]) for i in range(127)]
    assert max(errors) < MP4_VS_JPEG_MEAN_ABS and np.mean(errors) < 1.5
    assert all(np.array_equal(source.get(i), mp4_frames[i]) for i in (0, 1, 126))


@needs_data
def test_data_video_random_access(mp4_frames):
    source = open_frames(DATA / "video.mp4")
    for i in (100, 3, 4, 126, 50, 125, 51, 0, 49):
        assert np.array_equal(source.get(i), mp4_frames[i]), i


@needs_data
@pytest.mark.parametrize("image_size", [512, 1024])
def test_preprocess_matches_reference(tmp_path, image_size):
    misc = pytest.importorskip("sam2.utils.misc")
    for i in range(3):
        shutil.copy(DATA / "frames" / f"{i:05d}.jpg", tmp_path)
    images, height, width = misc.load_video_frames(
        str(tmp_path), image_size, offload_video_to_cpu=True, compute_device=torch.device("cpu")
    )
    source = open_frames(tmp_path)
    assert (height, width) == (source.height, source.width)
    for i in range(3):
        assert torch.equal(preprocess(source.get(i), image_size), images[i])
    assert isinstance(source, FrameSource)
