"""Tools of the fault-injection suite: file snapshots, dropped file capabilities, a small clip, and
a fork server that runs ``sam2s`` commands and kills them at the k-th file-system step.

The fork server (``python faultkit.py serve``) imports the command line once, starts no thread,
and forks one child per command; a child counts the file-system calls the command makes inside
one folder (``os.mkdir / rename / replace / unlink / remove / rmdir``, ``PIL.Image.Image.save``,
``SAM2SSlicerLib.outputs.exchangePaths``, and one step per overlay frame) and sends itself a
signal just before the k-th one. So every stage of writing the outputs can be interrupted, with
real SIGKILL / SIGINT, at a fraction of the cost of a new Python process per case.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


# ------------------------------------------------------------------------------------------ files
def snapshot(root: Path) -> dict[str, tuple]:
    """``{relative path: (kind, sha256 or None, mode)}`` of everything under ``root`` (no links followed)."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if path.is_symlink():
                result[rel] = ("link", os.readlink(path), 0)
            elif path.is_dir():
                result[rel] = ("dir", None, st.st_mode & 0o7777)
            elif path.is_file():
                result[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mode & 0o7777)
            else:
                result[rel] = ("other", None, st.st_mode & 0o7777)
    return result


def changed(before: dict[str, tuple], root: Path) -> list[str]:
    """Paths of ``before`` that are gone or differ now (content, kind or mode)."""
    now = snapshot(root)
    return sorted(p for p, v in before.items() if now.get(p) != v)


def added(before: dict[str, tuple], root: Path) -> list[str]:
    """Paths under ``root`` that did not exist in ``before``."""
    return sorted(set(snapshot(root)) - set(before))


def temporaries(root: Path) -> list[str]:
    """Leftover temporaries of ``SAM2SSlicerLib.outputs`` under ``root``."""
    return sorted(p for p in snapshot(root) if ".sam2s-partial-" in p)


