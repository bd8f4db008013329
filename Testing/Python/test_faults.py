"""The fault-injection suite: bad inputs, misuse and faults against ``sam2s track / eval / demo /
download``, the engine API and the headless Slicer logic. Every case asserts the exit code or
exception, the message (the problem and the fix), and that every file that existed before is
byte-identical afterwards.

This file holds the command-line cases: bad output paths, model / checkpoint / device errors found
before the import, bad inputs, the memory guard under a real RLIMIT_AS, eval and download
errors, overwrite rules and file modes, a full disk (a small tmpfs) and kills (SIGKILL and
SIGINT before every file-system step of writing the outputs, in forked children). The cases of
the engine API (``faults_engine.py``) and of the headless Slicer logic (``faults_slicer.py``)
are imported below, so ``pytest Testing/Python/test_faults.py`` runs the whole suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_model
from faultkit import (
    ForkServer,
    added,
    changed,
    file_permissions_apply,
    snapshot,
    temporaries,
    write_clip,
)
from PIL import Image
from sam2sapp import cli
from SAM2SSlicerLib.export import readSegmentation

pytest.importorskip("slicerio")

# The engine's and the headless Slicer logic's cases (and the fixture they use), collected here.
from faults_engine import (  # noqa: E402, F401
    test_engine_cases_are_many_and_distinct,
    test_engine_fault,
    test_engine_png_bomb_generator_is_cheap_and_real,
)
from faults_slicer import (  # noqa: E402, F401
    test_slicer_case_helpers_notice_changes,
    test_slicer_cases_are_many_and_distinct,
    test_slicer_fault,
    world,
)


@pytest.fixture
def case(tmp_path, monkeypatch):
    """A 4-frame clip in ``in/``, an empty ``out/``, an empty checkpoint cache; ``case.run(args)``
    runs ``sam2s`` in this process and returns ``(exit code, stderr)``."""
    monkeypatch.setenv("SAM2S_CACHE_DIR", str(tmp_path / "cache"))
    frames, prompts = write_clip(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()

    class Case:
        root, inp, frames_dir, prompts_file, out_dir = tmp_path, tmp_path / "in", frames, prompts, out

        def track(self, *extra: str, output: str | Path | None = None, engine: str = "flow") -> list[str]:
            argv = ["track", str(frames), "--prompts", str(prompts), "--output", str(output or out / "o.seg.nrrd")]
            return argv + ["--engine", engine, "--quiet", *extra]

        def run(self, argv: list[str], capsys=None) -> tuple[int, str]:
            code = cli.main(argv)
            return code, capsys.readouterr().err if capsys else ""

    return Case()


def refused(case, capsys, argv, *words, code=2):
    """Run ``argv``; assert the exit code, one-line error with ``words``, no traceback, nothing
    changed or added under the case's folder."""
    before = snapshot(case.root)
    got, err = case.run(argv, capsys)
    assert got == code, err
    assert "Traceback" not in err and err.startswith("error:"), err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    assert changed(before, case.root) == []
    assert added(before, case.root) == []
    return err


# ------------------------------------------------------------------------------------------ output paths
def _png_dir_is_cwd(case, monkeypatch):
    monkeypatch.chdir(case.inp)
    return case.track("--png-dir", ".")


