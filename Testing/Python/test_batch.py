"""``sam2s batch MANIFEST`` on a real local Ray (2 CPUs, one instance for the module): clean run,
a worker killed mid-task and retried, an interrupted run resumed, bad prompts failing alone, bad
manifests, and the message without Ray."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, random_model
from faultkit import run_without
from PIL import Image
from sam2sapp import batch, cli
from sam2sapp.visualize import write_video
from SAM2SSlicerLib.provenance import readProvenance
from SAM2SSlicerLib.synthetic import SyntheticClip

ray = pytest.importorskip("ray")
slicerio = pytest.importorskip("slicerio")
av = pytest.importorskip("av")

FRAMES, H, W = 8, 48, 64


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module (start-up takes seconds); its GCS address for other drivers."""
    import logging

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def make_clip(folder: Path, seed: int, as_mp4: bool, frames: int = FRAMES) -> tuple[str, str]:
    """A synthetic video (mp4 or PNG folder) and a prompts file with a mask of each object on frame 0."""
    folder.mkdir(parents=True)
    clip = SyntheticClip(frames, H, W, num_objects=2, seed=seed)
    if as_mp4:
        write_video(folder / "video.mp4", (clip.get(i) for i in range(frames)), fps=10)
        video = "video.mp4"
    else:
        (folder / "frames").mkdir()
        for i in range(frames):
            Image.fromarray(clip.get(i)).save(folder / "frames" / f"{i:05d}.png")
        video = "frames"
    objects = []
    for k in range(2):
        Image.fromarray(clip.mask(0, k).astype(np.uint8) * 255).save(folder / f"mask{k + 1}.png")
        objects.append({"id": k + 1, "name": f"blob {k + 1}", "prompts": [{"frame": 0, "mask": f"mask{k + 1}.png"}]})
    (folder / "prompts.json").write_text(json.dumps({"objects": objects}))
    return f"{folder.name}/{video}", f"{folder.name}/prompts.json"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Four generated clips (two mp4, two PNG folders) and a random-weight SAM 2 checkpoint at 64 px."""
    root = tmp_path_factory.mktemp("batch-data")
    clips = {f"clip{i}": make_clip(root / f"clip{i}", seed=i, as_mp4=i % 2 == 0) for i in range(4)}
    (root / "clips.json").write_text(json.dumps(clips))
    torch.save({"model": random_model("sam2.1_hiera_t", 64).state_dict()}, root / "tiny.pt")
    torch.save({"model": random_model("edgetam", 256).state_dict()}, root / "edgetam.pt")  # issue 24
    return root


def clip_rows(data: Path, out: str) -> list[dict]:
    """Manifest rows of the four clips (paths relative to ``data``), outputs under ``out/``."""
    clips = json.loads((data / "clips.json").read_text())
    rows = [
        {"video": clips["clip0"][0], "prompts": clips["clip0"][1], "output_dir": f"{out}/clip0", "overlay": "true"},
        {"video": clips["clip1"][0], "prompts": clips["clip1"][1], "output_dir": f"{out}/clip1"},
        {"video": clips["clip2"][0], "prompts": clips["clip2"][1], "output_dir": f"{out}/clip2", "png": "false"},
        {"video": clips["clip3"][0], "prompts": clips["clip3"][1], "output_dir": f"{out}/clip3", "engine": "sam2",
         "checkpoint": "tiny.pt", "image_size": "64", "precision": "fp32"},
        {"video": clips["clip1"][0], "prompts": clips["clip1"][1], "output_dir": f"{out}/clip1-edgetam",
         "engine": "sam2", "model": "edgetam", "checkpoint": "edgetam.pt", "image_size": "256"},
    ]  # fmt: skip
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    columns = [c for c in batch.COLUMNS if any(c in r for r in rows)]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def check_result(folder: Path) -> dict:
    """result.json lists every other file of ``folder`` with its true SHA-256 and size, and records
    the run's provenance, the one its segmentation and label folder record too."""
    record = json.loads((folder / "result.json").read_text())
    files = tree(folder)
    assert sorted(f["path"] for f in record["files"]) == sorted(k for k in files if k != "result.json")
    for f in record["files"]:
        assert f["sha256"] == sha(files[f["path"]]) and f["bytes"] == files[f["path"]].stat().st_size
    prov = readProvenance(folder / "result.json")
    assert prov == readProvenance(folder / "masklets.seg.nrrd") and prov.promptsSha256 == sha(Path(record["prompts"]))
    if (folder / "labels").is_dir():
        assert readProvenance(folder / "labels") == prov
    return record


