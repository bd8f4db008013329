"""A generated video with known ground truth: moving, deforming blobs on a textured background.

Used by the memory benchmark (frames are synthesised on demand, so a 5000-frame video costs no
RAM), by tests that must not depend on licensed data, and by the demo when the real clip is
absent. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import math

import numpy as np
from sam2s.frames import FrameSource


class SyntheticClip(FrameSource):
    """``num_frames`` frames of ``height x width`` RGB with ``num_objects`` moving ellipses.

    Object k (id k + 1) moves on a Lissajous path, rotates and pulsates; its ground-truth mask is
    ``mask(i, k)``. The background is a fixed random texture with a slow global shift (camera
    motion). Frames are uint8 ``(H, W, 3)``, x right, y down.
    """

    def __init__(self, num_frames: int = 60, height: int = 240, width: int = 320, num_objects: int = 2, seed: int = 0):
        if num_frames < 1 or height < 16 or width < 16 or not 1 <= num_objects <= 8:
            raise ValueError("SyntheticClip needs num_frames >= 1, height and width >= 16, 1..8 objects.")
        self._n, self._height, self._width = num_frames, height, width
        self._name, self._fps = f"synthetic clip ({num_frames} frames, {width}x{height})", 25.0
        rng = np.random.default_rng(seed)
        tex = rng.normal(0, 1, (height // 8 + 2, width // 8 + 2, 3))
        tex = np.kron(tex, np.ones((8, 8, 1)))  # blocky texture, cheap and trackable
        self._texture = np.clip(110 + 25 * tex, 0, 255).astype(np.uint8)
        self._colours = rng.uniform(60, 255, (num_objects, 3)).astype(np.uint8)
        self._phase = rng.uniform(0, 2 * math.pi, (num_objects, 3))
        self._yy, self._xx = np.mgrid[0:height, 0:width].astype(np.float32)
        self.num_objects = num_objects

    def __len__(self) -> int:
        return self._n

    def _ellipse(self, i: int, k: int) -> np.ndarray:
        return self._ellipse_coords(i, k)[0]

    def _ellipse_coords(self, i: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mask of object k on frame i and the object-frame coordinates (u, v) of every pixel."""
        h, w = self._height, self._width
        p = self._phase[k]
        t = i / 25.0
        cx = w * (0.5 + 0.3 * math.sin(0.7 * t + p[0]))
        cy = h * (0.5 + 0.3 * math.sin(0.9 * t + p[1]))
        a = min(h, w) * (0.14 + 0.03 * math.sin(1.3 * t + p[2]))
        b = a * 0.6
        th = 0.5 * t + p[2]
        dx, dy = self._xx - cx, self._yy - cy
        u = dx * math.cos(th) + dy * math.sin(th)
        v = -dx * math.sin(th) + dy * math.cos(th)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0, u, v

    def mask(self, index: int, k: int) -> np.ndarray:
        """Ground-truth ``(H, W)`` bool mask of object ``k`` (0-based) on frame ``index``,
        with later objects drawn on top of earlier ones."""
        m = self._ellipse(index, k)
        for j in range(k + 1, self.num_objects):
            m &= ~self._ellipse(index, j)
        return m

    def labels(self, index: int) -> np.ndarray:
        """``(H, W)`` uint8 label image of frame ``index``: 0 background, k + 1 for object k."""
        out = np.zeros((self._height, self._width), np.uint8)
        for k in range(self.num_objects):
            out[self._ellipse(index, k)] = k + 1
        return out

    def _read(self, index: int) -> np.ndarray:
        shift = int(8 * math.sin(index / 40.0)) % 8
        frame = self._texture[shift : shift + self._height, shift : shift + self._width].copy()
        for k in range(self.num_objects):
            m, u, v = self._ellipse_coords(index, k)
            # A pattern fixed to the object (object coordinates), so that it moves with it.
            shade = (0.7 + 0.3 * np.cos(u[m] / 4.0) * np.cos(v[m] / 4.0))[:, None]
            frame[m] = (self._colours[k] * shade).astype(np.uint8)
        return frame
