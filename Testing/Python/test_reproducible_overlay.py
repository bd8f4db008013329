"""The overlay video is reproducible (issue 21, item 14): the same frames give the same file, byte
for byte. x264 with its default threads (slice threads here) gave different files in some runs."""

from __future__ import annotations

import hashlib

import numpy as np
from sam2sapp import cli
from sam2sapp.visualize import write_video
from test_cli_failures import _clip


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_frames_give_the_same_file(tmp_path):
    base = np.random.default_rng(0).integers(0, 255, (240, 427, 3), np.uint8)
    frames = [np.roll(base, 3 * t, axis=1) for t in range(40)]  # noise: many encoder decisions
    digests = {_sha(write_video(tmp_path / f"v{i}.mp4", frames, 25)) for i in range(6)}
    assert len(digests) == 1, digests
    data = (tmp_path / "v0.mp4").read_bytes()
    settings = data[data.find(b"x264 - core") :].split(b"\x00")[0].decode("ascii", "replace")
    assert " threads=1 " in settings and "sliced_threads=0" in settings, settings  # x264's own record


def test_two_track_runs_write_identical_overlays(tmp_path, capsys):
    clip, prompts = _clip(tmp_path, frames=20)
    for name in ("a", "b"):
        argv = ["track", str(clip), "--prompts", str(prompts), "--overlay", str(tmp_path / f"{name}.mp4")]
        assert cli.main([*argv, "--engine", "flow", "--quiet"]) == 0, capsys.readouterr().err
    assert _sha(tmp_path / "a.mp4") == _sha(tmp_path / "b.mp4")
