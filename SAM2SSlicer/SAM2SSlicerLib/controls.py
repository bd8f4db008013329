"""The parts of the SAM2S panel and effect that are tables and small services rather than
behaviour, shared by :class:`~SAM2SSlicerLib.controller.SAM2SController` and the Qt files:

* the tool, compute and scope names and the keyboard shortcut table (:data:`SHORTCUTS`);
* where settings persist (:class:`SettingsStore`, :class:`JsonSettingsStore` outside Slicer);
* the guard that keeps the first-use package install from running twice (:class:`DependencyGate`);
* slice-view geometry: which frame a view shows (:func:`frameOfSlice`) and which video pixel an
  RAS position is (:func:`pixelOfRas`);
* the default backend factory (:func:`serverBackend`).

``controller`` re-exports every name here (``from SAM2SSlicerLib.controller import SHORTCUTS``
keeps working).

Coordinates: frame = K index of the video volume (0-based); x = column (right), y = row (down,
0 at the top), in pixels of the imported frames.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import vtk

try:  # Slicer's translation function (Base/Python/slicer/i18n.py); slicer-core has none
    from slicer.i18n import tr
except ImportError:  # pragma: no cover - depends on the Slicer build

    def tr(text: str) -> str:
        """``text`` untranslated (``slicer.i18n.tr`` where Slicer provides it)."""
        return text


_ = tr  # the name Slicer's translation tools look for


__all__ = [
    "COMPUTE_LOCAL",
    "DOCUMENTATION_URL",
    "COMPUTE_SERVER",
    "SCOPES",
    "SETTINGS_PREFIX",
    "SHORTCUTS",
    "TOOL_BOX",
    "TOOL_POINT",
    "DependencyGate",
    "JsonSettingsStore",
    "SettingsStore",
    "Shortcut",
    "frameOfSlice",
    "pixelOfRas",
    "serverBackend",
]

TOOL_POINT, TOOL_BOX = "point", "box"
COMPUTE_LOCAL, COMPUTE_SERVER = "local", "server"
SCOPES = ("selected", "changed", "all")
"""Which segments a propagation writes: the selected one, those whose prompts changed since they
were last propagated (new objects, corrections), or every prompted one."""
SETTINGS_PREFIX = "SAM2SSlicer/"
DOCUMENTATION_URL = "https://github.com/sam2sslicer/SAM2SSlicer#readme"
"""The user documentation (README), linked from the module's and the effect's help (the
extension's homepage, ``EXTENSION_HOMEPAGE`` in CMakeLists.txt)."""


@dataclasses.dataclass(frozen=True)
class Shortcut:
    """One row of the shortcut table (the effect's help, the README walk-through and the tests).

    Attributes:
        keys: as written for users, e.g. ``"Shift+Return"`` or ``"click"`` (mouse words translated
            with Slicer's ``tr``, key names as Qt writes them).
        keySym: VTK key symbol (``vtkRenderWindowInteractor::GetKeySym``), None for a mouse click.
        ctrl, shift: modifiers that must be held (others are not checked).
        action: what happens, one line (translated with Slicer's ``tr``: context
            ``SAM2SSlicerLib.controls``, ``Base/Python/slicer/i18n.py`` ``getContext``).
        handledBy: ``"effect"`` (this controller, through the effect's ``processInteractionEvents``)
            or ``"editor"`` (a ``qMRMLSegmentEditorWidget`` keyboard shortcut, installed by the
            Segment Editor module and by the SAM2S panel on ``enter``).
    """

    keys: str
    keySym: str | None
    ctrl: bool
    shift: bool
    action: str
    handledBy: str = "effect"


SHORTCUTS: tuple[Shortcut, ...] = (
    Shortcut(_("click"), None, False, False, _("positive point (inside the object) for the selected segment")),
    Shortcut(_("Shift+click"), None, False, True, _("negative point (outside the object)")),
    Shortcut("X", "x", False, False, _("box tool on / off; with it, drag a box around the object")),
    Shortcut("Return", "Return", False, False, _("propagate forward from the shown frame")),
    Shortcut("Shift+Return", "Return", False, True, _("propagate backward from the shown frame")),
    Shortcut("Ctrl+Return", "Return", True, False, _("propagate in both directions")),
    Shortcut("BackSpace", "BackSpace", False, False, _("remove the last click of the selected segment on this frame")),
    Shortcut("Delete", "Delete", False, False, _("clear the selected segment's prompts on this frame")),
    Shortcut(
        "Escape",
        "Escape",
        False,
        False,
        _(
            "deselect the SAM2S effect; tracking started from the effect stops after its current frame "
            "(finished frames are kept)"
        ),
        "editor",
    ),
    Shortcut("Ctrl+Z", "z", True, False, _("undo the last prompt's mask or propagation (also Z)"), "editor"),
    Shortcut("Ctrl+Y", "y", True, False, _("redo (also Y)"), "editor"),
)


class SettingsStore(Protocol):
    """Where settings persist: ``qt.QSettings`` in Slicer (through the module's adapter), a JSON
    file elsewhere (:class:`JsonSettingsStore`). Values are strings; missing keys give None."""

    def value(self, key: str) -> str | None: ...

    def setValue(self, key: str, value: str) -> None: ...


class JsonSettingsStore:
    """A :class:`SettingsStore` in a JSON file (written atomically), for use outside Slicer.

    Args:
        path: the file; created on the first ``setValue``. A missing file means no settings.

    Raises:
        ValueError: on reading, when the file is not a JSON object (the message names the file).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, str]:
        if not self.path.is_file():
            return {}
        try:
            values = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise ValueError(f"Settings file {self.path} is not valid JSON ({error}); fix or delete it.") from error
        if not isinstance(values, dict):
            raise ValueError(f"Settings file {self.path} must hold a JSON object; fix or delete it.")
        return values

    def value(self, key: str) -> str | None:
        value = self._read().get(key)
        return None if value is None else str(value)

    def setValue(self, key: str, value: str) -> None:
        values = self._read()
        values[key] = str(value)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(values, indent=1, sort_keys=True), encoding="utf-8")
        temporary.replace(self.path)


class DependencyGate:
    """Install the Python packages once, never twice at the same time, and never from a click.

    In Slicer an install runs on the main thread and processes Qt events while pip runs (Slicer's
    ``logProcessOutput`` calls ``processEvents``), so a second click or key can re-enter it. The
    gate refuses a call made while an install runs, and :class:`SAM2SController` starts installs
    only from ``activate()`` of the effect or from a button (:meth:`SAM2SController.installDependencies`),
    never from a mouse or key callback.

    Args:
        check: returns True when everything needed is importable (cheap; called until it is).
        install: installs what is missing (asks the user first); raises with a message on failure.

    Attributes:
        state: ``"unknown"``, ``"installing"``, ``"ready"`` or ``"failed"``. error: the last
            install error message, or "".
    """

    def __init__(self, check: Callable[[], bool], install: Callable[[], None]) -> None:
        self.check, self.install = check, install
        self.state = "unknown"
        self.error = ""

    def isReady(self) -> bool:
        """True when the packages are there (checked again until they are)."""
        if self.state != "ready" and self.state != "installing" and self.check():
            self.state = "ready"
        return self.state == "ready"

    def isInstalling(self) -> bool:
        return self.state == "installing"

    def ensure(self) -> bool:
        """Install what is missing, unless an install is already running (then False at once).

        Returns True when the packages are ready; False when an install runs or failed (``error``).
        """
        if self.state == "installing":
            return False
        if self.isReady():
            return True
        self.state = "installing"
        try:
            self.install()
        except Exception as error:  # noqa: BLE001 - kept as a message for the user
            self.state, self.error = "failed", str(error)
            return False
        self.state = "unknown"
        return self.isReady()


def frameOfSlice(videoNode, sliceToRas: vtk.vtkMatrix4x4) -> int | None:
    """The frame (K index, clamped to the video) a slice view shows, from its ``SliceToRAS`` matrix
    (``vtkMRMLSliceNode::GetSliceToRAS``): the slice centre mapped through the volume's RAS-to-IJK
    matrix. None without a video."""
    if videoNode is None or videoNode.GetImageData() is None:
        return None
    center = [sliceToRas.GetElement(r, 3) for r in range(3)] + [1.0]
    rasToIjk = vtk.vtkMatrix4x4()
    videoNode.GetRASToIJKMatrix(rasToIjk)
    k = int(round(rasToIjk.MultiplyPoint(center)[2]))
    frames = videoNode.GetImageData().GetDimensions()[2]
    return min(max(k, 0), frames - 1)


def pixelOfRas(videoNode, ras: Iterable[float], sliceToRas: vtk.vtkMatrix4x4) -> tuple[float, float, int] | None:
    """``(x, y, frame)`` in video pixels (x right, y down, frame = K index) of an RAS position shown
    in a slice view, or None when the view does not show frames upright (its normal is not along K
    within 8 degrees: cos >= 0.99) or the position is outside the video.

    Raises:
        ValueError: the view is not axial to the video (the message says how to fix it).
    """
    if videoNode is None or videoNode.GetImageData() is None:
        return None
    rasToIjk = vtk.vtkMatrix4x4()
    videoNode.GetRASToIJKMatrix(rasToIjk)
    normal = rasToIjk.MultiplyPoint([sliceToRas.GetElement(r, 2) for r in range(3)] + [0.0])
    length = sum(v * v for v in normal[:3]) ** 0.5
    if length == 0 or abs(normal[2]) / length < 0.99:
        raise ValueError(_("Show the video in an axial view (frames upright) to place prompts."))
    x, y, k, _w = rasToIjk.MultiplyPoint(list(ras)[:3] + [1.0])
    width, height, frames = videoNode.GetImageData().GetDimensions()
    frame = int(round(k))
    if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5 and 0 <= frame < frames):
        return None
    return min(max(float(x), 0.0), width - 1.0), min(max(float(y), 0.0), height - 1.0), frame


def serverBackend(url: str | None, token: str, uploadProgress: Callable[[int, int], None] | None = None):
    """The controller's default backend factory: a ``ServerBackend`` on a local tracking server
    when ``url`` is empty, else on the remote server at ``url`` with ``token``; ``uploadProgress``
    gets ``(sentBytes, totalBytes)`` while frames are uploaded to a remote server."""
    from .backends import ServerBackend

    return ServerBackend(url, token, uploadProgress=uploadProgress) if url else ServerBackend()