OUTPUT_CASES = {
    # id: (argv builder (case, monkeypatch) -> argv, words in the message)
    "png-dir . (holds the input)": (_png_dir_is_cwd, ["--png-dir", "is not empty", "--overwrite"]),
    "png-dir = input frame folder": (
        lambda c, m: c.track("--png-dir", str(c.frames_dir), "--overwrite"),
        ["is one of the inputs"],
    ),
    "png-dir holds --output": (
        lambda c, m: c.track("--png-dir", str(_mkdir(c.out_dir / "png")), output=c.out_dir / "png" / "o.seg.nrrd"),
        ["--png-dir"],
    ),
    "png-dir holds --overlay": (
        lambda c, m: c.track("--png-dir", str(c.out_dir), "--overlay", str(c.out_dir / "o.mp4"), "--overwrite"),
        ["lies inside --png-dir"],
    ),
    "png-dir is a file": (
        lambda c, m: c.track("--png-dir", str(c.prompts_file)),
        ["is a file, not a folder"],
    ),
    "png-dir in a missing folder": (
        lambda c, m: c.track("--png-dir", str(c.root / "nowhere" / "png")),
        ["does not exist", "create it first"],
    ),
    "png-dir not empty": (
        lambda c, m: c.track("--png-dir", str(c.inp)),
        ["is not empty", "--overwrite"],
    ),
    "png-dir holds a mask prompt named like a label PNG": (
        lambda c, m: _mask_prompt_in(c, "00000.png") + ["--png-dir", str(c.inp / "masks"), "--overwrite"],
        ["holds the input", "would replace"],
    ),
    "overlay = input video": (
        lambda c, m: _video_input(c) + ["--overlay", str(c.inp / "clip.mp4"), "--overwrite"],
        ["is one of the inputs"],
    ),
    "overlay = prompts file": (
        lambda c, m: c.track("--overlay", str(c.prompts_file), "--overwrite"),
        ["--overlay", "must end in .mp4"],
    ),
    "output = symlink to the input video": (
        lambda c, m: _video_input(c, output=_link(c.out_dir / "o.seg.nrrd", c.inp / "clip.mp4")) + ["--overwrite"],
        ["is one of the inputs"],
    ),
    "output exists": (
        lambda c, m: c.track(output=_touch(c.out_dir / "old.seg.nrrd")),
        ["already exists", "--overwrite"],
    ),
    "output is a folder": (
        lambda c, m: c.track(output=_mkdir(c.out_dir / "x.seg.nrrd")),
        ["is an existing folder"],
    ),
    "output wrong suffix": (
        lambda c, m: c.track(output=c.out_dir / "o.nrrd"),
        ["must end in .seg.nrrd"],
    ),
    "output in a missing folder": (
        lambda c, m: c.track(output=c.root / "missing" / "o.seg.nrrd"),
        ["does not exist"],
    ),
    "output is a FIFO": (
        lambda c, m: c.track("--overwrite", output=_fifo(c.out_dir / "f.seg.nrrd")),
        ["not a regular file"],
    ),
    "overlay wrong suffix": (
        lambda c, m: c.track("--overlay", str(c.out_dir / "o.gif")),
        ["must end in .mp4 or .mkv or .mov"],
    ),
    "overlay in a missing folder": (
        lambda c, m: c.track("--overlay", str(c.root / "missing" / "o.mp4")),
        ["does not exist"],
    ),
    "png-dir = output": (
        lambda c, m: c.track("--png-dir", str(c.out_dir / "o.seg.nrrd")),
        ["are the same path"],
    ),
}


def _touch(path: Path) -> Path:
    path.write_bytes(b"old results")
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _link(path: Path, target: Path) -> Path:
    path.symlink_to(target)
    return path


def _video_input(case, output=None) -> list[str]:
    from sam2sapp.visualize import write_video

    video = case.inp / "clip.mp4"
    if not video.exists():
        frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(case.frames_dir.iterdir())]
        write_video(video, frames, fps=5)
    return [
        "track",
        str(video),
        "--prompts",
        str(case.prompts_file),
        "--output",
        str(output or case.out_dir / "o.seg.nrrd"),
    ] + [
        "--engine",
        "flow",
        "--quiet",
    ]


def _mask_prompt_in(case, name: str) -> list[str]:
    masks = case.inp / "masks"
    masks.mkdir()
    mask = np.zeros((32, 40), np.uint8)
    mask[8:20, 8:20] = 255
    Image.fromarray(mask).save(masks / name)
    prompts = case.inp / "mask_prompts.json"
    prompts.write_text(json.dumps({"objects": [{"id": 1, "prompts": [{"frame": 0, "mask": f"masks/{name}"}]}]}))
    return ["track", str(case.frames_dir), "--prompts", str(prompts), "--output", str(case.out_dir / "o.seg.nrrd")] + [
        "--engine",
        "flow",
        "--quiet",
    ]


@pytest.mark.parametrize("name", list(OUTPUT_CASES))
def test_bad_output_paths_are_refused_before_any_work(case, capsys, monkeypatch, name):
    build, words = OUTPUT_CASES[name]
    argv = build(case, monkeypatch)
    refused(case, capsys, argv, *words)


