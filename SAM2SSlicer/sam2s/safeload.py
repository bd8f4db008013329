"""The safe loader of checkpoints: ``torch.load(..., weights_only=True)`` after checking, without
unpickling anything, that the file names only the globals a tensor checkpoint needs, so that a
checkpoint never runs code (:func:`load_state_dict`; re-exported by :mod:`sam2s.checkpoints`).
torch is imported by :func:`load_state_dict` only.
"""

from __future__ import annotations

import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["CheckpointError", "load_state_dict"]


class CheckpointError(ValueError):
    """A checkpoint file is unreadable: truncated, not a PyTorch file, or not tensor-only."""


# Globals a tensor checkpoint may name; mirrors what torch's weights-only unpickler allows by
# default (torch/_weights_only_unpickler.py, ``_get_allowed_globals``): tensor / storage rebuild
# functions, storage and legacy tensor classes, dtypes, ``torch.Size`` / ``torch.device``, and a
# few plain containers. Anything else in a checkpoint is an arbitrary object (or code).
_SAFE_GLOBALS = frozenset(
    {
        "collections.OrderedDict",
        "collections.Counter",
        "builtins.set",
        "builtins.frozenset",
        "builtins.bytearray",
        "builtins.complex",
        "_codecs.encode",
        "torch.Size",
        "torch.Tensor",
        "torch.device",
        "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout",
        "torch._tensor._rebuild_from_type_v2",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
    }
)
_TENSOR_CLASS_MODULES = ("torch", "torch.cuda", "torch.sparse", "torch.cuda.sparse")
_STRING_OPCODES = frozenset(
    {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
)
_MAX_PICKLES = 8  # a legacy (non-zip) torch file holds 5 pickles, then raw storage bytes


def _is_safe_global(qualified: str) -> bool:
    """Whether ``module.name`` is something a tensor-only checkpoint legitimately imports."""
    module, _, name = qualified.rpartition(".")
    if module == "__builtin__":  # protocol 0-2 pickles spell builtins the Python 2 way
        qualified, module = "builtins." + name, "builtins"
    if qualified in _SAFE_GLOBALS:
        return True
    if not name.isidentifier():
        return False
    if module == "torch._utils":
        return name.startswith("_rebuild_")
    if module in _TENSOR_CLASS_MODULES and (name.endswith("Storage") or name.endswith("Tensor")):
        return True
    if module == "torch":  # dtypes (torch.float32), quantisation schemes, layouts, memory formats
        import torch

        kinds = (torch.dtype, torch.qscheme, torch.layout, torch.memory_format)
        return isinstance(getattr(torch, name, None), kinds)
    return False


def _pickle_globals(stream) -> tuple[list[str], bool]:
    """The globals one pickle in ``stream`` imports, read with :func:`pickletools.genops`, which
    only decodes opcodes and never executes or imports anything.

    Collects GLOBAL / INST names and, for STACK_GLOBAL, the two strings pushed before it (also
    through the memo, as protocol 4 refers to repeated names with BINGET). Returns
    ``(["module.name", ...], complete)``; ``complete`` is False when the pickle is cut short or
    undecodable (then the names are unreliable). A STACK_GLOBAL whose operands are not plain
    strings gives ``"<computed name>"``.
    """
    names: list[str] = []
    pushed: list[str | None] = []  # what each push put on the stack, when it is a string
    memo: dict[int, str | None] = {}
    try:
        for op, arg, _ in pickletools.genops(stream):
            kind = op.name
            if kind in ("GLOBAL", "INST"):
                module, _, name = str(arg).partition(" ")
                names.append(f"{module}.{name}")
                pushed.append(None)
            elif kind == "STACK_GLOBAL":
                module, name = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
                ok = isinstance(module, str) and isinstance(name, str)
                names.append(f"{module}.{name}" if ok else "<computed name>")
                pushed.append(None)
            elif kind in _STRING_OPCODES:
                pushed.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
            elif kind == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif kind in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = pushed[-1] if pushed else None
            elif kind in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(arg))
            elif kind == "STOP":
                return names, True
            elif kind not in ("FRAME", "PROTO"):
                pushed.append(None)
    except Exception:  # noqa: BLE001 (any decoding failure: garbage or a cut-off pickle)
        return names, False
    return names, False