def staging_left(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if batch.STAGING_TAG in p.name]


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def clean(ray_cluster, data):
    """The clean run of the four clips (+ the real clip when present), shared by the tests."""
    rows = clip_rows(data, "clean")
    if (SHARED_DATA / "frames").is_dir():
        rows.append({"video": str(SHARED_DATA / "frames"), "prompts": str(SHARED_DATA / "prompts.json"),
                     "output_dir": "clean/endoscapes", "end": "3"})  # fmt: skip
    manifest = write_csv(data / "clean.csv", rows)
    t0 = time.monotonic()
    code = batch.run_batch(manifest, {"engine": "flow"}, progress=False)
    report = json.loads((data / batch.REPORT_NAME).read_text())
    return {"code": code, "report": report, "rows": rows, "seconds": time.monotonic() - t0}


@pytest.mark.slow  # a Ray cluster and real tracking: make test, not make test-fast
def test_clean_run_writes_every_output(clean, data):
    assert clean["code"] == 0, clean["report"]
    report = clean["report"]
    assert report["format"] == batch.REPORT_FORMAT
    assert [r["status"] for r in report["rows"]] == ["done"] * len(clean["rows"])
    assert report["counts"]["done"] == len(clean["rows"])
    for row in clean["rows"]:
        out = data / row["output_dir"]
        record = check_result(out)
        seg = slicerio.read_segmentation(str(out / "masklets.seg.nrrd"))
        if row["output_dir"].endswith("endoscapes"):
            assert record["frames"] == 127 and {s["name"] for s in seg["segments"]} == {"gallbladder", "cystic artery"}
            assert len(list((out / "labels").glob("*.png"))) == 127
            continue
        assert record["frames"] == FRAMES and [o["name"] for o in record["objects"]] == ["blob 1", "blob 2"]
        assert record["engine"] == row.get("engine", "flow")
        if "model" in row:  # the EdgeTAM row (issue 24): the model the row chose tracked it
            assert readProvenance(out / "result.json").config == row["model"] == "edgetam"
        assert all(o["frames_present"] == FRAMES for o in record["objects"])
        assert (out / "labels").is_dir() == (row.get("png") != "false")
        if row.get("png") != "false":
            labels = sorted((out / "labels").glob("*.png"))
            assert len(labels) == FRAMES and set(np.unique(np.asarray(Image.open(labels[0])))) == {0, 1, 2}
        assert (out / "overlay.mp4").is_file() == (row.get("overlay") == "true")
        if row.get("overlay") == "true":
            assert decoded(out / "overlay.mp4").shape == (FRAMES, H, W, 3)
    assert not staging_left(data / "clean")


