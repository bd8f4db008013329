"""``sam2s web``'s open-by-path on the real app object (issue 21, item 4): the tracking server's
rule on every frame image read, and a ``VIDEO`` outside ``--allow-path`` allowed alone, said on the
terminal. No browser: the app is built in this process (``createApp``) and not started."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("trame_slicer", reason='the web app needs pip install -e ".[web]" (make env installs it)')

from sam2sapp.cli import build_parser  # noqa: E402
from sam2sapp.web import app as webApp  # noqa: E402


def _frames(folder, count: int = 3):
    folder.mkdir(parents=True)
    for t in range(count):
        Image.fromarray(np.full((48, 64, 3), 60 * t, np.uint8)).save(folder / f"{t:05d}.png")
    return folder


def test_open_by_path_refuses_linked_frames_and_a_video_outside_is_allowed_alone(tmp_path, capsys):
    video = _frames(tmp_path / "outside" / "clipA", 2)
    sibling = _frames(tmp_path / "outside" / "clipB")
    allowed = tmp_path / "allowed"
    linked = allowed / "linked"
    linked.mkdir(parents=True)
    for image in sorted(sibling.glob("*.png")):
        (linked / image.name).symlink_to(image)  # every frame a link to a file outside
    real = _frames(allowed / "real", 4)
    args = build_parser().parse_args(["web", str(video), "--allow-path", str(allowed), "--engine", "flow"])
    app = webApp.createApp(args)
    try:
        note = capsys.readouterr().err
        assert f"note: {video} is outside the --allow-path folders" in note and "not the other files" in note
        assert app.controller.frameCount() == 2  # the VIDEO of the command line, opened at start
        assert app.openVideo(str(linked)) is False  # before the fix: opened, showing the files outside
        assert "00000.png is a link to" in app.state.status and app.controller.frameCount() == 2
        assert app.openVideo(str(sibling)) is False  # the video's folder was silently allowed before
        assert "outside the folders" in app.state.status and app.controller.frameCount() == 2
        assert app.openVideo(str(real)) is True and app.controller.frameCount() == 4
        assert app.openVideo(str(video)) is True and app.controller.frameCount() == 2
    finally:
        app.close()
