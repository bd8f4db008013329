"""How to install an optional part (an "extra" of ``pyproject.toml``), said one way in every message.

sam2s is not on PyPI: an extra is installed from a clone of the SAM2SSlicer repository
(``pip install -e ".[coco]"`` in its folder), or its packages alone with ``pip install``.
"""

from __future__ import annotations

__all__ = ["install_hint"]


def install_hint(extra: str, packages: str) -> str:
    """The install advice for an extra, e.g. ``install_hint("coco", "pycocotools")`` gives
    ``pip install -e ".[coco]" in a clone of the SAM2SSlicer repository (sam2s is not on PyPI), or
    pip install pycocotools``.

    Args:
        extra: the extra's name in ``pyproject.toml`` (``server``, ``batch``, ``coco``, ...).
        packages: the packages it brings, as for ``pip install`` (e.g. ``"fastapi uvicorn"``).
    """
    return (
        f'pip install -e ".[{extra}]" in a clone of the SAM2SSlicer repository (sam2s is not on PyPI), '
        f"or pip install {packages}"
    )