@pytest.mark.slow  # a Ray cluster and real tracking: make test, not make test-fast
def test_killed_worker_is_retried_and_gives_the_same_outputs(clean, data):
    """SIGKILL from outside to the worker process tracking a video (found by the pid in its staging
    folder's name, and checked to be a Ray worker): Ray retries it, the outputs equal the clean run's."""
    rows = clip_rows(data, "killed")[:2]
    stale = data / "killed" / "clip1"  # an earlier incomplete run's folder: replaced
    stale.mkdir(parents=True)
    (stale / "masklets.seg.nrrd").write_bytes(b"half a file")
    manifest = write_csv(data / "killed.csv", rows)
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            for p in staging_left(data / "killed"):
                pid = int(p.name.rsplit("-", 2)[1])
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if title.startswith(b"ray::"):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.01)

    thread = threading.Thread(target=killer)
    thread.start()
    code = batch.run_batch(manifest, {"engine": "flow"}, report=data / "killed-report.json", progress=False)
    thread.join()
    assert killed, "no worker was caught mid-task"
    report = json.loads((data / "killed-report.json").read_text())
    assert code == 0 and [r["status"] for r in report["rows"]] == ["done", "done"], report
    assert sum(r.get("cleaned", 0) for r in report["rows"]) >= 1  # the retry removed the killed attempt's folder
    assert not staging_left(data / "killed")
    for row in rows:
        name = Path(row["output_dir"]).name
        new, old = tree(data / "killed" / name), tree(data / "clean" / name)
        assert sorted(new) == sorted(old)
        for rel in new:
            if rel == "result.json":
                continue
            if new[rel].read_bytes() != old[rel].read_bytes():  # a container timestamp: compare the content
                if rel.endswith(".seg.nrrd"):
                    a, b = (slicerio.read_segmentation(str(x[rel])) for x in (new, old))
                    assert np.array_equal(a["voxels"], b["voxels"]), rel  # Slicer's segment IDs are random
                    assert [x["name"] for x in a["segments"]] == [x["name"] for x in b["segments"]]
                elif rel.endswith("provenance.json"):  # the same run but for its date
                    a, b = (readProvenance(x[rel]) for x in (new, old))
                    assert dataclasses.replace(a, date=b.date) == b, rel
                else:
                    assert rel.endswith(".mp4") and np.array_equal(decoded(new[rel]), decoded(old[rel])), rel
        check_result(data / "killed" / name)


@pytest.mark.slow  # a Ray cluster and real tracking: make test, not make test-fast
def test_interrupted_run_resumes_and_skips_finished_videos(clean, data, ray_cluster, capsys):
    """Ctrl+C (SIGINT) of a `sam2s batch` process (connected with --address) once a video finished;
    the rerun skips the finished videos (files and mtimes untouched) and does the others."""
    rows = clip_rows(data, "resume")[:3]
    rows.append(dict(rows[1], video=make_clip(data / "long", 9, as_mp4=False, frames=60)[0],
                     prompts="long/prompts.json", output_dir="resume/long"))  # fmt: skip
    manifest = write_csv(data / "resume.csv", rows)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sam2sapp", "batch", str(manifest), "--address", ray_cluster, "--engine", "flow",
         "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while not list((data / "resume").glob("*/result.json")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    # The driver's exit ended its running tasks: once the cluster's CPUs are free again, the long
    # video (1.6 s of tracking) has no result, where a task left running would have written it.
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray.available_resources().get("CPU", 0) == 2
    report = json.loads((data / batch.REPORT_NAME).read_text())
    assert report["manifest"] == str(manifest)
    reported = {r["output_dir"] for r in report["rows"] if r["status"] == "done"}
    assert "interrupted" in {r["status"] for r in report["rows"]}, report
    # A task that finished just before the Ctrl+C but whose result the driver had not yet received is
    # reported "interrupted", yet its folder is complete: the folders count.
    finished = {str(p.parent) for p in (data / "resume").glob("*/result.json")}
    assert finished and reported <= finished and str(data / "resume" / "long") not in finished
    before = {d: {k: (p.stat().st_mtime_ns, sha(p)) for k, p in tree(Path(d)).items()} for d in finished}

    code = cli.main([str(x) for x in ("batch", manifest, "--engine", "flow", "--quiet")])
    assert code == 0
    table = capsys.readouterr().out
    assert "skipped" in table and "report:" in table
    report = json.loads((data / batch.REPORT_NAME).read_text())
    status = {r["output_dir"]: r["status"] for r in report["rows"]}
    assert {d for d, s in status.items() if s == "skipped"} >= finished and status[
        str(data / "resume" / "long")
    ] == "done"
    assert all(s in ("done", "skipped") for s in status.values())
    for d in finished:
        assert {k: (p.stat().st_mtime_ns, sha(p)) for k, p in tree(Path(d)).items()} == before[d]
    for row in rows:
        check_result(data / row["output_dir"])
    assert not staging_left(data / "resume")


