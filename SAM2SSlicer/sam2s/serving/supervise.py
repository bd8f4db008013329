"""Supervision of a tracking server started by an application (standard library only, no torch).

Inside 3D Slicer ``sys.executable`` is PythonSlicer, a copy of CTKAppLauncher: it starts the real
interpreter (``python-real``) as its child and forwards no signal (``ctkAppLauncher.cpp`` starts
it with a plain ``QProcess``), so terminating the process one started leaves the server running,
with its model and GPU memory. Two measures, used together by
``SAM2SSlicerLib.backends.LocalServer`` and ``sam2s.serving.server``:

* :func:`popen_options` starts the server in a process group of its own (POSIX
  ``start_new_session``; Windows ``CREATE_NEW_PROCESS_GROUP`` without a console window,
  ``CREATE_NO_WINDOW``), and :func:`kill_tree` ends the whole group: the launcher and the server
  (POSIX ``killpg``, SIGTERM then SIGKILL; Windows ``taskkill /T /F``, as SlicerMONAIAuto3DSeg's
  ``process.py`` kills a process tree).
* The server's ``--parent-pid`` (:func:`watch_parent`): the server ends itself when the process
  that started it is gone, whatever killed it (a crash, SIGKILL), checked every second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["PARENT_CHECK_S", "kill_tree", "popen_options", "process_alive", "watch_parent"]

PARENT_CHECK_S = 1.0
"""Seconds between two checks of the parent process (:func:`watch_parent`)."""


def popen_options() -> dict[str, Any]:
    """``subprocess.Popen`` keyword arguments that start a process in a group of its own (so that
    :func:`kill_tree` reaches its children too) and, on Windows, without a console window (closing
    such a window would kill the server)."""
    if sys.platform == "win32":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000)
        return {"creationflags": flags}
    return {"start_new_session": True}


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (True when unsure, e.g. another user's)."""
    if sys.platform == "win32":
        import ctypes

        kernel = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel.OpenProcess(0x1000, False, int(pid))  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        try:
            code = ctypes.c_ulong()
            return not kernel.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
        finally:
            kernel.CloseHandle(handle)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return not _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """Linux: the process has exited and waits to be reaped (state ``Z`` in ``/proc/PID/stat``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def watch_parent(pid: int, on_gone: Callable[[], None], interval: float = PARENT_CHECK_S) -> threading.Thread:
    """Start a daemon thread that calls ``on_gone()`` once process ``pid`` is no longer alive
    (checked every ``interval`` seconds); returns the thread."""

    def watch() -> None:
        while process_alive(pid):
            time.sleep(interval)
        on_gone()

    thread = threading.Thread(target=watch, name=f"sam2s-parent-{pid}", daemon=True)
    thread.start()
    return thread


def kill_tree(process: subprocess.Popen, timeout: float = 5.0) -> None:
    """End ``process`` (started with :func:`popen_options`) and every process of its group: SIGTERM
    (a graceful shutdown of the server), then SIGKILL after ``timeout`` seconds; the direct child
    is reaped. Windows: ``taskkill /T /F`` of its tree. Safe when it has already exited."""
    if sys.platform == "win32":
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True, check=False)
        process.wait(timeout=timeout)
        return
    group = process.pid  # start_new_session: the process leads its own group
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if process.poll() is not None and not _group_alive(group):
                return
            time.sleep(0.05)
    process.poll()


def _group_alive(group: int) -> bool:
    """Whether a process of group ``group`` still runs (zombies waiting to be reaped do not count
    on Linux, where ``/proc`` tells them apart)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    if not os.path.isdir("/proc"):
        return True
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(fields) > 2 and int(fields[2]) == group and fields[0] != b"Z":
                return True
    return False
