"""Output files and folders that never lose what the user had.

The command line writes every output through one :class:`OutputSet`:

* :meth:`OutputSet.check` runs before any long work. It refuses (``OutputError``, naming the
  path and the fix): an output that is an input (video, frame folder, prompts file, mask PNG);
  two outputs with the same path; a file output inside a folder output; a wrong suffix; a file
  output that is an existing folder (or a folder output that is a file); a missing parent
  folder; a folder it cannot write in (checked by creating and deleting a probe file, so
  read-only mounts and permissions are caught, whoever runs it); an existing output file, or a
  non-empty output folder, unless ``overwrite``. It also finishes or removes what an
  interrupted earlier run left behind (see *Interrupted runs*).
* :func:`atomicFile` yields a temporary path next to the target; when the writer returns, the
  file gets the normal mode for the user's umask (0644 under 022) and replaces the target with
  ``os.replace`` (atomic on POSIX and Windows). On any exception the temporary file is deleted and
  the target is untouched.
* :meth:`OutputSet.writeFolder` yields a staging folder next to the target folder. The writer
  may only create files named by the folder's pattern (e.g. ``00000.png``). Commit:

  - the target folder does not exist: the staging folder is renamed to it (atomic);
  - it holds only files of the pattern (the command's own earlier output): the two folders are
    swapped atomically (Linux ``renameat2(RENAME_EXCHANGE)``), then the old files are deleted;
  - otherwise (other files in it, exchange unavailable, or it holds the current directory):
    a journal. The staging folder records the file names to install and the stale pattern
    files to delete (``manifest.json``), is marked ``COMMITTED`` (an atomic rename), and the
    files are moved in one ``os.replace`` each. Files of other names are never touched.

Interrupted runs. Temporaries are named ``.<target name>.sam2s-partial-<pid>-<token>`` in the
target's folder. A kill (even SIGKILL) leaves the complete old outputs, or the complete new
ones, plus such a hidden temporary; in journal mode a kill during the moves leaves each file
complete (old or new) and the committed journal. The next :meth:`OutputSet.check` on the same
target deletes the temporaries of processes that no longer run and completes committed
journals. An interrupt (Ctrl+C, SIGTERM) cleans up at once.

Concurrent runs. :meth:`OutputSet.check` first takes an exclusive lock per output
(``fcntl.flock`` on ``.<name>.sam2s-lock`` beside it; ``msvcrt.locking`` on Windows), held until
:meth:`OutputSet.release`. A second run on any of the same outputs is refused at once
(``OutputBusyError``, naming the process that holds them), before any work, so two runs never
mix their outputs. The kernel releases the lock of a process that dies, even by SIGKILL: a stale
lock file is taken over by the next run. ``release`` deletes the lock files while still holding
them; a run that opened a lock file just before it was deleted sees that the file it locked is
no longer the one at the path, and tries again.

Paths are compared after ``os.path.realpath`` (symbolic links resolved).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import secrets
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

LOCK_SUFFIX = ".sam2s-lock"
"""Ending of the lock file of an output (``.<name>.sam2s-lock`` in the output's folder)."""
PARTIAL_TAG = ".sam2s-partial-"
"""Part of the name of every temporary file or folder (``.<name>.sam2s-partial-<pid>-<token>``)."""
MANIFEST = "manifest.json"
COMMITTED = "COMMITTED"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.sam2s-partial-(?P<pid>\d+)-(?P<token>[0-9a-f]+)(?P<suffix>.*)$")

__all__ = [
    "COMMITTED",
    "LOCK_SUFFIX",
    "MANIFEST",
    "PARTIAL_TAG",
    "OutputBusyError",
    "OutputError",
    "OutputSet",
    "OutputWriteError",
    "atomicFile",
    "defaultMode",
    "exchangePaths",
    "processRuns",
    "temporaryPath",
]


class OutputError(ValueError):
    """An output path that cannot be used; found before any work, nothing was written."""


class OutputBusyError(OutputError):
    """Another process (still running) is writing one of the outputs; nothing was written."""


class OutputWriteError(OSError):
    """Writing an output failed late (disk full, device removed ...).

    Attributes:
        path: the output that could not be written (left as it was before).
        written: outputs written completely before the failure.

    Raised by callers (the command line) that write several outputs, to report which are complete.
    """

    def __init__(self, path: Path, error: OSError, written: list[Path]) -> None:
        reason = error.strerror or str(error)
        super().__init__(error.errno, f"could not write {path} ({reason})")
        self.path, self.error, self.written = path, error, list(written)


def defaultMode(isFolder: bool = False) -> int:
    """The mode a new file (0o666) or folder (0o777) gets under the process's umask, e.g. 0o644 / 0o755."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if isFolder else 0o666) & ~mask


def exchangePaths(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2`` with ``RENAME_EXCHANGE``, glibc >= 2.28,
    Linux >= 3.15; see ``man 2 rename``).

    Returns:
        True when swapped; False when this system or file system cannot (nothing changed).

    Raises:
        OSError: the swap was refused for another reason (permissions, different file systems).
    """
    if not sys.platform.startswith("linux"):
        return False
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is None:
        return False
    atFdCwd, renameExchange = -100, 2
    if function(atFdCwd, os.fsencode(first), atFdCwd, os.fsencode(second), renameExchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(first))


def temporaryPath(path: str | os.PathLike) -> Path:
    """A new temporary name next to ``path``: ``.<name>.sam2s-partial-<pid>-<token><suffixes>`` (same
    folder, so a rename is atomic; same suffixes, so writers that choose the format by suffix work)."""
    path = Path(path)
    suffix = "".join(path.suffixes) if not path.name.startswith(".") else ""
    return path.parent / f".{path.name}{PARTIAL_TAG}{os.getpid()}-{secrets.token_hex(4)}{suffix}"


@contextlib.contextmanager
def atomicFile(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path (:func:`temporaryPath`) to write ``path``'s new content to.

    When the block ends without an exception, the file gets :func:`defaultMode` and replaces
    ``path`` with ``os.replace`` (atomic on POSIX and Windows; an existing file is replaced).
    On an exception (also KeyboardInterrupt) the temporary file is deleted and ``path`` is
    untouched. A killed process leaves the temporary, which :meth:`OutputSet.check` removes later.

    Raises:
        FileNotFoundError: the block created no file. OSError: chmod or rename failed.
    """
    path = Path(path)
    temp = temporaryPath(path)
    try:
        yield temp
        if not temp.is_file():
            raise FileNotFoundError(errno.ENOENT, "the writer created no file", str(temp))
        os.chmod(temp, defaultMode())
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def unlinkEvenIfInterrupted(path: Path) -> None:
    """Delete ``path``; if an interrupt (Ctrl+C) arrives just then, delete it anyway and re-raise."""
    try:
        os.unlink(path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def processRuns(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (True when unsure, e.g. another user's process):
    temporaries of processes that do not run any more may be removed."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def _inside(path: Path, folder: Path) -> bool:
    return path != folder and folder in path.parents


def _lockPath(path: Path) -> Path:
    return path.parent / f".{path.name}{LOCK_SUFFIX}"


def _tryLock(fd: int) -> bool:
    """Take an exclusive, non-blocking lock on the open file ``fd``; False when another holds it."""
    if sys.platform == "win32":  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


_held: dict[Path, list[int]] = {}  # output -> [lock file descriptor, holders in this process]
_heldGuard = threading.Lock()


def _lockOutput(path: Path, option: str) -> bool:
    """Lock ``path``'s lock file (see the module docstring), or count one more holder when this
    process holds it already (e.g. an export inside a ``sam2s track`` run). False when the folder
    cannot hold a lock file (missing or read-only: :meth:`OutputSet.check` reports that itself).

    Raises:
        OutputBusyError: another running process holds the lock.
    """
    with _heldGuard:
        if path in _held:
            _held[path][1] += 1
            return True
        lock = _lockPath(path)
        for _attempt in range(100):  # another run deleting and re-creating the file each time: give up
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, defaultMode())
            except OSError:
                return False
            if not _tryLock(fd):
                try:
                    holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                finally:
                    os.close(fd)
                raise OutputBusyError(
                    f"{option} {path} is being written by another sam2s run (process {holder}); wait until it has "
                    "finished, or choose other outputs."
                )
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except OSError:
                same = False
            if same:
                with contextlib.suppress(OSError):  # the process id only names the holder (a full disk)
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
                _held[path] = [fd, 1]
                return True
            os.close(fd)  # the holder deleted this file as we opened it: lock the new one
        return False


def _unlockOutput(path: Path) -> None:
    """One holder fewer; the last one deletes the lock file (while it is still locked), then releases it."""
    with _heldGuard:
        entry = _held.get(path)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _held[path]
        with contextlib.suppress(OSError):
            os.unlink(_lockPath(path))
        os.close(entry[0])


@dataclass
class _Target:
    path: Path  # absolute, symbolic links of the parent resolved
    option: str
    isFolder: bool
    suffixes: tuple[str, ...] = ()
    pattern: re.Pattern | None = None
    describe: str = ""


class OutputSet:
    """The outputs of one command, checked together and written safely (see the module docstring).

    Args:
        inputs: the command's input files and folders (video file or frame folder, prompts file,
            mask images); none of them may be an output.
        overwrite: replace existing output files and the pattern files of existing output folders.
        overwriteOption: how messages name the way to allow that (``--overwrite``, ``overwrite=True``).

    Typical use (``sam2s track``)::

        outputs = OutputSet([video, promptsFile], overwrite=False)
        seg = outputs.addFile("out.seg.nrrd", "--output", (".seg.nrrd",))
        labels = outputs.addFolder("labels", "--png-dir", r"\\d{5,}\\.png", "label PNGs (00000.png ...)")
        notes = outputs.check()                 # OutputError before any work
        ...                                     # the long work
        with atomicFile(seg) as tmp:            # write tmp; it replaces seg on success
            ...
        with outputs.writeFolder(labels) as staging:
            ...                                 # write 00000.png ... into staging
    """

    def __init__(
        self, inputs: Iterable[str | os.PathLike], overwrite: bool = False, overwriteOption: str = "--overwrite"
    ) -> None:
        self.inputs = [_real(p) for p in inputs]
        self.overwrite = bool(overwrite)
        self.overwriteOption = overwriteOption
        self.targets: list[_Target] = []
        self.written: list[Path] = []
        self._locked: list[Path] = []

    # ------------------------------------------------------------------ declaring outputs
    def addFile(self, path: str | os.PathLike, option: str, suffixes: Iterable[str]) -> Path:
        """Declare an output file; returns its absolute path. ``suffixes``: accepted endings (any case)."""
        target = _Target(self._absolute(path), option, False, tuple(s.lower() for s in suffixes))
        self.targets.append(target)
        return target.path

    def addFolder(self, path: str | os.PathLike, option: str, pattern: str, describe: str) -> Path:
        """Declare an output folder whose files are all named by the regular expression ``pattern``
        (matched against the whole name); ``describe`` names them in messages. Returns its absolute path."""
        target = _Target(self._absolute(path), option, True, (), re.compile(pattern), describe)
        self.targets.append(target)
        return target.path

    @staticmethod
    def _absolute(path: str | os.PathLike) -> Path:
        absolute = Path(os.path.abspath(os.fspath(path)))
        return _real(absolute.parent) / absolute.name if absolute.name else _real(absolute)

    # ------------------------------------------------------------------ checks
    def check(self) -> list[str]:
        """Lock the outputs (see *Concurrent runs*), check every output (see the module docstring)
        and clean up after interrupted runs. Call :meth:`release` when done (also after an error).

        Returns:
            Notes on what was cleaned up or completed (one line each).

        Raises:
            OutputBusyError: another running process writes one of the outputs.
            OutputError: the first problem found; nothing was written or deleted then, except the
                temporaries of interrupted runs.
        """
        self.lock()
        notes = self.recover()
        for target in self.targets:
            self._checkOne(target)
        self._checkTogether()
        return notes

    def lock(self) -> None:
        """Take the lock of every output not locked yet (in path order), or none of them.

        Raises:
            OutputBusyError: another running process holds one; the locks taken here are released.
        """
        try:
            for target in sorted(self.targets, key=lambda t: str(t.path)):
                if target.path not in self._locked and _lockOutput(target.path, target.option):
                    self._locked.append(target.path)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Release the outputs' locks and delete their lock files (see *Concurrent runs*); idempotent."""
        while self._locked:
            _unlockOutput(self._locked.pop())

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def recover(self) -> list[str]:
        """Clean up after interrupted runs (part of :meth:`check`): delete the temporaries that
        processes which no longer run left for these outputs, and complete committed journals.

        Returns:
            One note per temporary removed or journal completed.
        """
        notes: list[str] = []
        for target in self.targets:
            notes += self._recover(target)
        return notes

    def _checkOne(self, t: _Target) -> None:
        path, option = t.path, t.option
        parent = path.parent
        if not parent.is_dir():
            what = "is not a folder" if parent.exists() else "does not exist"
            raise OutputError(f"{option} {path}: the folder {parent} {what}; create it first or choose another path.")
        if t.isFolder:
            if path.exists() and not path.is_dir():
                raise OutputError(
                    f"{option} {path} is a file, not a folder; give a new folder name for the {t.describe}."
                )
            if path.is_dir():
                entries = self._entries(path)
                if entries and not self.overwrite:
                    shown = ", ".join(entries[:3]) + (" ..." if len(entries) > 3 else "")
                    raise OutputError(
                        f"{option} {path} is not empty ({len(entries)} entries: {shown}). Choose a new or empty "
                        f"folder, or pass {self.overwriteOption} to replace only its {t.describe} (other files stay)."
                    )
                self._probe(path, option)
            self._probe(parent, option)
            return
        if not any(path.name.lower().endswith(s) for s in t.suffixes):
            raise OutputError(f"{option} {path}: the file name must end in {' or '.join(t.suffixes)}.")
        if path.is_dir():
            raise OutputError(f"{option} {path} is an existing folder; give a file name ending in {t.suffixes[0]}.")
        if path.exists() or path.is_symlink():
            if not path.is_file():
                raise OutputError(f"{option} {path} exists and is not a regular file; choose another name.")
            if not self.overwrite:
                raise OutputError(
                    f"{option} {path} already exists; choose another name or pass {self.overwriteOption} to replace it."
                )
        self._probe(parent, option)

    def _checkTogether(self) -> None:
        real = [(t, _real(t.path)) for t in self.targets]
        for i, (t, p) in enumerate(real):
            for inp in self.inputs:
                if p == inp:
                    raise OutputError(f"{t.option} {t.path} is one of the inputs; choose another path for the output.")
                if t.isFolder and inp.parent == p and t.pattern.fullmatch(inp.name):
                    raise OutputError(
                        f"{t.option} {t.path} holds the input {inp}, which its {t.describe} would replace; "
                        "choose another folder."
                    )
            for u, q in real[i + 1 :]:
                if p == q:
                    raise OutputError(f"{t.option} and {u.option} are the same path {t.path}; give each its own.")
                for a, pa, b, pb in ((t, p, u, q), (u, q, t, p)):
                    if a.isFolder and _inside(pb, pa):
                        raise OutputError(
                            f"{b.option} {b.path} lies inside {a.option} {a.path}; keep that folder for the "
                            f"{a.describe} alone and write {b.option} elsewhere."
                        )

    @staticmethod
    def _entries(folder: Path) -> list[str]:
        """Names in ``folder`` other than this module's temporaries, sorted."""
        try:
            return sorted(n for n in os.listdir(folder) if not _TEMP_RE.match(n))
        except OSError as error:
            raise OutputError(
                f"Cannot list the output folder {folder} ({error.strerror}); check its permissions."
            ) from None

    @staticmethod
    def _probe(folder: Path, option: str) -> None:
        """Create and delete a file in ``folder``: the one reliable test that we may write there."""
        probe = folder / f".probe{PARTIAL_TAG}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except OSError as error:
            raise OutputError(
                f"{option}: cannot create files in {folder} ({error.strerror}); choose a folder you can write to."
            ) from None
        try:
            os.close(fd)
        finally:
            unlinkEvenIfInterrupted(probe)

    # ------------------------------------------------------------------ interrupted runs
    def _recover(self, t: _Target) -> list[str]:
        """Remove or complete the temporaries that dead processes left for ``t``."""
        notes = []
        parent = t.path.parent
        for folder in (parent, t.path) if t.isFolder else (parent,):
            with contextlib.suppress(OSError):
                for name in os.listdir(folder):  # write probes of killed runs (empty files)
                    match = _TEMP_RE.match(name)
                    if match and match["name"] == "probe" and not processRuns(int(match["pid"])):
                        (folder / name).unlink()
        try:
            names = os.listdir(parent)
        except OSError:
            return notes
        for name in sorted(names):
            match = _TEMP_RE.match(name)
            if not match or match["name"] != t.path.name or processRuns(int(match["pid"])):
                continue
            temp = parent / name
            if t.isFolder and temp.is_dir():
                if (temp / COMMITTED).is_file() and t.path.is_dir():
                    self._finishJournal(temp, t)
                    notes.append(f"completed the interrupted replacement of {t.path} (process {match['pid']})")
                elif self._removeStaging(temp, t):
                    notes.append(f"removed {temp}, left by an interrupted run (process {match['pid']})")
                else:
                    notes.append(f"left {temp} in place: it holds files this program did not write")
            elif not t.isFolder and temp.is_file() and not temp.is_symlink():
                temp.unlink()
                notes.append(f"removed {temp}, left by an interrupted run (process {match['pid']})")
        return notes

    @staticmethod
    def _removeStaging(staging: Path, t: _Target) -> bool:
        """Delete a staging folder: only pattern files and the journal files; False if others remain."""
        for name in os.listdir(staging):
            if t.pattern.fullmatch(name) or name in (MANIFEST, COMMITTED, COMMITTED + ".tmp") or _TEMP_RE.match(name):
                entry = staging / name
                if entry.is_file() and not entry.is_symlink():
                    entry.unlink()
        try:
            staging.rmdir()
        except OSError:
            return False
        return True

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def writeFolder(self, path: Path, removeStale: bool = True) -> Iterator[Path]:
        """Yield an empty staging folder to write ``path``'s files into (only names of its pattern).

        On success the staging folder becomes ``path`` (see the module docstring for the three
        commit modes); with ``removeStale``, files of the pattern that the writer did not write
        again are removed from ``path`` (the old output set is replaced as a whole), otherwise they
        stay. On an exception the staging folder is deleted and ``path`` keeps its old content.

        Raises:
            OSError: writing or committing failed (e.g. disk full); ``path`` keeps its old content,
                or, if the journal was already committed, it is completed now or by the next check.
            ValueError: the writer created a file whose name does not fit the pattern.
        """
        target = next(t for t in self.targets if t.path == path and t.isFolder)
        staging = temporaryPath(path)
        os.mkdir(staging)  # 0o777 minus the umask: the mode the folder keeps
        committed = False
        try:
            yield staging
            foreign = [n for n in os.listdir(staging) if not target.pattern.fullmatch(n)]
            if foreign:
                raise ValueError(f"internal error: {foreign[:3]} do not fit the names of {target.option}")
            self._commitFolder(staging, target, removeStale)
            committed = True
            self.written.append(path)
        finally:
            if not committed and staging.is_dir():
                if (staging / COMMITTED).exists():  # decided: the new files win (e.g. Ctrl+C during the moves)
                    self._finishJournal(staging, target)
                else:
                    self._removeStaging(staging, target)

    def _commitFolder(self, staging: Path, t: _Target, removeStale: bool) -> None:
        path = t.path
        if not path.exists():
            os.rename(staging, path)
            return
        cwd = _real(os.getcwd())
        new = sorted(os.listdir(staging))
        entries = self._entries(path)
        ownFolder = all(t.pattern.fullmatch(n) and (path / n).is_file() for n in entries)
        if not removeStale:  # the old files stay: only a complete swap keeps them if all are rewritten
            ownFolder = ownFolder and set(entries) <= set(new)
        if ownFolder and not (cwd == _real(path) or _inside(cwd, _real(path))) and exchangePaths(staging, path):
            self._removeStaging(staging, t)  # now the old folder: pattern files only
            return
        stale = sorted(n for n in entries if t.pattern.fullmatch(n) and n not in new) if removeStale else []
        manifest = staging / MANIFEST
        manifest.write_text(json.dumps({"install": new, "remove": stale}), encoding="utf-8")
        marker = staging / (COMMITTED + ".tmp")
        marker.write_text("", encoding="utf-8")
        os.replace(marker, staging / COMMITTED)  # from here on the new outputs win
        self._finishJournal(staging, t)

    @staticmethod
    def _finishJournal(staging: Path, t: _Target) -> None:
        """Move a committed staging folder's files into place and delete the stale ones."""
        plan = json.loads((staging / MANIFEST).read_text(encoding="utf-8")) if (staging / MANIFEST).is_file() else {}
        plan = {"install": plan.get("install", []), "remove": plan.get("remove", [])}
        for name in plan["install"]:
            if t.pattern.fullmatch(name) and (staging / name).is_file():
                os.replace(staging / name, t.path / name)
        for name in plan["remove"]:
            stale = t.path / name
            if t.pattern.fullmatch(name) and stale.is_file() and not stale.is_symlink():
                stale.unlink()
        for name in (MANIFEST, COMMITTED):
            with contextlib.suppress(FileNotFoundError):
                (staging / name).unlink()
        staging.rmdir()