def test_read_only_output_folder_is_refused_before_tracking(case, capsys):
    os.chmod(case.out_dir, 0o555)
    try:
        with file_permissions_apply():
            refused(case, capsys, case.track(), "cannot create files", "Permission denied")
            refused(case, capsys, case.track("--png-dir", str(case.out_dir / "png")), "cannot create files")
    finally:
        os.chmod(case.out_dir, 0o755)


def test_read_only_existing_png_dir_is_refused_even_with_overwrite(case, capsys):
    png = case.out_dir / "png"
    png.mkdir()
    (png / "00000.png").write_bytes(b"old label")
    os.chmod(png, 0o555)
    try:
        with file_permissions_apply():
            refused(case, capsys, case.track("--png-dir", str(png), "--overwrite"), "cannot create files", str(png))
    finally:
        os.chmod(png, 0o755)


def test_demo_output_dir_that_is_a_file(case, capsys):
    target = _touch(case.out_dir / "demo")
    refused(case, capsys, ["demo", "--output-dir", str(target), "--engine", "flow"], "is a file")


# ------------------------------------------------------------------------------------------ models, devices
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A sam2.1_hiera_t checkpoint with random weights (image size does not change the keys)."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"model": random_model("sam2.1_hiera_t", 64).state_dict()}, path)
    return path