@pytest.mark.slow  # a Ray cluster and real tracking: make test, not make test-fast
def test_bad_prompts_fail_alone(clean, data, capsys):
    clips = json.loads((data / "clips.json").read_text())
    small = data / "bad" / "small.png"
    small.parent.mkdir()
    Image.fromarray(np.ones((10, 10), np.uint8) * 255).save(small)
    (data / "bad" / "mask.json").write_text(
        json.dumps({"objects": [{"id": 1, "prompts": [{"frame": 0, "mask": "small.png"}]}]})
    )
    (data / "bad" / "point.json").write_text(
        json.dumps({"objects": [{"id": 1, "prompts": [{"frame": 0, "points": [[500, 10]], "labels": [1]}]}]})
    )
    rows = [
        {"video": clips["clip1"][0], "prompts": "bad/mask.json", "output_dir": "bad/out-mask"},
        {"video": clips["clip1"][0], "prompts": clips["clip1"][1], "output_dir": "bad/out-good"},
        {"video": clips["clip0"][0], "prompts": "bad/point.json", "output_dir": "bad/out-point"},
    ]
    manifest = write_csv(data / "bad.csv", rows)
    code = cli.main(["batch", str(manifest), "--engine", "flow", "--quiet", "--report", str(data / "bad" / "r.json")])
    assert code == 1
    table = capsys.readouterr().out
    report = json.loads((data / "bad" / "r.json").read_text())
    mask, good, point = report["rows"]
    assert good["status"] == "done" and (data / "bad" / "out-good" / "result.json").is_file()
    assert mask["status"] == "failed" and "10x10" in mask["error"] and "frame size" in mask["error"]
    assert point["status"] == "failed" and "outside the 64x48 frame" in point["error"]
    assert "failed" in table and "10x10" in table and "1 done, 2 failed" in table
    assert not (data / "bad" / "out-mask").exists() and not (data / "bad" / "out-point").exists()
    assert not staging_left(data / "bad")


@pytest.mark.parametrize(
    "row, message",
    [
        ({"vidoe": "x"}, "unknown column 'vidoe' (did you mean 'video'?)"),
        ({"video": "missing.mp4"}, "video"),
        ({"engine": "magic"}, "engine must be sam2 or flow"),
        ({"image_size": "65"}, "image size 65: give a multiple of 32 from 64 to 4096"),
        ({"png": "maybe"}, "png must be true or false"),
        ({"start": "5", "end": "2"}, "start 5 is after end 2"),
        ({"checkpoint": "nope.pt"}, "no such file"),
        ({"output_dir": "user"}, "holds notes.txt, which a batch does not write"),
    ],
)
def test_bad_manifest_is_refused_before_anything_starts(data, tmp_path, capsys, row, message):
    clips = json.loads((data / "clips.json").read_text())
    (data / "user").mkdir(exist_ok=True)
    (data / "user" / "notes.txt").write_text("mine")
    base = {"video": clips["clip1"][0], "prompts": clips["clip1"][1], "output_dir": f"m-{tmp_path.name}"}
    rows = [{**base, **row}]
    manifest = data / f"{tmp_path.name}.json"
    manifest.write_text(json.dumps(rows))
    code = cli.main(
        ["batch", str(manifest), "--engine", "flow"] if "checkpoint" not in row else ["batch", str(manifest)]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and "row 1" in err and "Traceback" not in err, err
    assert (data / "user" / "notes.txt").read_text() == "mine"
    assert not (data / f"m-{tmp_path.name}").exists()


def test_duplicate_output_folders_are_refused(data, capsys):
    clips = json.loads((data / "clips.json").read_text())
    row = {"video": clips["clip1"][0], "prompts": clips["clip1"][1], "output_dir": "dup/a"}
    manifest = write_csv(data / "dup.csv", [row, dict(row, output_dir="dup/a/"), dict(row, output_dir="dup/a/b")])
    assert cli.main(["batch", str(manifest), "--engine", "flow"]) == 2
    err = capsys.readouterr().err
    assert "row 2: output_dir" in err and "row 1's (the same folder)" in err and "row 3" in err and "nested" in err


def test_without_ray_says_how_to_install_it(data, tmp_path):
    manifest = write_csv(data / "noray.csv", clip_rows(data, "noray")[:1])
    proc = run_without(["ray"], ["-m", "sam2sapp", "batch", str(manifest)], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert 'pip install -e ".[batch]"' in proc.stderr and "Traceback" not in proc.stderr
    assert not (data / "noray").exists()
