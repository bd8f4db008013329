"""The web app's UI strings, marked as Slicer marks its own (``from slicer.i18n import tr as _``):
each module of the app does ``from .i18n import tr as _``."""

from __future__ import annotations


def tr(text: str) -> str:
    """``text`` as the page shows it (no translation yet: the text itself)."""
    return text
