"""Where the tracking engine runs: in this process, in a local server process, or on a remote server.

Inside 3D Slicer, Python threads barely run (PythonQt holds the GIL while Qt's event loop idles),
so the module never runs the engine in Slicer's process: it talks to a tracking server
(``sam2s.serving.server``, FastAPI + uvicorn) and a QTimer polls it without blocking. Three backends give
``SAM2STrackingLogic`` its engine sessions, each a ``sam2s.Tracker`` (the server ones a
``sam2s.serving.client.RemoteSession``, whose ``run`` stream the GUI polls with ``ready()``):

* :class:`InProcessBackend` -- ``sam2s.VideoTracker`` / ``sam2s.flow.FlowTracker`` in this process
  (command line, tests, scripts).
* :class:`ServerBackend` without a URL -- a :class:`LocalServer`: ``python -m sam2s.serving.server`` started
  with Slicer's own Python (``PythonSlicer``, as SlicerTotalSegmentator runs its model) on
  127.0.0.1, a free port and a random token; restarted on the next action if it died, stopped by
  :meth:`ServerBackend.close` (the module calls it when Slicer quits). Frames reach it without
  HTTP: it opens the source video itself when the volume holds its frames unchanged, otherwise
  it maps a shared-memory copy of the volume.
* :class:`ServerBackend` with a URL and a token -- a remote server (e.g. a lab GPU machine): the
  frames are uploaded once (with progress); prompts go there and masks come back (bit-packed).

Nothing received from a server is unpickled (``sam2s.serving.protocol`` is a plain binary format).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sam2s.serving import supervise
from sam2s.serving.steps import Steps, drive, run_now

from . import videoimport as _videoimport
from .dicomvideo import isDicomFile

__all__ = [
    "LOCAL_SERVER_NICENESS",
    "InProcessBackend",
    "LocalServer",
    "ServerBackend",
    "ServerStartError",
    "localServerRoots",
]

MODULE_DIR = Path(__file__).resolve().parents[1]
"""The folder that holds the ``sam2s`` and ``SAM2SSlicerLib`` packages (on the server's PYTHONPATH)."""


LOCAL_SERVER_NICENESS = 19
"""Niceness added to the local tracking server (``LocalServer``; ``sam2s web --tracking-niceness``):
the lowest CPU priority, so that the user interface answers first while the server tracks on the
same cores; it still gets every cycle the interface leaves. Measured in the web app's browser test
on 2 cores: frame changes during a propagation 184-288 ms at +19, 244-365 ms at +10, up to 500 ms
at 0; and ``Testing/Python/test_gui_budget.py`` times the Slicer module's ticks with it."""


class ServerStartError(RuntimeError):
    """The local tracking server could not be started (the message has the end of its log)."""


# ---------------------------------------------------------------------------------------------
# In this process
# ---------------------------------------------------------------------------------------------


class InProcessBackend:
    """The engine in the calling process (no server). ``generation`` is constant."""

    name = "in-process"
    generation = 0

    def createTracker(self, frames: np.ndarray, videoNode, settings, modelProvider: Callable[[], Any]):
        """A ``sam2s.VideoTracker`` (or ``FlowTracker`` for ``settings.engine == "flow"``) over ``frames``
        (``(T, H, W, 3)`` uint8 view of the video volume, not copied); ``modelProvider()`` gives the
        model (``sam2s.spec.ModelSpec.tracker``)."""
        spec = settings.toSpec()
        return spec.tracker(frames, modelProvider() if spec.engine == "sam2" else None)

    def createTrackerSteps(self, frames: np.ndarray, videoNode, settings, modelProvider, cancel=None) -> Steps:
        """:meth:`createTracker` as steps (``sam2s.serving.steps``): in this process nothing is
        waited for (the model loads at once)."""
        return (yield from run_now(self.createTracker(frames, videoNode, settings, modelProvider)))

    def close(self) -> None:
        """Nothing to release."""


# ---------------------------------------------------------------------------------------------
# A local server process
# ---------------------------------------------------------------------------------------------


def localServerRoots() -> list[str]:
    """The folders the local tracking server may read: this user's files, i.e. every file system
    root. POSIX: ``/``. Windows: every drive that exists (``os.listdrives``, Python >= 3.12, else
    the letters A-Z whose root exists), mapped network drives included, so that a video on D: or
    on a mapped share is opened by the server itself (N3; before, only the current drive's root was
    allowed). A share named by UNC path (``\\\\server\\share``) is no root here: such a video
    goes to the server through shared memory (``ServerBackend``: a path is sent only when it lies
    under these roots)."""
    if os.name != "nt":
        return [os.path.abspath(os.sep)]
    listdrives = getattr(os, "listdrives", None)
    if listdrives is not None:
        return list(listdrives())
    return [f"{letter}:\\" for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if os.path.exists(f"{letter}:\\")]


def pythonForServer() -> str:
    """The Python to run the local server with: ``PythonSlicer`` next to Slicer's executable when
    this runs inside Slicer (the launcher sets up Slicer's Python environment), else this Python."""
    executable = Path(sys.executable)
    if "slicer" in executable.name.lower() and "python" not in executable.name.lower():
        for candidate in (executable.with_name("PythonSlicer"), executable.with_name("PythonSlicer.exe")):
            if candidate.is_file():
                return str(candidate)
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


class LocalServer:
    """A ``sam2s.serving.server`` process on 127.0.0.1 for this application only.

    It listens on a free port with a random token (given through the environment, never on the
    command line), may read any path of this user under ``roots`` (default
    :func:`localServerRoots`: every drive), and
    is started on demand by :meth:`ensureRunning`, which also restarts it when it died. It runs in
    a process group of its own, without a console window on Windows; :meth:`stop` ends the whole
    group (the launcher and the server), and the server ends itself when this process is gone
    (``--parent-pid``), so no server outlives the application (``sam2s.serving.supervise``).

    Args:
        python: the interpreter (default :func:`pythonForServer`).
        startTimeout: seconds to wait for the server to listen (it imports PyTorch first).
        extraArgs: more ``sam2s.serving.server`` options (e.g. ``["--idle-timeout", "600"]``).
        niceness: added to the server's scheduling niceness (POSIX ``setpriority``; 0: unchanged;
            default ``LOCAL_SERVER_NICENESS``), so that a user interface sharing the CPU answers
            first while the server tracks (the server still gets every cycle it leaves).
        roots: the folders the server may read files under (its ``--allow-path`` options; default
            :func:`localServerRoots`). ``ServerBackend`` sends a video's path only when it lies
            under them; other videos go through shared memory.
    """

    def __init__(
        self,
        python: str | None = None,
        startTimeout: float = 180.0,
        extraArgs: Sequence[str] = (),
        niceness: int = LOCAL_SERVER_NICENESS,
        roots: Sequence[str] | None = None,
    ) -> None:
        self.roots = list(roots) if roots is not None else localServerRoots()
        self.python = python or pythonForServer()
        self.niceness = int(niceness)
        self.startTimeout = float(startTimeout)
        self.extraArgs = list(extraArgs)
        self.process: subprocess.Popen | None = None
        self.url: str | None = None
        self.token: str | None = None
        self.starts = 0
        self.workFolder: Path | None = None  # the running server's ready file and log; removed by stop()
        self._log: Any = None

    def isRunning(self) -> bool:
        """True while the server process lives."""
        return self.process is not None and self.process.poll() is None

    def ensureRunning(self) -> tuple[str, str]:
        """``(url, token)`` of the running server, starting it first if needed (blocking: a
        GUI uses :meth:`ensureRunningSteps`).

        Raises:
            ServerStartError: it exited or did not listen within ``startTimeout`` (with its log's end).
        """
        return drive(self.ensureRunningSteps())

    def ensureRunningSteps(self) -> Steps:
        """:meth:`ensureRunning` as steps (``sam2s.serving.steps``): the process is started (a
        ``Popen``: milliseconds) and its ready file is looked at once per step until it listens,
        so a GUI timer goes on while PyTorch imports in the server. Not thread-safe: one caller."""
        if not self.isRunning():
            ready = self._launch()
            deadline = time.monotonic() + self.startTimeout
            while time.monotonic() < deadline:
                line = ready.read_text().strip() if ready.is_file() else ""
                if line:
                    self.url = line.splitlines()[0].rsplit(" ", 1)[-1]
                    self.starts += 1
                    break
                if self.process.poll() is not None:
                    self._failed()
                yield None
            else:
                self._failed()
        return self.url, self.token

    def _launch(self) -> Path:
        """Start the server process (see the class docstring); returns its ready file's path."""
        self.stop()
        self.token = secrets.token_urlsafe(32)
        folder = self.workFolder = Path(tempfile.mkdtemp(prefix="sam2s-server-"))
        self._log = open(folder / "server.log", "w+b")  # noqa: SIM115 - kept open for the process's life
        atexit.register(self.stop)  # one hook while a server runs; stop() removes it
        env = dict(os.environ, SAM2S_SERVER_TOKEN=self.token, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join([str(MODULE_DIR)] + [p for p in [env.get("PYTHONPATH")] if p])
        command = [self.python, "-m", "sam2s.serving.server", "--host", "127.0.0.1", "--port", "0"]
        command += ["--ready-file", str(folder / "ready")]
        for root in self.roots:
            command += ["--allow-path", root]
        command += self.extraArgs
        command += ["--parent-pid", str(os.getpid())]  # it stops itself when this application ends
        self.process = subprocess.Popen(
            command, env=env, stdout=self._log, stderr=subprocess.STDOUT, **supervise.popen_options()
        )
        if self.niceness and hasattr(os, "setpriority"):
            # Before the interpreter starts its threads (they inherit it); failures only lose the priority.
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, self.process.pid, os.getpriority(os.PRIO_PROCESS, 0) + self.niceness)
        return folder / "ready"

    def _failed(self) -> None:
        """Stop the server that did not start and raise ``ServerStartError`` with its log's end."""
        tail = self.logTail()
        self.stop()
        raise ServerStartError(
            f"The local tracking server did not start ({self.python} -m sam2s.serving.server): {tail or 'no output'}. "
            "Check that PyTorch, FastAPI and uvicorn are installed in that Python (the module installs them)."
        )

    def logTail(self, lines: int = 20) -> str:
        """The last lines the server printed (for error messages)."""
        if self._log is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self._log.flush()
            self._log.seek(0)
            return "\n".join(self._log.read().decode("utf-8", "replace").strip().splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """End the server and every process it runs in (a launcher such as PythonSlicer, which
        forwards no signal, and the real interpreter): SIGTERM to the whole process group, then
        SIGKILL after 5 s (``sam2s.serving.supervise.kill_tree``); then close its log, remove its
        work folder (``workFolder``: ready file and log) and its ``atexit`` hook. Safe to call twice."""
        process, self.process = self.process, None
        if process is not None:
            supervise.kill_tree(process)
        atexit.unregister(self.stop)
        log, self._log = self._log, None
        if log is not None:
            log.close()
        folder, self.workFolder = self.workFolder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# A server (local or remote)
# ---------------------------------------------------------------------------------------------


class ServerBackend:
    """Engine sessions in a tracking server: a :class:`LocalServer` (``url`` None) or a remote one.

    Args:
        url: ``http(s)://host:port`` of a running ``sam2s serve``; None starts a local server.
        token: the remote server's token (at least 32 characters for a non-loopback server).
        localServer: the :class:`LocalServer` to use (default: a new one, started on demand).
        uploadProgress: ``(sentBytes, totalBytes)`` during a frame upload to a remote server.
        timeout: seconds an HTTP request may take (prompts compute a mask in the server).

    ``generation`` changes whenever the local server was (re)started, so that the logic makes new
    sessions (the old ones died with the server).
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        localServer: LocalServer | None = None,
        uploadProgress: Callable[[int, int], None] | None = None,
        timeout: float = 600.0,
    ) -> None:
        if url is not None and not token:
            raise ValueError("A remote tracking server needs its token: enter the token printed by `sam2s serve`.")
        self.url, self.token = url, token
        self.localServer = localServer if url is None else None
        if url is None and self.localServer is None:
            self.localServer = LocalServer()
        self.uploadProgress = uploadProgress
        self.timeout = float(timeout)
        self.serverInfo: dict | None = None  # the server's GET /version, from client()
        self._client = None  # the Client of the current server (kept while it is the same)
        self.name = "local server" if url is None else url

    @property
    def generation(self) -> int:
        return self.localServer.starts if self.localServer is not None else 0

    def client(self):
        """A ``sam2s.serving.client.Client`` for the server (starting the local one if needed); checks the
        protocol version (``ProtocolMismatchError`` names both versions)."""
        return drive(self.clientSteps())

    def clientSteps(self) -> Steps:
        """:meth:`client` as steps (``sam2s.serving.steps``). The client is kept while the server
        stays the same (its kept-alive connection serves every request: one TLS handshake)."""
        from sam2s.serving.client import Client

        if self.localServer is not None:
            url, token = yield from self.localServer.ensureRunningSteps()
        else:
            url, token = self.url, self.token
        client = self._client
        if client is None or (client.url, client.token) != (url.rstrip("/"), token):
            if client is not None:
                client.close()
            client = self._client = Client(url, token, timeout=self.timeout)
            self.serverInfo = yield from client.version_steps()
        return client

    def createTracker(self, frames: np.ndarray, videoNode, settings, modelProvider=None):
        """A server session over the video volume's frames (``(T, H, W, 3)`` uint8), for ``settings``
        (engine, model config, checkpoint path on the server or empty for its cache, image size,
        device, memory policy). ``modelProvider`` is not used: the server builds the model."""
        return drive(self.createTrackerSteps(frames, videoNode, settings, modelProvider))

    def createTrackerSteps(self, frames: np.ndarray, videoNode, settings, modelProvider=None, cancel=None) -> Steps:
        """:meth:`createTracker` as steps (``sam2s.serving.steps``): the local server's start, the
        frames (a shared-memory copy, chunk by chunk; or an upload to a remote server, one chunk
        request per step, stopped when ``cancel()`` is True) and the model load in the server
        each give the caller its turn, so that a GUI timer never waits for them."""
        from sam2s.serving.client import create_shared_frames_steps

        client = yield from self.clientSteps()
        release = None
        if self.localServer is not None:
            spec = _sourceFileSpec(videoNode, frames, self.localServer.roots)
            if spec is None:
                block, spec = yield from create_shared_frames_steps(frames)
                release = _releaser(block)
        else:
            upload = yield from client.upload_frames_steps(frames, progress=self.uploadProgress, cancel=cancel)
            spec = {"upload": upload}
        model = {
            "engine": settings.engine,
            "config": settings.configName,
            "checkpoint": settings.checkpoint or None,
            "image_size": settings.toSpec().input_size,  # resolved here: older servers need a number
            "device": settings.device,
        }
        if "precisions" in (self.serverInfo or {}):  # servers older than the field refuse it
            model["precision"] = getattr(settings, "precision", "auto")
        try:
            session = yield from client.create_session_steps(
                spec, model, memory=settings.memory, memory_params=settings.memoryParams
            )
        except BaseException:
            if release is not None:
                release()
            raise
        session.on_close = release
        return session

    def close(self) -> None:
        """Stop the local server (a remote one keeps running) and close the connections."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
        if self.localServer is not None:
            self.localServer.stop()


def _sourceFileSpec(videoNode, frames: np.ndarray, roots: Sequence[str]) -> dict | None:
    """``{"path": file or folder}`` when the volume holds its source's frames unchanged (every frame,
    no resize), the source is one the server opens itself (a video file of
    ``sam2s.frames.VIDEO_EXTENSIONS`` or an image folder; not a DICOM file, which only this side
    reads: issue 23, N4) and it lies under the server's ``roots`` (``sam2s.serving.access.is_under``,
    the server's own rule: N3), so that the local server decodes the same frames itself; else None
    (the frames then go through shared memory)."""
    from sam2s.frames import VIDEO_EXTENSIONS
    from sam2s.serving.access import is_under, real_roots

    kind = videoNode.GetAttribute(_videoimport.SOURCE_TYPE) if videoNode is not None else None
    source = videoNode.GetAttribute(_videoimport.SOURCE) or "" if videoNode is not None else ""
    if kind == "folder":
        opens = os.path.isdir(source)
    else:
        opens = kind == "video" and Path(source).suffix.lower() in VIDEO_EXTENSIONS and not isDicomFile(source)
    if not opens or not is_under(source, real_roots(roots)):
        return None
    width, height = (int(v) for v in (videoNode.GetAttribute(_videoimport.SOURCE_SIZE) or "0,0").split(","))
    indices = _videoimport.sourceFrameIndices(videoNode)
    sameFrames = indices == list(range(len(indices)))
    if not (source and os.path.exists(source) and sameFrames and (width, height) == (frames.shape[2], frames.shape[1])):
        return None
    return {"path": source, "frame_indices": indices}


def _releaser(block) -> Callable[[], None]:
    """``release()`` of a shared-memory block of frames (``sam2s.serving.client.create_shared_frames``):
    close and unlink it, once the server session that maps it is closed."""

    def release() -> None:
        with contextlib.suppress(FileNotFoundError, BufferError):
            block.close()
            block.unlink()

    return release
