"""The ``sam2s`` command line (track / eval / models / demo) on real MRML from slicer-core."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, random_model
from PIL import Image
from sam2s.modelspec import ModelSpec
from sam2sapp import cli, track

slicerio = pytest.importorskip("slicerio")


class Run:
    """What one ``sam2s`` command gave: exit code, standard output and error."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def run(capsys):
    """``run(*args)``: the ``sam2s`` command line in this process (``cli.main``), as a user runs it."""

    def run(*args: str) -> Run:
        code = cli.main(list(args))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def read_seg(path):
    seg = slicerio.read_segmentation(str(path))
    return seg, {s["name"]: s for s in seg["segments"]}


@pytest.mark.slow
def test_track_with_flow_engine(run, shared_data, tmp_path):
    out = tmp_path / "out.seg.nrrd"
    r = run(
        "track", str(shared_data / "video.mp4"), "--prompts", str(shared_data / "prompts.json"), "--output", str(out),
        "--png-dir", str(tmp_path / "png"), "--overlay", str(tmp_path / "ov.mp4"), "--engine", "flow", "--end", "9",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "gallbladder" in r.stdout and "frames present" in r.stdout
    seg, by_name = read_seg(out)
    assert set(by_name) == {"gallbladder", "cystic artery"}
    voxels = seg["voxels"]
    assert (854, 480, 127) in (voxels.shape[:3], voxels.shape[-3:])  # I (x), J (y), K (frame); layers if 4-D
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == 127
    labels = np.asarray(Image.open(pngs[0]))
    assert set(np.unique(labels)) <= {0, 1, 2} and (labels == 2).any()
    assert not (np.asarray(Image.open(pngs[20])) > 0).any()  # outside --end 9: untouched (empty)
    assert (tmp_path / "ov.mp4").stat().st_size > 0
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.slow
def test_track_with_a_checkpoint_file(run, shared_data, tmp_path):
    """--checkpoint pointing at a checkpoint written from random weights (tiny at 512 px)."""
    ckpt = tmp_path / "random_tiny.pt"
    torch.save({"model": random_model("sam2.1_hiera_t", 512).state_dict()}, ckpt)
    out = tmp_path / "sam2.seg.nrrd"
    r = run(
        "track", str(shared_data / "video.mp4"), "--prompts", str(shared_data / "prompts.json"), "--output", str(out),
        "--checkpoint", str(ckpt), "--model", "sam2.1_hiera_t", "--image-size", "512", "--end", "3", "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "engine: sam2" in r.stdout
    _, by_name = read_seg(out)
    assert set(by_name) == {"gallbladder", "cystic artery"}


def test_engine_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("SAM2S_CACHE_DIR", str(tmp_path / "empty-cache"))
    sam2, flow = ModelSpec(), ModelSpec(engine="flow")
    assert track.choose_engine(sam2, auto=True) == flow
    assert track.choose_engine(flow, auto=False) == flow
    with pytest.raises(track.CliError, match="sam2s download sam2.1_hiera_t"):
        track.choose_engine(sam2, auto=False)
    with pytest.raises(track.CliError, match="no such file"):
        track.choose_engine(sam2.replace(checkpoint=str(tmp_path / "missing.pt")), auto=True)
    checkpoint = tmp_path / "mine.pt"
    checkpoint.write_bytes(b"weights")
    assert track.choose_engine(sam2.replace(checkpoint=str(checkpoint)), auto=True).checkpoint == str(checkpoint)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "line 1"),
        ('{"objects": [{"id": 1, "prompts": [{"frame": 0, "points": [[1, 2, 3]], "labels": [1]}]}]}', "points"),
        ('{"objects": [{"id": 1, "prompts": [{"frame": 500, "box": [1, 2, 3, 4]}]}]}', "out of range"),
        ('{"objects": [{"id": 1, "prompts": [{"frame": 0, "box": [9000, 2, 9100, 4]}]}]}', "box"),
        ('{"things": []}', "objects"),
    ],
)
def test_bad_prompts_file_fails_cleanly(run, shared_data, tmp_path, content, message):
    prompts = tmp_path / "p.json"
    prompts.write_text(content)
    out = tmp_path / "o.seg.nrrd"
    r = run(
        "track", str(shared_data / "video.mp4"), "--prompts", str(prompts), "--output", str(out), "--engine", "flow"
    )
    assert r.returncode == 2
    assert "error:" in r.stderr and message in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == [prompts]  # nothing written, not even partially