def _broken_video_input(case) -> list[str]:
    """A frame folder whose third image is truncated: only found while importing. A case that
    reports its own error with this input proves it was checked before the import."""
    data = (case.frames_dir / "00002.png").read_bytes()
    (case.frames_dir / "00002.png").write_bytes(data[: len(data) // 2])
    return [
        "track",
        str(case.frames_dir),
        "--prompts",
        str(case.prompts_file),
        "--output",
        str(case.out_dir / "o.seg.nrrd"),
        "--quiet",
    ]


def _sam1_checkpoint(path: Path) -> Path:
    torch.save({"model": {"image_encoder.blocks.0.attn.qkv.weight": torch.zeros(3, 3)}}, path)
    return path


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/sam2s-faults-pwned",))


def _code_pickle(path: Path) -> Path:
    import pickle

    with open(path, "wb") as f:
        pickle.dump({"model": _Evil()}, f, protocol=2)
    return path


MODEL_CASES = {
    "checkpoint of another config": (
        lambda c, ck: ["--checkpoint", str(ck), "--model", "sam2.1_hiera_s", "--image-size", "64"],
        ["does not fit model config 'sam2.1_hiera_s'", "sam2.1_hiera_t"],
    ),
    "truncated checkpoint": (
        lambda c, ck: ["--checkpoint", str(_truncated(ck, c.root / "t.pt")), "--image-size", "64"],
        ["truncated"],
    ),
    "SAM 1 checkpoint": (
        lambda c, ck: ["--checkpoint", str(_sam1_checkpoint(c.root / "sam1.pt")), "--image-size", "64"],
        ["SAM (v1)"],
    ),
    "checkpoint with code": (
        lambda c, ck: ["--checkpoint", str(_code_pickle(c.root / "evil.pt")), "--image-size", "64"],
        ["posix.system"],
    ),
    "cuda without CUDA": (
        lambda c, ck: ["--checkpoint", str(ck), "--image-size", "64", "--device", "cuda"],
        ["CUDA", "cpu"],
    ),
    "unknown device": (
        lambda c, ck: ["--checkpoint", str(ck), "--device", "tpu9"],
        ["--device: unknown device", "cuda:N"],
    ),
    "image size not a multiple of 32": (lambda c, ck: ["--image-size", "100"], ["--image-size: image size 100"]),
    "unknown model": (lambda c, ck: ["--model", "sam3_huge"], ["--model: Unknown model config", "sam2.1_hiera_t"]),
    "missing checkpoint file": (lambda c, ck: ["--checkpoint", str(c.root / "none.pt")], ["no such file"]),
    "engine sam2 without a checkpoint": (lambda c, ck: ["--engine", "sam2"], ["sam2s download sam2.1_hiera_t"]),
}


def _truncated(source: Path, path: Path) -> Path:
    path.write_bytes(source.read_bytes()[:4096])
    return path


@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_model_checkpoint_and_device_errors_come_before_the_import(case, capsys, tiny_checkpoint, name):
    build, words = MODEL_CASES[name]
    argv = _broken_video_input(case) + build(case, tiny_checkpoint)
    err = refused(case, capsys, argv, *words)
    assert "00002.png" not in err  # the broken frame was never reached: checked first
    assert not Path("/tmp/sam2s-faults-pwned").exists()


def test_the_broken_frame_itself_is_a_clean_error(case, capsys):
    err = refused(case, capsys, _broken_video_input(case) + ["--engine", "flow"], "00002.png")
    assert "Cannot read video" in err


# ------------------------------------------------------------------------------------------ inputs
def _nested(case) -> list[str]:
    case.prompts_file.write_text("[" * 100_000)
    return case.track()


def _bomb_mask(case) -> list[str]:
    masks = case.inp / "masks"
    masks.mkdir()
    Image.new("1", (30_000, 30_000)).save(masks / "bomb.png")
    case.prompts_file.write_text(
        json.dumps({"objects": [{"id": 1, "prompts": [{"frame": 0, "mask": "masks/bomb.png"}]}]})
    )
    return case.track()


def _prompts(case, objects) -> list[str]:
    case.prompts_file.write_text(json.dumps({"objects": objects}))
    return case.track()


def _unreadable_folder(case) -> list[str]:
    os.chmod(case.frames_dir, 0)
    return case.track()


INPUT_CASES = {
    "deeply nested prompts JSON": (_nested, ["nested more than 64 levels"]),
    "decompression-bomb mask PNG": (_bomb_mask, ["bomb.png"]),
    "object id 300": (
        lambda c: _prompts(c, [{"id": 300, "prompts": [{"frame": 0, "box": [7, 7, 21, 21]}]}]),
        ["1..254"],
    ),
    "object id 0": (lambda c: _prompts(c, [{"id": 0, "prompts": [{"frame": 0, "box": [7, 7, 21, 21]}]}]), ["id"]),
    "object id 1e20": (
        lambda c: _prompts(c, [{"id": 10**20, "prompts": [{"frame": 0, "box": [7, 7, 21, 21]}]}]),
        ["21 digits", "at most 19"],
    ),
    "two boxes on one frame": (
        lambda c: _prompts(
            c, [{"id": 1, "prompts": [{"frame": 0, "box": [7, 7, 21, 21]}, {"frame": 0, "box": [1, 1, 5, 5]}]}]
        ),
        ["box"],
    ),
    "flow start after every prompt": (lambda c: c.track("--start", "2"), ["prompted on frames [0]"]),
    "start after end": (lambda c: c.track("--start", "3", "--end", "1"), ["--start/--end 3..1"]),
    "video is a FIFO": (
        lambda c: [
            "track",
            str(_fifo(c.inp / "pipe.mp4")),
            "--prompts",
            str(c.prompts_file),
            "--output",
            str(c.out_dir / "o.seg.nrrd"),
        ],
        ["named pipe"],
    ),
    "video missing": (
        lambda c: [
            "track",
            str(c.inp / "nope.mp4"),
            "--prompts",
            str(c.prompts_file),
            "--output",
            str(c.out_dir / "o.seg.nrrd"),
        ],
        ["does not exist"],
    ),
    "prompts file missing": (
        lambda c: [
            "track",
            str(c.frames_dir),
            "--prompts",
            str(c.inp / "none.json"),
            "--output",
            str(c.out_dir / "o.seg.nrrd"),
        ],
        ["does not exist"],
    ),
}


@pytest.mark.parametrize("name", list(INPUT_CASES))
def test_bad_inputs_exit_2_with_a_message(case, capsys, name):
    build, words = INPUT_CASES[name]
    refused(case, capsys, build(case), *words)


def test_unreadable_frame_folder(case, capsys):
    argv = _unreadable_folder(case)
    try:
        with file_permissions_apply():
            refused(case, capsys, argv, str(case.frames_dir), "permission")
    finally:
        os.chmod(case.frames_dir, 0o755)


def test_a_long_video_tracks_within_an_address_space_limit(tmp_path, fork_server):
    """``sam2s track`` streams: 200 frames of 1600x1200 (1.1 GB of RGB voxels) are tracked and written
    as a .seg.nrrd and label PNGs under a real address-space limit (RLIMIT_AS, in a forked child)
    of 1.2 GiB more than the forked server holds, which the import of the whole video into a Slicer
    volume (the path before the one stream) exceeded and refused with exit 2."""
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.new("RGB", (1600, 1200), (90, 60, 40)).save(frames / "00000.jpg", quality=50)
    for t in range(1, 200):  # 200 frames of 1600x1200: 1.1 GB of RGB voxels, 20 KB of files
        os.link(frames / "00000.jpg", frames / f"{t:05d}.jpg")
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"objects": [{"id": 1, "prompts": [{"frame": 0, "box": [10, 10, 200, 200]}]}]}))
    out = tmp_path / "out"
    out.mkdir()
    argv = ["track", str(frames), "--prompts", str(prompts), "--output", str(out / "o.seg.nrrd")]
    argv += ["--png-dir", str(out / "png"), "--engine", "flow", "--quiet", "--end", "3"]
    result = fork_server.run(argv, watch=out, rlimit_as_extra=1200 * 2**20, timeout=600)
    assert result["exit"] == 0, result["stderr"][-2000:]
    assert len(list((out / "png").glob("*.png"))) == 200
    seg = readSegmentation(str(out / "o.seg.nrrd"), skipVoxels=True)
    assert [s["name"] for s in seg["segments"]] == ["object 1"]


