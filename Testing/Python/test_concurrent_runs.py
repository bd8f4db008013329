"""Concurrent runs on the same outputs (issue 21, item 2): one consistent set of outputs, the other
run refused with one line (exit 2), and a killed run leaves no lock behind
(``SAM2SSlicerLib.outputs``, *Concurrent runs*)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image
from SAM2SSlicerLib.outputs import LOCK_SUFFIX, OutputBusyError, OutputSet

slicerio = pytest.importorskip("slicerio")

ENV = dict(os.environ, PYTHONPATH=str(ROOT / "SAM2SSlicer"), OMP_NUM_THREADS="1")
HOLD_LOCK = """
import sys, time
from SAM2SSlicerLib.outputs import OutputSet
outputs = OutputSet([])
outputs.addFile(sys.argv[1], "--output", (".seg.nrrd",))
outputs.check()
print("locked", flush=True)
time.sleep(60)
"""


def _holder(target: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(target)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_an_output_locked_by_a_live_process_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path):
    target = tmp_path / "o.seg.nrrd"
    child = _holder(target)
    try:
        outputs = OutputSet([])
        outputs.addFile(target, "--output", (".seg.nrrd",))
        with pytest.raises(
            OutputBusyError,
            match=rf"--output .*o\.seg\.nrrd is being written by another sam2s run \(process {child.pid}\)",
        ):
            outputs.check()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert (tmp_path / f".o.seg.nrrd{LOCK_SUFFIX}").exists()  # SIGKILL: the file stays, its lock does not
    with OutputSet([]) as outputs:
        outputs.addFile(target, "--output", (".seg.nrrd",))
        assert outputs.check() == []
    assert os.listdir(tmp_path) == []  # released: the lock file is gone too


# ------------------------------------------------------------------------------------------ two real runs
def _clip(folder: Path) -> Path:
    """30 frames of 854x480 with a bright square moving right (left half) and one moving down (right half)."""
    frames = folder / "frames"
    frames.mkdir()
    for t in range(30):
        image = np.full((480, 854, 3), 40, np.uint8)
        image[100:200, 50 + 4 * t : 150 + 4 * t] = (230, 200, 40)
        image[60 + 4 * t : 160 + 4 * t, 600:700] = (60, 210, 230)
        Image.fromarray(image).save(frames / f"{t:05d}.png")
    return frames


def _prompts(folder: Path, name: str, obj_id: int, box: list[int]) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"objects": [{"id": obj_id, "name": name, "prompts": [{"frame": 0, "box": box}]}]}))
    return path


def _start(frames: Path, prompts: Path, out: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "sam2sapp", "track", str(frames), "--prompts", str(prompts)]
    argv += [
        "--output",
        str(out / "masklets.seg.nrrd"),
        "--png-dir",
        str(out / "labels"),
        "--engine",
        "flow",
        "--quiet",
    ]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


@pytest.mark.slow
def test_two_runs_on_the_same_new_outputs_leave_one_consistent_set(tmp_path):
    """Two ``sam2s track`` processes started together on the same new ``--output`` and ``--png-dir``
    with different prompts (object 1 "left" / object 2 "right"): one writes both outputs, the
    other exits 2 with one line; the label PNGs and the ``.seg.nrrd`` are the same run's. Repeated
    ``SAM2S_CONCURRENT_ROUNDS`` times (default 3); before the lock, the folder ended mixed."""
    frames = _clip(tmp_path)
    runs = {
        1: _prompts(tmp_path, "left", 1, [50, 100, 150, 200]),
        2: _prompts(tmp_path, "right", 2, [600, 60, 700, 160]),
    }
    names = {1: "left", 2: "right"}
    outcomes = []
    for round_ in range(int(os.environ.get("SAM2S_CONCURRENT_ROUNDS", "3"))):
        out = tmp_path / f"out{round_}"
        out.mkdir()
        started = {obj_id: _start(frames, prompts, out) for obj_id, prompts in runs.items()}
        results = {obj_id: (p.wait(timeout=300), *p.communicate()) for obj_id, p in started.items()}
        winners = [k for k, (code, _, _) in results.items() if code == 0]
        assert len(winners) == 1, {k: (code, err[-500:]) for k, (code, _, err) in results.items()}
        winner, loser = winners[0], 3 - winners[0]
        code, _, err = results[loser]
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        assert "another sam2s run" in lines[0] or "already exists" in lines[0], lines[0]
        outcomes.append("busy" if "another sam2s run" in lines[0] else "exists")

        labels = {
            int(v) for png in sorted((out / "labels").glob("*.png")) for v in np.unique(np.asarray(Image.open(png)))
        }
        assert len(list((out / "labels").glob("*.png"))) == 30 and labels == {0, winner}, (winner, labels)
        segments = slicerio.read_segmentation(str(out / "masklets.seg.nrrd"))["segments"]
        assert [s["name"] for s in segments] == [names[winner]]
        assert sorted(os.listdir(out)) == ["labels", "masklets.seg.nrrd"]  # no lock or temporary left
    print(
        f"concurrent rounds: {len(outcomes)}; loser refused while the winner ran: {outcomes.count('busy')}, "
        f"after it finished: {outcomes.count('exists')}"
    )
