"""Failures of ``sam2s`` that gave tracebacks (issue 21, items 10 and 11): each is now one line on
stderr and an exit code (2 before the work, 1 after it started), and leaves the outputs as they were."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from conftest import ROOT
from faultkit import file_permissions_apply
from PIL import Image
from sam2s.serving import protocol
from sam2sapp import cli

ENV = dict(os.environ, PYTHONPATH=str(ROOT / "SAM2SSlicer"), OMP_NUM_THREADS="1")


def _clip(folder, frames: int = 8, size: tuple[int, int] = (160, 120)):
    clip = folder / "frames"
    clip.mkdir()
    w, h = size
    for t in range(frames):
        image = np.full((h, w, 3), 40, np.uint8)
        image[30:70, 10 + t % 80 : 50 + t % 80] = (230, 200, 40)
        Image.fromarray(image).save(clip / f"{t:05d}.png")
    prompts = folder / "prompts.json"
    prompts.write_text(json.dumps({"objects": [{"id": 1, "prompts": [{"frame": 0, "box": [10, 30, 50, 70]}]}]}))
    return clip, prompts


def test_unreadable_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    """Item 11: a checkpoint without read permission gave a PermissionError traceback."""
    clip, prompts = _clip(tmp_path)
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"PK\x03\x04 not read anyway")
    checkpoint.chmod(0)
    argv = ["track", str(clip), "--prompts", str(prompts), "--png-dir", str(tmp_path / "png")]
    argv += ["--checkpoint", str(checkpoint), "--engine", "sam2", "--quiet"]
    with file_permissions_apply():  # root reads anything otherwise
        code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: Checkpoint") and "cannot be read" in err[0] and "chmod a+r" in err[0], err
    assert not (tmp_path / "png").exists()


def test_a_closed_stdout_pipe_ends_quietly():
    """Item 11: ``sam2s models | head -2`` ended in a BrokenPipeError traceback. Here the reader
    closes the pipe before the command writes anything: exit 1 (Python's advice for SIGPIPE), no
    traceback, nothing on stderr."""
    child = subprocess.Popen(
        [sys.executable, "-m", "sam2sapp", "models"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    child.stdout.close()
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 1
    assert err == "", err


def _running_job(url: str, token: str) -> bool:
    request = urllib.request.Request(
        f"{url}/sessions", headers={"Authorization": f"Bearer {token}", protocol.PROTOCOL_HEADER: "1"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        sessions = json.loads(response.read())["sessions"]
    return any(s["running_job"] for s in sessions)


@pytest.mark.slow
def test_server_killed_mid_propagation_fails_in_one_line(tmp_path):
    """Item 10: ``sam2s track --server URL`` with the server killed (SIGKILL) while it tracks gave a
    RuntimeError traceback; now exit 1, one line naming what failed, no output written."""
    pytest.importorskip("fastapi")
    from SAM2SSlicerLib.backends import LocalServer

    clip, prompts = _clip(tmp_path, frames=400)
    local = LocalServer()
    try:
        url, token = local.ensureRunning()
        argv = [sys.executable, "-m", "sam2sapp", "track", str(clip), "--prompts", str(prompts)]
        argv += ["--png-dir", str(tmp_path / "png"), "--server", url, "--engine", "flow", "--quiet"]
        env = dict(ENV, SAM2S_SERVER_TOKEN=token)
        child = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 120
        while not _running_job(url, token):
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.05)
        local.process.kill()
        _, err = child.communicate(timeout=120)
    finally:
        local.stop()
    lines = err.strip().splitlines()
    assert child.returncode == 1 and len(lines) == 1, err
    assert lines[0].startswith("error: the tracking server stopped answering") and "nothing was written" in lines[0]
    assert not (tmp_path / "png").exists()


def test_track_reads_the_server_token_from_a_private_file_only(tmp_path, capsys):
    """Item 5: ``--token`` shows the token to every user in ``ps``; ``sam2s track --token-file``
    reads it from a file, which must be private (before anything else runs)."""
    clip, prompts = _clip(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text("a-token-of-the-server\n")
    token_file.chmod(0o644)
    argv = ["track", str(clip), "--prompts", str(prompts), "--png-dir", str(tmp_path / "png")]
    code = cli.main([*argv, "--server", "http://127.0.0.1:9", "--token-file", str(token_file), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"chmod 600 {token_file}" in err[0], err
    assert not (tmp_path / "png").exists()