# ------------------------------------------------------------------------------------------ eval
def _labels(folder: Path, frames: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in frames.items():
        Image.fromarray(array).save(folder / name)
    return folder


def _square(x: int, value: int = 1) -> np.ndarray:
    a = np.zeros((32, 40), np.uint8)
    a[8:20, x : x + 12] = value
    return a


def test_eval_exclude_by_frame_number(tmp_path, capsys):
    gt = _labels(tmp_path / "gt", {"00000.png": _square(5), "00010.png": _square(10)})
    pred = _labels(tmp_path / "pred", {"00000.png": _square(25), "00010.png": _square(10)})
    assert cli.main(["eval", str(pred), str(gt), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["J&F"] < 0.75  # frame 0 is wrong
    for exclude in ("0", "00000", "00000.png"):
        assert cli.main(["eval", str(pred), str(gt), "--json", "--exclude", exclude]) == 0
        res = json.loads(capsys.readouterr().out)
        assert res["frames"] == ["00010.png"] and res["J&F"] == pytest.approx(1.0)


def test_eval_without_any_matching_prediction(tmp_path, capsys):
    gt = _labels(tmp_path / "gt", {"00000.png": _square(5), "00010.png": _square(10)})
    pred = _labels(tmp_path / "pred", {"frame_0.png": _square(5)})
    before = snapshot(tmp_path)
    assert cli.main(["eval", str(pred), str(gt)]) == 2
    err = capsys.readouterr().err
    assert "No prediction" in err and "00000.png" in err and "named like the ground truth" in err
    assert changed(before, tmp_path) == []


def test_eval_reports_missing_predictions_per_object(tmp_path, capsys):
    two = _square(5) + _square(25, 2)
    gt = _labels(tmp_path / "gt", {"00000.png": two, "00010.png": _square(5), "00020.png": _square(25, 2)})
    pred = _labels(tmp_path / "pred", {"00000.png": two, "00010.png": _square(5)})
    assert cli.main(["eval", str(pred), str(gt)]) == 0
    captured = capsys.readouterr()
    assert "object 2: no prediction file for 1 of its annotated frames (00020.png)" in captured.err
    assert "object 1" not in captured.err


def test_eval_label_out_of_range(tmp_path, capsys):
    gt = _labels(tmp_path / "gt", {"00000.png": _square(5)})
    pred = _labels(tmp_path / "pred", {"00000.png": _square(5).astype(np.uint16) * 300})
    assert cli.main(["eval", str(pred), str(gt)]) == 2
    assert "255" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ download
def test_download_while_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # the discard port: connection refused
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    before = snapshot(tmp_path)
    assert cli.main(["download", "sam2.1_hiera_t", "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Could not reach") and "offline" in err and "Traceback" not in err
    assert changed(before, tmp_path) == [] and not list((tmp_path / "cache").glob("*.part-*"))


def test_download_unknown_name(capsys):
    assert cli.main(["download", "sam9"]) == 2
    assert "Unknown checkpoint 'sam9'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ overwrite and modes
def test_overwrite_replaces_only_label_files(case, capsys):
    png = case.out_dir / "png"
    png.mkdir()
    (png / "notes.txt").write_text("my notes")
    (png / "00000.png").write_bytes(b"old label")
    (png / "00099.png").write_bytes(b"stale label of an earlier, longer run")
    (png / "sub").mkdir()
    (png / "sub" / "00001.png").write_bytes(b"not in the folder itself")
    before = snapshot(case.root)
    refused(case, capsys, case.track("--png-dir", str(png)), "is not empty")
    code, err = case.run(case.track("--png-dir", str(png), "--overwrite"), capsys)
    assert code == 0, err
    assert changed(before, case.root) == ["out/png/00000.png", "out/png/00099.png"]  # added: provenance.json
    assert sorted(p.name for p in png.iterdir()) == [
        "00000.png",
        "00001.png",
        "00002.png",
        "00003.png",
        "notes.txt",
        "provenance.json",
        "sub",
    ]
    assert temporaries(case.root) == []


def test_rerun_with_overwrite_swaps_its_own_folder(case, capsys):
    png = case.out_dir / "png"
    assert case.run(case.track("--png-dir", str(png)), capsys)[0] == 0
    first = snapshot(png)
    (png / "00007.png").write_bytes(b"stale")
    inode = png.stat().st_ino
    assert case.run(case.track("--png-dir", str(png), "--overwrite"), capsys)[0] == 0
    assert snapshot(png) == first  # the same 4 files again, the stale one gone
    assert png.stat().st_ino != inode  # a new folder swapped in atomically (renameat2 exchange)
    assert temporaries(case.root) == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_modes_of_the_umask(case, capsys, umask):
    old = os.umask(umask)
    try:
        code, err = case.run(
            case.track("--png-dir", str(case.out_dir / "png"), "--overlay", str(case.out_dir / "o.mp4")), capsys
        )
    finally:
        os.umask(old)
    assert code == 0, err
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    for name in ("o.seg.nrrd", "o.mp4", "png/00000.png", "png/00003.png"):
        assert (case.out_dir / name).stat().st_mode & 0o777 == file_mode, name
    assert (case.out_dir / "png").stat().st_mode & 0o777 == dir_mode


# ------------------------------------------------------------------------------------------ disk full
@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 64 KiB mounted for the test (needs root, as CI runs)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def _fill(folder: Path, leave: int) -> None:
    """Fill ``folder`` (a tmpfs) until about ``leave`` bytes are free."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    (folder / "filler").write_bytes(b"\0" * max(0, free - leave))


def test_disk_full_while_writing_label_pngs(case, capsys, small_disk):
    """The label PNGs fill their disk while the stream runs: one line, exit 1; the .seg.nrrd (on
    another disk, written after the last frame) is not started, and nothing is left behind: no
    staging folder, lock or temporary labelmap."""
    _fill(small_disk, 4 * 4096)  # room for the lock file and the staging folder, not for every PNG
    (small_disk / "keep.txt").write_text("mine")
    before = snapshot(case.root)
    argv = case.track("--png-dir", str(small_disk / "png"))
    code, err = case.run(argv, capsys)
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "No space left on device" in err and "png" in err and "written completely" not in err, err
    assert changed(before, case.root) == [] and added(before, case.root) == []


def test_disk_full_while_writing_the_segmentation(case, capsys, small_disk):
    _fill(small_disk, 0)
    before = snapshot(case.root)
    code, err = case.run(case.track(output=small_disk / "o.seg.nrrd"), capsys)
    assert code == 1 and "Traceback" not in err and "o.seg.nrrd" in err
    assert changed(before, case.root) == [] and added(before, case.root) == []


# ------------------------------------------------------------------------------------------ kills
@pytest.fixture(scope="module")
def fork_server():
    server = ForkServer()
    yield server
    server.close()


def _outputs(folder: Path) -> dict[str, tuple]:
    return {k: v for k, v in snapshot(folder).items() if not k.startswith("user")}


SCENARIOS = {
    "new outputs": None,
    "own outputs replaced": "own",
    "shared label folder": "shared",
}


def _prepare(folder: Path, old: str | None) -> None:
    """Old outputs that differ from what the command writes, so old and new can be told apart."""
    (folder / "user.txt").write_text("the user's file next to the outputs")
    if old is None:
        return
    (folder / "o.seg.nrrd").write_bytes(b"old segmentation")
    (folder / "o.mp4").write_bytes(b"old overlay")
    png = folder / "png"
    png.mkdir()
    for t in (0, 1, 2, 3, 9):
        (png / f"{t:05d}.png").write_bytes(f"old label {t}".encode())
    if old == "shared":
        (png / "user_notes.txt").write_text("kept")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_kill_at_any_step_leaves_old_or_new_outputs(tmp_path, fork_server, scenario, signum):
    """Kill ``sam2s track`` before each file-system step of writing its outputs (found by a first,
    uninterrupted run). Each output must then be complete: the old one or the new one (see
    ``state`` for a label folder shared with other files); the user's files are untouched; after
    SIGINT nothing temporary is left; after SIGKILL the next check of the outputs (as the next run
    does) removes the temporaries or completes a committed journal."""
    from SAM2SSlicerLib.export import labelPngPattern
    from SAM2SSlicerLib.outputs import OutputSet
    from SAM2SSlicerLib.provenance import folderPattern

    frames, prompts = write_clip(tmp_path / "in")

    def fresh(name: str) -> tuple[Path, list[str]]:
        folder = tmp_path / name
        folder.mkdir()
        _prepare(folder, SCENARIOS[scenario])
        argv = ["track", str(frames), "--prompts", str(prompts), "--output", str(folder / "o.seg.nrrd")]
        argv += ["--png-dir", str(folder / "png"), "--overlay", str(folder / "o.mp4"), "--engine", "flow", "--quiet"]
        return folder, argv + (["--overwrite"] if SCENARIOS[scenario] else [])

    reference, argv = fresh("reference")
    old = _outputs(reference)
    result = fork_server.run(argv, watch=reference)
    assert result["exit"] == 0, result["stderr"]
    new, steps = _outputs(reference), result["steps"]
    assert steps >= 10

    def state(folder: Path, recovered: bool) -> None:
        """Each output is the old or the new one (absent if it did not exist before). A label folder
        shared with the user's files is replaced by a journal: until the next run completes it, each
        of its files is complete, the old or the new version."""
        now = _outputs(folder)
        for prefix in ("o.seg.nrrd", "o.mp4", "png"):
            part = {k: v for k, v in now.items() if k == prefix or k.startswith(prefix + "/")}
            part = {k: v for k, v in part.items() if ".sam2s-partial-" not in k}
            versions = [
                {k: v for k, v in version.items() if k == prefix or k.startswith(prefix + "/")}
                for version in (old, new)
            ]
            if part in versions:
                continue
            assert prefix == "png" and scenario == "shared label folder" and not recovered, (
                f"{prefix} is neither the old nor the new output: {sorted(part)}"
            )
            for name, value in part.items():
                assert value in (versions[0].get(name), versions[1].get(name)), f"{name} is incomplete"

    for k in range(1, steps + 1):
        folder, argv_k = fresh(f"kill{k}")
        user = {p: v for p, v in snapshot(folder).items() if p.startswith("user") or p == "png/user_notes.txt"}
        result = fork_server.run(argv_k, watch=folder, kill_at=k, signum=signum)
        if signum == signal.SIGKILL:
            assert result["exit"] == -signal.SIGKILL, (k, result)
        else:
            assert result["exit"] == 130, (k, result)
            assert "interrupted" in result["stderr"] and "Traceback" not in result["stderr"], (k, result)
            assert temporaries(folder) == [], (k, temporaries(folder))
        state(folder, recovered=False)
        assert all(snapshot(folder).get(p) == v for p, v in user.items()), k
        # The next run's checks clean up (temporaries of dead processes) or finish a committed journal.
        outputs = OutputSet([frames, prompts], overwrite=True)
        outputs.addFile(folder / "o.seg.nrrd", "--output", (".seg.nrrd",))
        outputs.addFolder(folder / "png", "--png-dir", folderPattern(labelPngPattern()), cli.LABEL_PNGS)
        outputs.addFile(folder / "o.mp4", "--overlay", cli.OVERLAY_SUFFIXES)
        outputs.check()
        assert temporaries(folder) == [], (k, temporaries(folder))
        state(folder, recovered=True)
        assert all(snapshot(folder).get(p) == v for p, v in user.items()), k