def _checkpoint_globals(path: Path) -> list[str]:
    """Every global imported by the pickles of a checkpoint file, without unpickling anything.

    A zip checkpoint (``torch.save`` since PyTorch 1.6) holds its pickle in ``<name>/data.pkl``;
    a legacy file is several pickles one after another, followed by raw storage bytes. Only
    pickles that decode completely (up to STOP) count, so garbage never yields names.
    """
    found: list[str] = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    if member == "data.pkl" or member.endswith("/data.pkl"):
                        with archive.open(member) as stream:
                            names, complete = _pickle_globals(stream)
                        if complete:
                            found += names
        else:
            with open(path, "rb") as stream:
                for _ in range(_MAX_PICKLES):
                    names, complete = _pickle_globals(stream)
                    if not complete:
                        break
                    found += names
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError, EOFError):
        pass  # unreadable: reported as a damaged file by the caller
    return found


def _unsafe_globals(path: Path) -> list[str]:
    """Globals of ``path`` that a tensor-only checkpoint does not need, in file order, unique."""
    return list(dict.fromkeys(g for g in _checkpoint_globals(path) if not _is_safe_global(g)))


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint's state dict on the CPU without executing code.

    Uses ``torch.load(path, map_location="cpu", weights_only=True)``: only tensors and plain
    containers are unpickled; nothing else is ever used to unpickle. When that safe unpickler
    refuses the file, its opcodes are inspected without executing anything
    (:func:`pickletools.genops` over the file's pickles, or over ``*/data.pkl`` of a zip
    checkpoint) to tell a file that carries code or other objects (a global outside what tensors
    need, e.g. ``posix.system``) from a damaged one. Returns ``obj["model"]`` when present
    (Meta's format), else the object itself when it is a dict of tensors. Matching keys against
    a model is done elsewhere.

    Args:
        path: checkpoint file (``.pt`` / ``.pth``).

    Returns:
        ``{parameter name: tensor}`` (CPU tensors).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file cannot be read (e.g. no permission); it is empty, truncated or not a PyTorch checkpoint; it contains
            code or objects other than tensors (refused, naming the first such global, e.g.
            ``posix.system``, since unpickling it could run code; the message says how to
            re-save a clean state dict); or it holds no dict of tensors.
    """
    import torch  # here, not at module level: the registry and the downloader work without torch

    path = Path(path).expanduser()
    _check_file(path)
    try:
        with warnings.catch_warnings():  # a refused file is reported below, not by torch's protocol warning
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to parse: code inside, or a bad file
        raise _refusal(path, exc) from exc
    state = obj.get("model", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict) or not state:
        raise CheckpointError(
            f"Checkpoint {path} holds no state dict (found {type(state).__name__}); expected a dict of "
            "tensors or {'model': dict of tensors}."
        )
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"Checkpoint {path} holds a dict whose entries are not all named tensors "
            f"(e.g. {bad[0]!r}); expected a dict of tensors or {{'model': dict of tensors}}."
        )
    return state


def _check_file(path: Path) -> None:
    """Before unpickling: ``FileNotFoundError`` for no file, ``CheckpointError`` for one that cannot
    be read, is empty, or is a zip archive cut short."""
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:  # e.g. no read permission, or a folder of another user
        raise CheckpointError(
            f"Checkpoint {path} cannot be read ({exc.strerror or exc}); give this user read access to it "
            f"(e.g. chmod a+r {path}) or copy it somewhere readable."
        ) from None
    if not head:
        raise CheckpointError(
            f"Checkpoint {path} is empty (0 bytes): truncated or not a PyTorch checkpoint. Delete it and download "
            "it again (or re-save it with torch.save)."
        )
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"Checkpoint {path} is truncated or not a PyTorch checkpoint (its zip archive is incomplete). "
            "Delete it and download it again."
        )


def _refusal(path: Path, exc: Exception) -> CheckpointError:
    """Why the safe unpickler refused ``path``: code or objects other than tensors (the first such
    global, found by reading its opcodes without running anything), else a damaged file."""
    unsafe = _unsafe_globals(path)
    if unsafe:
        more = f" and {len(unsafe) - 1} more" if len(unsafe) > 1 else ""
        return CheckpointError(
            f"Checkpoint {path} was refused: it contains code or objects other than tensors (first: "
            f"{unsafe[0]}{more}), refusing to unpickle arbitrary code. Only weights are loaded "
            "(torch.load with weights_only=True). If you trust the file, re-save a clean state dict from "
            "it in a trusted environment, e.g. torch.save({'model': model.state_dict()}, 'clean.pt'), and "
            "load that file instead."
        )
    text = str(exc)
    text = text.split("Unpickler error:", 1)[1] if "Unpickler error:" in text else text
    detail = next((line.strip()[:200] for line in text.splitlines() if line.strip()), "")
    detail = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return CheckpointError(
        f"Checkpoint {path} is truncated or not a PyTorch checkpoint (the safe unpickler rejected it: "
        f"{detail}). Delete it and download it again, or re-save it with torch.save."
    )