def test_unreadable_video_fails_cleanly(run, tmp_path):
    video = tmp_path / "broken.mp4"
    video.write_text("this is not a video")
    prompts = tmp_path / "p.json"
    prompts.write_text('{"objects": [{"id": 1, "prompts": [{"frame": 0, "points": [[1, 2]], "labels": [1]}]}]}')
    r = run("track", str(video), "--prompts", str(prompts), "--output", str(tmp_path / "o.seg.nrrd"))
    assert r.returncode == 2 and "Cannot read video" in r.stderr and "could not be decoded" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4", "p.json"]
    r = run("track", str(tmp_path / "nope.mp4"), "--prompts", str(prompts), "--output", str(tmp_path / "o.seg.nrrd"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_eval_cli_on_hand_made_cases(run, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    square = np.zeros((64, 64), np.uint8)
    square[10:30, 10:30] = 1
    Image.fromarray(square).save(gt / "00000.png")
    Image.fromarray(square).save(pred / "00000.png")  # identical
    other = np.zeros_like(square)
    other[40:60, 40:60] = 1
    Image.fromarray(square).save(gt / "00001.png")
    Image.fromarray(other).save(pred / "00001.png")  # disjoint
    r = run("eval", str(pred), str(gt), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    frames = res["objects"]["1"]["per_frame"]
    assert frames["00000.png"] == [1.0, 1.0] and frames["00001.png"] == [0.0, 0.0]
    assert res["J&F"] == pytest.approx(0.5)
    r = run("eval", str(pred), str(tmp_path / "missing"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_models_lists_the_registry(tmp_path, monkeypatch):
    """The one subprocess smoke test: ``python -m sam2sapp`` (what the ``sam2s`` script runs)."""
    env_cache = tmp_path / "cache"
    r = subprocess.run(
        [sys.executable, "-m", "sam2sapp", "models"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "SAM2SSlicer"), "SAM2S_CACHE_DIR": str(env_cache)},
    )
    assert r.returncode == 0, r.stderr
    assert str(env_cache) in r.stdout and "sam2.1_hiera_l" in r.stdout and "sam2.1_hiera_large.pt" in r.stdout


@pytest.mark.slow
def test_demo_writes_every_output(shared_data, tmp_path, capsys):
    """The demo on the real clip (flow engine, no weights here): .seg.nrrd with 2 segments over
    127 frames, label PNGs, overlay video, contact sheet, and J&F on the annotated frames."""
    from sam2sapp.demo import run_demo

    assert run_demo(tmp_path, data=shared_data, engine="flow") == 0
    printed = capsys.readouterr().out
    assert "DAVIS J&F on annotated frames 30, 60, 90, 120" in printed
    seg, by_name = read_seg(tmp_path / "masklets.seg.nrrd")
    assert set(by_name) == {"gallbladder", "cystic artery"}
    assert (854, 480, 127) in (seg["voxels"].shape[:3], seg["voxels"].shape[-3:])
    assert len(list((tmp_path / "labels").glob("*.png"))) == 127
    assert (tmp_path / "overlay.mp4").stat().st_size > 10_000
    sheet = Image.open(tmp_path / "contact_sheet.png")
    assert sheet.size[0] >= 640


def test_demo_falls_back_to_a_generated_clip(tmp_path, monkeypatch):
    from sam2sapp import demo

    assert demo.run_demo(tmp_path / "out", engine="flow") == 0
    assert (tmp_path / "out" / "generated_clip" / "ground_truth").is_dir()
    assert (tmp_path / "out" / "masklets.seg.nrrd").is_file()