# ------------------------------------------------------------------------------------------ capabilities
class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_DAC_CAPS = (1 << 1) | (1 << 2) | (1 << 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER (linux/capability.h)


@contextlib.contextmanager
def file_permissions_apply():
    """Within the block, file permission bits apply to this thread even when it runs as root.

    Root bypasses them through CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH / CAP_FOWNER; these are
    removed from the thread's *effective* set with ``capset(2)`` and restored afterwards (they stay
    in the permitted set). A non-root user needs nothing. Linux only.
    """
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    saved = data[0].effective
    data[0].effective &= ~_DAC_CAPS
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    try:
        yield
    finally:
        data[0].effective = saved
        libc.capset(ctypes.byref(header), data)


# ------------------------------------------------------------------------------------------ a clip
_BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):  # an environment without these packages
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {names!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
"""


def run_without(packages: list[str], args: list[str], folder: Path) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` in a process where ``packages`` (and their submodules) cannot be imported:
    a ``sitecustomize.py`` written into ``folder`` and put first on ``PYTHONPATH`` installs an import
    blocker (as if the optional extra were not installed). Returns the completed process (text)."""
    (folder / "sitecustomize.py").write_text(_BLOCKER.format(names=set(packages)))
    env = dict(os.environ, PYTHONPATH=str(folder) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)


def moving_square(frames: int = 4, height: int = 32, width: int = 40) -> np.ndarray:
    """``(T, H, W, 3)`` uint8: a bright square moving right one pixel a frame on a textured background."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
    clip = np.repeat(background[None], frames, axis=0)
    for t in range(frames):
        clip[t, 8:20, 8 + t : 20 + t] = (230, 200, 40)
    return clip


def write_clip(folder: Path, frames: int = 4, height: int = 32, width: int = 40) -> tuple[Path, Path]:
    """A PNG frame folder ``folder/frames`` and a prompts file ``folder/prompts.json`` (a box around
    the square on frame 0, id 1). Returns ``(frames folder, prompts file)``."""
    from PIL import Image

    frames_dir = folder / "frames"
    frames_dir.mkdir(parents=True)
    for t, frame in enumerate(moving_square(frames, height, width)):
        Image.fromarray(frame).save(frames_dir / f"{t:05d}.png")
    prompts = folder / "prompts.json"
    prompts.write_text(
        json.dumps({"objects": [{"id": 1, "name": "square", "prompts": [{"frame": 0, "box": [7, 7, 21, 21]}]}]})
    )
    return frames_dir, prompts


# ------------------------------------------------------------------------------------------ fork server
class ForkServer:
    """A ``faultkit.py serve`` subprocess; ``run(argv, ...)`` runs one ``sam2s`` command in a fork."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "SAM2SSlicer"), str(HERE)]))
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        ready = self.process.stdout.readline()
        if ready.strip() != "ready":
            raise RuntimeError(f"fork server did not start: {ready!r}")

    def run(
        self,
        argv: list[str],
        watch: Path,
        kill_at: int = 0,
        signum: int = signal.SIGKILL,
        cwd: Path | None = None,
        rlimit_as_extra: int | None = None,
        timeout: float = 120,
    ) -> dict:
        """Run ``sam2s ARGV`` in a child. ``kill_at`` > 0: send ``signum`` before the k-th step in
        ``watch``. ``rlimit_as_extra``: limit the child's address space to its size plus this many
        bytes. Returns ``{"exit": code or -signal, "steps": steps seen, "stderr": text, "stdout": text}``."""
        request = {
            "argv": argv,
            "watch": str(watch),
            "kill_at": kill_at,
            "signum": int(signum),
            "cwd": str(cwd) if cwd else None,
            "rlimit_as_extra": rlimit_as_extra,
            "timeout": timeout,
        }
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("fork server died")
        return json.loads(line)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        self.process.wait(timeout=30)


def _child(request: dict, report: str) -> None:
    """In the forked child: hook the file-system steps, run the command, exit with its code."""
    import PIL.Image
    import sam2sapp.visualize as visualize
    import SAM2SSlicerLib.outputs as outputs
    from sam2sapp import cli

    watch, kill_at, signum = request["watch"], request["kill_at"], request["signum"]
    steps = [0]

    def step() -> None:
        steps[0] += 1
        with open(report, "w") as f:
            f.write(str(steps[0]))
        if steps[0] == kill_at:
            os.kill(os.getpid(), signum)

    def inside(*paths) -> bool:
        return any(isinstance(p, (str, os.PathLike)) and os.path.abspath(os.fspath(p)).startswith(watch) for p in paths)

    def hook(owner, name, filtered=True):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            if not filtered or inside(*args[:2]):
                step()
            return original(*args, **kwargs)

        setattr(owner, name, wrapper)

    for name in ("mkdir", "rename", "replace", "unlink", "remove", "rmdir"):
        hook(os, name)
    hook(outputs, "exchangePaths")
    hook(visualize, "overlay", filtered=False)
    original_save = PIL.Image.Image.save

    def save(self, fp, *args, **kwargs):
        if inside(fp):
            step()
        return original_save(self, fp, *args, **kwargs)

    PIL.Image.Image.save = save
    if request["cwd"]:
        os.chdir(request["cwd"])
    if request["rlimit_as_extra"] is not None:
        import resource

        with open("/proc/self/status") as f:
            size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        limit = size + int(request["rlimit_as_extra"])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    code = cli.main(request["argv"])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve() -> None:
    """Fork-server loop: one JSON request a line on stdin, one JSON result a line on stdout."""
    import tempfile

    import sam2s.flow  # noqa: F401
    import sam2s.tracker  # noqa: F401 - torch too: a child's address-space limit then leaves room for its work
    import sam2sapp.cli  # noqa: F401
    import sam2sapp.visualize  # noqa: F401
    import SAM2SSlicerLib.headless  # noqa: F401 - imported once, before any fork
    import SAM2SSlicerLib.outputs  # noqa: F401

    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        with tempfile.TemporaryDirectory() as tmp:
            out, err, report = (os.path.join(tmp, n) for n in ("out", "err", "steps"))
            pid = os.fork()
            if pid == 0:
                try:
                    fd_out, fd_err = os.open(out, os.O_WRONLY | os.O_CREAT), os.open(err, os.O_WRONLY | os.O_CREAT)
                    os.dup2(fd_out, 1)
                    os.dup2(fd_err, 2)
                    _child(request, report)
                except BaseException:
                    import traceback

                    traceback.print_exc()
                    sys.stderr.flush()
                finally:
                    os._exit(99)
            status = _wait(pid, request["timeout"])
            read = lambda p: open(p, errors="replace").read() if os.path.exists(p) else ""  # noqa: E731
            steps = read(report)
            result = {
                "exit": os.waitstatus_to_exitcode(status) if status is not None else "timeout",
                "steps": int(steps) if steps else 0,
                "stdout": read(out),
                "stderr": read(err),
            }
        print(json.dumps(result), flush=True)


def _wait(pid: int, timeout: float) -> int | None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    serve()
