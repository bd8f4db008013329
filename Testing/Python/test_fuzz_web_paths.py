"""Fuzz property of ``sam2s web``'s open-by-path (issue 21, "Fuzzing in the suite"): whatever path
the page sends, ``checkOpenPath`` (what ``SAM2SWebApp.openVideo`` runs before it reads anything)
either returns a real path under the allowed folders, every frame image of a folder included, or
raises ``ValueError`` (shown on the page), never another exception or a hang."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from fuzzing import counted
from hypothesis import given
from hypothesis import strategies as st
from sam2s.frames import frame_image_names
from sam2s.serving.access import is_under, real_roots
from sam2sapp.web.app import checkOpenPath

pytestmark = pytest.mark.fuzz

_FOLDER = tempfile.TemporaryDirectory(prefix="sam2s-fuzz-web-")
TOP = Path(_FOLDER.name)
for name in ("allowed/real", "allowed/mixed", "allowed/linked", "outside/clip"):
    (TOP / name).mkdir(parents=True)
for t in range(2):
    (TOP / "outside/clip" / f"{t:05d}.png").write_bytes(b"png")
    (TOP / "allowed/real" / f"{t:05d}.png").write_bytes(b"png")
    (TOP / "allowed/linked" / f"{t:05d}.png").symlink_to(TOP / "outside/clip" / f"{t:05d}.png")
(TOP / "allowed/mixed/00000.png").write_bytes(b"png")
(TOP / "allowed/mixed/00001.png").symlink_to(TOP / "outside/clip/00001.png")
(TOP / "allowed/mixed/.hidden.png").symlink_to(TOP / "outside/clip/00000.png")  # never read: hidden
(TOP / "allowed/to_outside").symlink_to(TOP / "outside")
(TOP / "allowed/loop").symlink_to(TOP / "allowed/loop")
(TOP / "allowed/video.mp4").write_bytes(b"mp4")
ROOTS = real_roots([TOP / "allowed"])

_parts = st.sampled_from(
    ["allowed", "outside", "real", "mixed", "linked", "clip", "to_outside", "loop", "video.mp4", "00000.png", "..", ".",
     "", "~", "\x00", "x" * 300, " ", "\u00e9"]
)  # fmt: skip
paths = st.one_of(
    st.lists(_parts, max_size=6).map(lambda parts: str(TOP) + "/" + "/".join(parts)),
    st.lists(_parts, max_size=6).map("/".join),
    st.text(max_size=40),
)


@given(paths)
@counted
def test_open_by_path_returns_an_allowed_real_path_or_refuses(text):
    try:
        real = checkOpenPath(text, ROOTS)
    except ValueError as error:
        assert str(error)
        return
    assert os.path.exists(real) and is_under(real, ROOTS), real
    if os.path.isdir(real):
        assert all(is_under(os.path.join(real, n), ROOTS) for n in frame_image_names(os.listdir(real))), real
