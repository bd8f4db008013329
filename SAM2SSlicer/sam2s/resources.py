"""What this machine can still give a process: available memory (engine side, standard library only).

Used before large allocations, which must be refused with a message instead of failing halfway:
the tracking server's session limits (``sam2s.serving.server``) and the Slicer video import's memory guard
(``SAM2SSlicerLib.videoimport.checkVideoMemory``, which re-exports :func:`available_memory_bytes`
as ``availableMemoryBytes``), with the engine's working memory (:func:`sam2_work_bytes`).
"""

from __future__ import annotations

import functools
import os
import sys

__all__ = [
    "SAM2_BYTES_PER_INPUT_PIXEL",
    "available_memory_bytes",
    "cpu_flags",
    "sam2_work_bytes",
    "virtual_size_bytes",
]

SAM2_BYTES_PER_INPUT_PIXEL = 1024
"""Working memory of a SAM 2 session per pixel of the model's input (``image_size ** 2``), for its
first object (about 1 GiB at 1024 px, 4 GiB at 2048). Measured as the growth of the peak
resident memory (``VmHWM``) over a click and a 6-frame propagation, ``sam2.1_hiera_t`` with
random weights, fp32 on a CPU, 320x240 frames: 105 MiB at 256 px, 310 MiB at 512 px, 999 MiB at
1024 px; a second object added 23, 172 and 461 MiB. A lower bound for the larger configs."""


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags as Linux lists them (the ``flags`` line of ``/proc/cpuinfo``, e.g.
    ``avx2``, ``avx512f``, ``avx512_bf16``, ``amx_bf16``), or None where that file does not exist
    or cannot be read (other systems)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return next((frozenset(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), None)
    except OSError:
        return None


def sam2_work_bytes(image_size: int) -> int:
    """Working memory of a SAM 2 tracking session besides its frames and weights, in bytes:
    ``SAM2_BYTES_PER_INPUT_PIXEL * image_size ** 2`` (1 GiB at 1024 px). A lower bound for one
    object (see the constant); the tracking server's session check and the Slicer-volume path of
    ``sam2s track`` plan with it."""
    return SAM2_BYTES_PER_INPUT_PIXEL * int(image_size) ** 2


def _physical_available_bytes() -> int | None:
    """Physical memory available to new allocations without swapping, in bytes, or None when unknown.

    ``psutil.virtual_memory().available`` when psutil is installed; else ``MemAvailable`` of
    ``/proc/meminfo`` (Linux, kB); else ``os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")``;
    else (Windows) ``GlobalMemoryStatusEx``'s ``ullAvailPhys``.
    """
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil missing or unsupported platform: try the next source
        pass
    available = _proc_bytes("/proc/meminfo", "MemAvailable:")
    if available is not None:
        return available
    try:
        pages, page_size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and page_size > 0:
            return int(pages) * int(page_size)
    except (AttributeError, ValueError, OSError):
        pass
    if sys.platform == "win32":  # GlobalMemoryStatusEx (Win32 API, sysinfoapi.h): ullAvailPhys
        try:
            import ctypes

            class _MemoryStatus(ctypes.Structure):
                _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong)] + [
                    (name, ctypes.c_ulonglong)
                    for name in ("total", "avail", "totalPage", "availPage", "totalVirtual", "availVirtual", "ext")
                ]

            status = _MemoryStatus()
            status.dwLength = ctypes.sizeof(_MemoryStatus)
            if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
                return int(status.avail)
        except Exception:  # noqa: BLE001 - unknown then
            pass
    return None


def _proc_bytes(path: str, key: str) -> int | None:
    """A ``key: <n> kB`` line of a Linux ``/proc`` file in bytes, or None (no such file or line)."""
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            for line in file:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def virtual_size_bytes() -> int | None:
    """The process's current virtual size (``VmSize`` of ``/proc/self/status``) in bytes, or None."""
    return _proc_bytes("/proc/self/status", "VmSize:")


def _address_space_room_bytes() -> int | None:
    """Address space left under the soft ``RLIMIT_AS`` (limit minus the current virtual size), or
    None when no limit is set (or on Windows). Without ``/proc/self/status`` the whole limit counts."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (AttributeError, ValueError, OSError):
        return None
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    return max(0, int(soft) - (virtual_size_bytes() or 0))


def available_memory_bytes() -> int | None:
    """Bytes this process can still allocate: the minimum of the physical memory available
    (psutil, ``/proc/meminfo`` ``MemAvailable`` or ``SC_AVPHYS_PAGES``) and, when a soft
    ``RLIMIT_AS`` is set, the address space left under it (``VmSize`` of ``/proc/self/status``
    subtracted). None when neither can be determined. No safety margin is subtracted here.
    """
    values = [v for v in (_physical_available_bytes(), _address_space_room_bytes()) if v is not None]
    return min(values) if values else None
