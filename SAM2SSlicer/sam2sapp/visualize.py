"""Overlays of masklets on frames: blended colours with outlines, an overlay video, a contact sheet.

Frames are ``(H, W, 3)`` uint8 RGB (x right, y down); label images ``(H, W)`` integer with
0 = background and k = object id k.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image, ImageDraw
from sam2s.resources import cpu_flags

# Distinct colours for object ids without a colour of their own (RGB 0..1, Slicer-like palette).
DEFAULT_COLORS = [
    (0.90, 0.80, 0.10),
    (0.85, 0.25, 0.25),
    (0.20, 0.60, 0.95),
    (0.30, 0.80, 0.40),
    (0.75, 0.40, 0.90),
    (0.95, 0.55, 0.15),
    (0.10, 0.80, 0.80),
    (0.90, 0.45, 0.70),
]


def color_for(obj_id: int, colors: Mapping[int, Sequence[float]] | None = None) -> tuple[int, int, int]:
    """RGB 0..255 colour of ``obj_id``: ``colors[obj_id]`` (0..1 floats) or the default palette."""
    c = (colors or {}).get(obj_id) or DEFAULT_COLORS[(obj_id - 1) % len(DEFAULT_COLORS)]
    return tuple(int(round(255 * float(v))) for v in c)


def overlay(
    frame: np.ndarray, labels: np.ndarray, colors: Mapping[int, Sequence[float]] | None = None, alpha: float = 0.45
) -> np.ndarray:
    """Blend each object's colour into ``frame`` (opacity ``alpha``) and draw its outline.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB. labels: ``(H, W)`` integer labels (0 background).
        colors: object id -> RGB floats 0..1. alpha: fill opacity in [0, 1].

    Returns:
        A new ``(H, W, 3)`` uint8 RGB image.

    Raises:
        ValueError: frame and labels differ in size.
    """
    if frame.shape[:2] != labels.shape:
        raise ValueError(f"frame {frame.shape[:2]} and labels {labels.shape} differ in size.")
    out = frame.astype(np.float32)
    for obj_id in (int(v) for v in np.unique(labels) if v != 0):
        m = labels == obj_id
        col = np.array(color_for(obj_id, colors), np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * col
    out = out.clip(0, 255).astype(np.uint8)
    for obj_id in (int(v) for v in np.unique(labels) if v != 0):
        contours, _ = cv2.findContours((labels == obj_id).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, color_for(obj_id, colors), thickness=2)
    return out


_X264_SIMD = (  # x264's name of each SIMD extension (common/cpu.c) and the Linux /proc/cpuinfo flag for it
    ("MMX2", "sse"), ("SSE", "sse"), ("SSE2", "sse2"), ("SSE3", "pni"), ("SSSE3", "ssse3"), ("SSE4.1", "sse4_1"),
    ("SSE4.2", "sse4_2"), ("LZCNT", "abm"), ("AVX", "avx"), ("XOP", "xop"), ("FMA4", "fma4"), ("FMA3", "fma"),
    ("BMI1", "bmi1"), ("BMI2", "bmi2"), ("AVX2", "avx2"),
)  # fmt: skip


def x264_simd() -> str | None:
    """x264's ``asm`` parameter for reproducible files: this CPU's SIMD extensions up to AVX2, on an
    x86 CPU with AVX-512 under Linux; None elsewhere (x264 detects the CPU itself).

    With its AVX-512 code (x264 core 164, on an AMD EPYC with avx512f / avx512bw) the same frames
    gave different files in 1 to 5 of 12 single-threaded encodes in one process; up to AVX2, and
    without assembly, 24 of 24 were identical. The flags come from ``/proc/cpuinfo`` (x264's
    ``asm`` list is not masked by its own detection, so only extensions the CPU has may be named;
    ``sam2s.resources.cpu_flags``).
    """
    flags = cpu_flags()
    if flags is None or "avx512f" not in flags:
        return None
    return ",".join(name for name, flag in _X264_SIMD if flag in flags)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 10.0) -> Path:
    """Encode ``(H, W, 3)`` uint8 RGB frames as H.264 (yuv420p, CRF 20, x264 preset medium) with PyAV
    into ``path`` (container from its suffix: .mp4, .mkv or .mov). Odd widths / heights lose their
    last column / row. Reproducible: the same frames give the same file, byte for byte, on the same
    machine with the same PyAV / x264 build (x264's output depends on the CPU's SIMD extensions).
    Three sources of differences are removed: PyAV's RGB to YUV conversion (libswscale gave
    different pixels for the same frame in some calls; OpenCV's BT.601 limited-range conversion,
    FFmpeg's default, is used instead), x264's threads (one thread), and x264's AVX-512 code
    (:func:`x264_simd`).

    The file is written in place: to replace an existing video safely, write to a temporary name
    and rename it (as ``sam2s track`` does with ``SAM2SSlicerLib.outputs.OutputSet.writeFile``).

    Raises:
        ValueError: no frames. av.FFmpegError / OSError: encoding or writing failed.
    """
    path = Path(path)
    count = 0
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                h, w = frame.shape[:2]
                stream = container.add_stream("libx264", rate=max(1, round(fps)))
                stream.width, stream.height = w - w % 2, h - h % 2  # yuv420p needs even sizes
                stream.pix_fmt = "yuv420p"
                # Reproducible (issue 21: the same frames gave files whose pixels differed by up to
                # 42/255): the colour conversion below; fixed settings; one encoder thread; no AVX-512
                # code in x264 (x264_simd).
                options = {"crf": "20", "preset": "medium", "threads": "1"}
                simd = x264_simd()
                if simd:
                    options["x264-params"] = f"asm={simd}"
                stream.options = options
                stream.codec_context.thread_count = 1
            img = np.ascontiguousarray(frame[: stream.height, : stream.width])
            # RGB to YUV 4:2:0 by OpenCV (BT.601, limited range, as FFmpeg's default), not by PyAV's
            # libswscale, whose conversion of the same frame differed between calls (FFmpeg 8).
            yuv = cv2.cvtColor(img, cv2.COLOR_RGB2YUV_I420)
            for packet in stream.encode(av.VideoFrame.from_ndarray(yuv, format="yuv420p")):
                container.mux(packet)
            count += 1
        if stream is None:
            raise ValueError("write_video got no frames.")
        for packet in stream.encode():
            container.mux(packet)
    return path


def contact_sheet(
    images: Sequence[np.ndarray], captions: Sequence[str] | None = None, columns: int = 4, width: int = 320
) -> Image.Image:
    """Tile ``images`` (each ``(H, W, 3)`` uint8, resized to ``width`` pixels wide) in a grid with
    optional captions; returns a PIL image.

    Raises:
        ValueError: no images.
    """
    if not images:
        raise ValueError("contact_sheet needs at least one image.")
    h0, w0 = images[0].shape[:2]
    tile_h = round(h0 * width / w0)
    rows = -(-len(images) // columns)
    caption_h = 18 if captions else 0
    sheet = Image.new("RGB", (columns * width, rows * (tile_h + caption_h)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for i, img in enumerate(images):
        x, y = (i % columns) * width, (i // columns) * (tile_h + caption_h)
        sheet.paste(Image.fromarray(img).resize((width, tile_h), Image.BILINEAR), (x, y + caption_h))
        if captions:
            draw.text((x + 4, y + 3), captions[i], fill=(235, 235, 235))
    return sheet
