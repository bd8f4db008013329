"""The extension's Python dependencies: what is needed, what is missing, and installing it in Slicer.

``Resources/requirements.txt`` lists the pip packages with pinned ranges; PyTorch is installed
through the PyTorch extension's ``PyTorchUtils`` (the right CUDA / CPU build for the machine).
Nothing is installed when this module is imported: :func:`ensureDependencies` is called by the
GUI on first use, for what is asked (an import needs PyAV and OpenCV only; tracking on this
computer needs PyTorch too: :func:`requirementsFor`), asks the user, and only then downloads.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from pathlib import Path

REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"
TORCH_REQUIREMENT = "torch>=2.1"
REQUESTER = "SAM2S"
_IMPORT_NAMES = {"pillow": "PIL", "opencv-python-headless": "cv2", "av": "av", "numpy": "numpy", "tqdm": "tqdm"}

SERVER_ONLY = ("fastapi", "uvicorn")
"""Packages only the local tracking server needs (not Slicer's process when tracking is remote)."""
IMPORT_ONLY = ("av", "opencv-python-headless")
"""What importing a video needs (PyAV decodes, OpenCV resizes): no PyTorch, no server (N19)."""
PURPOSES = ("import", "remote", "local")
"""What the packages are for: importing a video, tracking on a remote server, tracking here."""

__all__ = [
    "IMPORT_ONLY",
    "PURPOSES",
    "REQUIREMENTS_FILE",
    "SERVER_ONLY",
    "TORCH_REQUIREMENT",
    "dependenciesReady",
    "ensureDependencies",
    "missingRequirements",
    "readRequirements",
    "requirementsFor",
]


def readRequirements(path: str | Path = REQUIREMENTS_FILE) -> list[str]:
    """The requirement lines of ``path`` (comments and blank lines dropped), e.g. ``["numpy>=1.23,<3", ...]``."""
    lines = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~; \[]", requirement, maxsplit=1)[0].strip()


def missingRequirements(requirements: list[str] | None = None) -> list[str]:
    """The requirements (default: ``requirements.txt`` plus torch) that are not installed in a
    satisfying version. Versions are compared with ``packaging`` when it is importable, otherwise
    only presence is checked."""
    requirements = list(requirements) if requirements is not None else readRequirements() + [TORCH_REQUIREMENT]
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - packaging ships with pip / Slicer
        Requirement = None
    missing = []
    for requirement in requirements:
        name = _name(requirement)
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
            continue
        if Requirement is not None:
            spec = Requirement(requirement).specifier
            if not spec.contains(version.split("+", 1)[0], prereleases=True):
                missing.append(requirement)
    return missing


def requirementsFor(purpose: str) -> list[str]:
    """What Slicer's Python needs for ``purpose`` (:data:`PURPOSES`):

    * ``"import"``: importing a video, folder or Sequence: PyAV and OpenCV only (:data:`IMPORT_ONLY`),
      so a user who only imports is never asked for PyTorch (N19);
    * ``"remote"``: tracking on a remote server: everything of ``requirements.txt`` but the server
      packages (no PyTorch, no FastAPI / uvicorn);
    * ``"local"``: tracking on this computer: also the local tracking server's packages and PyTorch
      (``TORCH_REQUIREMENT``).

    Raises:
        ValueError: another ``purpose``.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}; got {purpose!r}.")
    requirements = readRequirements()
    if purpose == "import":
        return [r for r in requirements if _name(r).lower() in IMPORT_ONLY]
    if purpose == "remote":
        return [r for r in requirements if _name(r).lower() not in SERVER_ONLY]
    return requirements + [TORCH_REQUIREMENT]


def dependenciesReady(purpose: str) -> bool:
    """True when everything of :func:`requirementsFor` ``(purpose)`` is installed in a satisfying version."""
    return not missingRequirements(requirementsFor(purpose))


def _ensureTorch() -> None:
    """Install PyTorch through the PyTorch extension when it is missing (asks the user first)."""
    if not missingRequirements([TORCH_REQUIREMENT]):
        return
    try:
        import PyTorchUtils
    except ImportError as error:
        raise RuntimeError(
            "SAM2S needs PyTorch. Install the 'PyTorch' extension from the Extensions Manager, restart "
            "Slicer, and try again (it installs the PyTorch build that fits your GPU)."
        ) from error
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    if not torchLogic.torchInstalled():
        torch = torchLogic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT[len("torch") :])
        if torch is None:
            raise RuntimeError("PyTorch was not installed; SAM2S cannot track without it.")
    elif missingRequirements([TORCH_REQUIREMENT]):
        raise RuntimeError(
            f"The installed PyTorch is too old for SAM2S (needs {TORCH_REQUIREMENT}); update it in the "
            "'PyTorch Utils' module and restart Slicer."
        )


def ensureDependencies(requester: str = REQUESTER, purpose: str = "local") -> None:
    """Make sure the packages of :func:`requirementsFor` ``(purpose)`` are importable (inside
    Slicer): PyTorch only for ``"local"``; for ``"import"`` only PyAV and OpenCV.

    Uses ``slicer.packaging.pip_ensure`` (Slicer >= 5.11: asks, shows progress, offers a restart)
    or, on older Slicer, asks with ``slicer.util.confirmOkCancelDisplay`` and runs
    ``slicer.util.pip_install``. Nothing is downloaded without the user's consent.

    Raises:
        RuntimeError: the user declined or an install failed; the message says what to do.
    """
    import slicer

    if purpose == "local":
        _ensureTorch()
    requirements = requirementsFor(purpose)
    missing = missingRequirements([r for r in requirements if r != TORCH_REQUIREMENT])
    if not missing:
        return
    packaging = getattr(slicer, "packaging", None)
    if packaging is None:
        try:
            packaging = importlib.import_module("slicer.packaging")
        except ImportError:
            packaging = None
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        wanted = {_name(r).lower() for r in requirements}
        packaging.pip_ensure(
            [r for r in packaging.load_requirements(str(REQUIREMENTS_FILE)) if _name(str(r)).lower() in wanted],
            requester=requester,
        )
    else:
        if not slicer.util.confirmOkCancelDisplay(
            f"{requester} needs these Python packages: {', '.join(missing)}. Download and install them now "
            "(from the Python Package Index)?",
            "Install Python packages",
        ):
            raise RuntimeError(f"Python packages not installed: {', '.join(missing)}.")
        for requirement in missing:  # one call each: old Slicer versions split the string on spaces
            slicer.util.pip_install(requirement.replace(" ", ""))
    importlib.invalidate_caches()
    still = missingRequirements([r for r in requirements if r != TORCH_REQUIREMENT])
    if still:
        raise RuntimeError(f"These packages are still missing: {', '.join(still)}; restart Slicer and try again.")
