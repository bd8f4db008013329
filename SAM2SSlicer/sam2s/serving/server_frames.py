"""Frames the tracking server reads for a session besides uploads: ``SelectedFrames`` (some frames
of a server-side video or folder, resized) and ``attach_shared_memory`` (a client's shared-memory
block). No FastAPI: numpy (and OpenCV to resize)."""

from __future__ import annotations

import contextlib
import operator
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from ..frames import FrameSource

__all__ = ["FRAME_CACHE", "SelectedFrames", "attach_shared_memory"]

FRAME_CACHE = 4
"""Resized frames a ``SelectedFrames`` keeps (the last used)."""


class SelectedFrames(FrameSource):
    """Some frames of another source, resized: frame ``i`` is ``source.get(indices[i])`` resized to
    ``size`` with OpenCV's ``INTER_AREA`` (as the Slicer import does), decoded lazily.

    Args:
        source: the ``FrameSource`` to select from (closed by ``close``).
        indices: frame indices of ``source`` (any order, repeats allowed), or None for all.
        size: ``(W, H)`` in pixels of the frames, or None to keep the source's size (frames of
            that size are returned unchanged, without resizing).
        cache_size: resized frames kept in memory (the last used).

    Raises:
        ValueError: no frames, an index outside ``0..len(source)-1``, or a size not positive.
        TypeError: a non-integer index or size.
    """

    def __init__(
        self,
        source: FrameSource,
        indices: Sequence[int] | None = None,
        size: tuple[int, int] | None = None,
        cache_size: int = FRAME_CACHE,
    ) -> None:
        n = len(source)
        picked = list(range(n)) if indices is None else [operator.index(i) for i in indices]
        if not picked:
            raise ValueError("frame_indices is empty: select at least one frame")
        bad = [i for i in picked if not 0 <= i < n]
        if bad:
            raise ValueError(f"frame index {bad[0]} is out of range 0..{n - 1} for {source.name}")
        width, height = (source.width, source.height) if size is None else (operator.index(s) for s in size)
        if width <= 0 or height <= 0:
            raise ValueError(f"size must be two positive integers [W, H] in pixels, got {[width, height]}")
        self._source, self._indices = source, picked
        self._width, self._height = int(width), int(height)
        self._resize = (self._width, self._height) != (source.width, source.height)
        self._fps = source.fps if indices is None else None
        what = "all frames" if indices is None else f"{len(picked)} selected frames"
        self._name = f"{source.name} ({what}, {self._width}x{self._height})"
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = max(1, int(cache_size))

    def __len__(self) -> int:
        return len(self._indices)

    def _read(self, index: int) -> np.ndarray:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        frame = self._source.get(self._indices[index])
        if self._resize:
            import cv2

            frame = cv2.resize(np.ascontiguousarray(frame), (self._width, self._height), interpolation=cv2.INTER_AREA)
        frame.flags.writeable = False
        self._cache[index] = frame
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return frame

    def close(self) -> None:
        """Close the underlying source and drop the cached frames."""
        self._cache.clear()
        self._source.close()


def attach_shared_memory(name: str):
    """Attach the existing ``multiprocessing.shared_memory`` block ``name`` without letting this
    process's resource tracker unlink it at exit (the client owns it)."""
    from multiprocessing import resource_tracker, shared_memory

    try:
        return shared_memory.SharedMemory(name=name, track=False)  # Python >= 3.13
    except TypeError:
        shm = shared_memory.SharedMemory(name=name)
        with contextlib.suppress(Exception):
            resource_tracker.unregister(shm._name, "shared_memory")  # noqa: SLF001 (3.8-3.12 register on attach)
        return shm
