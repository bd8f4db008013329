"""``sam2s batch``: what is refused before Ray starts (issue 21, reliability round 3): a ``--report``
over an input, inside a row's folders or over a file that is not a batch report; manifests that
gave a traceback (deep JSON, huge integers, CSV beyond the field limit, NUL bytes) or passed the
check and failed later on Ray (negative ``start``, a list for ``model``); and a row check that
lists every problem of a row. No Ray here: ``batch.import_ray`` is replaced by a stub that stops
the run, so a refusal must come before it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from faultkit import run_without
from PIL import Image
from sam2sapp import batch, cli

RAY = "ray.init would start here"


@pytest.fixture
def clip(tmp_path) -> Path:
    """``clip/frames/0000N.png`` (3 frames of 16x12), ``clip/mask1.png``, ``clip/prompts.json`` (a mask on
    frame 0), ``clip/video.mp4`` (bytes: no one decodes it before Ray), ``tiny.pt`` and ``m.csv`` with
    two rows (the frame folder into ``out/a``, the mp4 with the checkpoint into ``out/b``)."""
    folder = tmp_path / "clip"
    (folder / "frames").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((12, 16, 3), 40 * i, np.uint8)).save(folder / "frames" / f"{i:05d}.png")
    mask = np.zeros((12, 16), np.uint8)
    mask[3:8, 4:10] = 255
    Image.fromarray(mask).save(folder / "mask1.png")
    (folder / "prompts.json").write_text(
        json.dumps({"objects": [{"id": 1, "prompts": [{"frame": 0, "mask": "mask1.png"}]}]})
    )
    (folder / "video.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (tmp_path / "tiny.pt").write_bytes(b"not loaded before Ray")
    (tmp_path / "m.csv").write_text(
        "video,prompts,output_dir,engine,checkpoint\n"
        "clip/frames,clip/prompts.json,out/a,flow,\n"
        "clip/video.mp4,clip/prompts.json,out/b,sam2,tiny.pt\n"
    )
    return tmp_path


@pytest.fixture
def no_ray(monkeypatch):
    """``batch.import_ray`` stops the run with a BatchError naming :data:`RAY` (exit code 2)."""

    def stop():
        raise batch.BatchError(RAY)

    monkeypatch.setattr(batch, "import_ray", stop)


def run(capsys, *args: str | Path) -> tuple[int, list[str]]:
    """``sam2s batch ...`` in this process: the exit code and the lines of stderr."""
    code = cli.main(["batch", *map(str, args), "--quiet"])
    return code, capsys.readouterr().err.splitlines()


def refused(capsys, *args: str | Path) -> str:
    """Run ``sam2s batch ...``; it must exit 2 with an ``error:`` before Ray: one line, or a manifest's
    problems, one indented line each. Returns stderr."""
    code, err = run(capsys, *args)
    assert code == 2 and err and err[0].startswith("error: ") and not any(RAY in line for line in err), err
    assert all(line.startswith("  ") for line in err[1:]) and "Traceback" not in "\n".join(err), err
    return "\n".join(err)


# ------------------------------------------------------------------------------------- --report
@pytest.mark.parametrize(
    "report, message",
    [
        ("clip/prompts.json", "is row 1's prompts file"),
        ("m.csv", "is the manifest"),
        ("clip/frames/00001.png", "lies inside row 1's video folder"),
        ("clip/frames/report.json", "lies inside row 1's video folder"),  # a new file among the frames
        ("clip/video.mp4", "is row 2's video"),
        ("clip/mask1.png", "is a mask PNG of row 1's prompts file"),
        ("tiny.pt", "is row 2's checkpoint"),
        ("out/a/result.json", "lies inside row 1's output_dir"),
        ("out/b", "is row 2's output_dir"),
        ("out", "is a folder above row 1's output_dir"),
        ("out/.a.sam2s-batch-host-1-ab/r.json", "lies in a staging folder of row 1's output_dir"),
    ],
)
@pytest.mark.parametrize("overwrite", [False, True], ids=["", "overwrite"])
def test_report_over_an_input_or_a_row_folder_is_refused_before_ray(clip, no_ray, capsys, report, message, overwrite):
    before = {p: p.read_bytes() for p in clip.rglob("*") if p.is_file()}
    line = refused(capsys, clip / "m.csv", "--report", clip / report, *(["--overwrite"] if overwrite else []))
    assert line.startswith(f"error: --report {clip / report} {message}") and "\n" not in line, line
    assert {p: p.read_bytes() for p in clip.rglob("*") if p.is_file()} == before
    assert not (clip / "out").exists()


def test_sam2s_batch_refuses_a_report_over_the_prompts_before_importing_ray(clip, monkeypatch):
    """The real command in a process where Ray cannot be imported: the report's error comes first, alone."""
    monkeypatch.setenv("PYTHONPATH", str(Path(batch.__file__).parents[1]))  # this source tree's SAM2SSlicerLib
    report = clip / "clip" / "prompts.json"
    proc = run_without(["ray"], ["-m", "sam2sapp", "batch", str(clip / "m.csv"), "--report", str(report)], clip)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: --report {report} is row 1's prompts file; write the report elsewhere."
    ], proc.stderr
    assert json.loads(report.read_text())["objects"][0]["id"] == 1


def test_report_over_a_link_to_an_input_is_refused(clip, no_ray, capsys):
    (clip / "link.json").symlink_to(clip / "clip" / "prompts.json")
    assert "is row 1's prompts file" in refused(capsys, clip / "m.csv", "--report", clip / "link.json", "--overwrite")


def test_default_report_next_to_the_manifest_is_checked_too(clip, no_ray, capsys):
    """The manifest ``batch-report.json`` with the default report: the report would replace it."""
    manifest = clip / batch.REPORT_NAME
    manifest.write_text(json.dumps([{"video": "clip/frames", "prompts": "clip/prompts.json", "output_dir": "o"}]))
    assert "is the manifest" in refused(capsys, manifest, "--engine", "flow")


def test_report_over_an_unrelated_file_needs_overwrite(clip, no_ray, capsys):
    notes = clip / "notes.json"
    notes.write_text('{"mine": 1}')
    line = refused(capsys, clip / "m.csv", "--report", notes)
    assert "exists and is not a batch report" in line and "--overwrite" in line, line
    assert notes.read_text() == '{"mine": 1}'
    code, err = run(capsys, clip / "m.csv", "--report", notes, "--overwrite")
    assert code == 2 and err == [f"error: {RAY}"], err  # accepted: the run went on to Ray


@pytest.mark.parametrize(
    "content",
    [
        {"format": "sam2s-batch-report/1", "manifest": "m.csv", "rows": []},
        {"manifest": "m.csv", "seconds": 1.5, "counts": {"done": 1}, "rows": []},  # before the format marker
    ],
    ids=["this-format", "older"],
)
def test_an_earlier_batch_report_is_replaced_without_overwrite(clip, no_ray, capsys, content):
    """Re-running the same command (resume) replaces its own report."""
    (clip / "r.json").write_text(json.dumps(content, indent=1))
    code, err = run(capsys, clip / "m.csv", "--report", clip / "r.json")
    assert code == 2 and err == [f"error: {RAY}"], err


@pytest.mark.parametrize(
    "report, message",
    [
        ("reports.json", "is an existing folder"),
        ("nowhere/r.json", "does not exist"),
        ("r.txt", "must end in .json"),
    ],
)
def test_report_that_is_a_folder_or_has_no_folder_is_refused(clip, no_ray, capsys, report, message):
    (clip / "reports.json").mkdir()
    assert message in refused(capsys, clip / "m.csv", "--report", clip / report)


# ------------------------------------------------------------------------------------- manifests
def write_json(folder: Path, text: str) -> Path:
    (folder / "m.json").write_text(text)
    return folder / "m.json"


def row(**cells) -> dict:
    return {"video": "clip/frames", "prompts": "clip/prompts.json", "output_dir": "out/a", **cells}


def refused_manifest(manifest: Path, defaults: dict | None = None) -> str:
    """``load_manifest``'s BatchError message (the command line's defaults: ``engine`` flow)."""
    with pytest.raises(batch.BatchError) as err:
        batch.load_manifest(manifest, defaults or {"engine": "flow"})
    return str(err.value)


def test_deeply_nested_json_manifest_is_refused(clip):
    manifest = write_json(clip, "[" * 100_000 + "]" * 100_000)
    message = refused_manifest(manifest)
    assert str(manifest) in message and "nested more than 64 levels" in message, message


def test_json_integer_of_5000_digits_is_refused_with_its_place(clip):
    manifest = write_json(
        clip, '[{"video": "clip/frames", "prompts": "clip/prompts.json",\n "start": ' + "9" * 5000 + "}]"
    )
    message = refused_manifest(manifest)
    assert str(manifest) in message and "5000 digits" in message and "line 2, column 11" in message, message


@pytest.mark.parametrize(
    "cells, message",
    [
        ({"start": -3}, "start must be a whole number from 0 to 2147483647, not -3"),
        ({"end": "-1"}, "end must be a whole number from 0"),
        ({"start": 2**40}, "start must be a whole number"),
        ({"image_size": 2**20}, "image size 1048576: give a multiple of 32 from 64 to 4096"),
        ({"image_size": 0}, "image size 0: give a multiple of 32 from 64"),
        ({"start": 1.0}, "start must be a whole number"),
        ({"model": ["sam2.1_hiera_t"]}, "unknown model ['sam2.1_hiera_t']"),
        ({"engine": {"name": "flow"}}, "engine must be sam2 or flow"),
        ({"device": 0}, "device must be cpu or cuda"),
        ({"device": "cuda:1"}, "device must be cpu or cuda"),
        ({"precision": ["bf16"]}, "unknown precision ['bf16']: use auto, fp32 or bf16"),
        ({"output_dir": ["out"]}, "output_dir must be a path"),
        ({"checkpoint": 5}, "checkpoint must be a path"),
    ],
)
def test_values_that_would_fail_on_ray_are_refused(clip, cells, message):
    text = refused_manifest(write_json(clip, json.dumps([row(**cells)])))
    assert f"m.json row 1: {message}" in text, text


@pytest.mark.parametrize(
    "defaults, message",
    [
        ({"start": -3}, "--start: start must be a whole number from 0 to 2147483647, not -3."),
        ({"end": -1}, "--end: end must be a whole number from 0"),
        ({"image_size": 100_000}, "--image-size: image size 100000: give a multiple of 32 from 64 to 4096"),
        ({"device": "mps"}, "--device: device must be cpu or cuda"),
        ({"start": 5, "end": 2}, "--start/--end: start 5 is after end 2."),
    ],
)
def test_bad_command_line_defaults_are_refused_once(clip, defaults, message):
    text = refused_manifest(clip / "m.csv", defaults)
    assert text.startswith(message) and "row" not in text and "\n" not in text, text


def test_sam2s_batch_start_minus_3_exits_2_before_ray(clip, no_ray, capsys):
    line = refused(capsys, clip / "m.csv", "--start", "-3")
    assert line == "error: --start: start must be a whole number from 0 to 2147483647, not -3.", line


def test_every_problem_of_a_row_is_listed(clip):
    """Unknown and missing columns, bad values, missing files and a foreign output_dir, all at once."""
    manifest = write_json(
        clip,
        json.dumps(
            [
                {
                    "vidoe": "x",
                    "video": "nope.mp4",
                    "prompts": "nope.json",
                    "output_dir": "clip",
                    "engine": "magic",
                    "png": "maybe",
                    "start": -1,
                },
                row(output_dir="out/b"),
            ]
        ),  # fmt: skip
    )
    lines = refused_manifest(manifest).splitlines()
    assert lines[0] == f"7 problem(s) in the manifest {manifest}:", lines
    assert all(line.strip().startswith("m.json row 1: ") for line in lines[1:]), lines
    for part in (
        "unknown column 'vidoe' (did you mean 'video'?)",
        f"video {clip / 'nope.mp4'} does not exist",
        f"prompts {clip / 'nope.json'} does not exist",
        "engine must be sam2 or flow",
        "png must be true or false",
        "start must be a whole number",
        f"output_dir {clip / 'clip'} exists without a valid result.json",
    ):
        assert sum(part in line for line in lines) == 1, (part, lines)


def test_a_missing_column_and_a_bad_value_are_both_listed(clip):
    manifest = write_json(clip, json.dumps([{"video": "clip/frames", "prompts": "clip/prompts.json", "end": "x"}]))
    text = refused_manifest(manifest)
    assert "row 1: output_dir missing" in text and "row 1: end must be a whole number" in text, text


def write_csv(folder: Path, data: bytes) -> Path:
    (folder / "m.csv").write_bytes(data)
    return folder / "m.csv"


HEAD = b"video,prompts,output_dir\n"
ROW = b"clip/frames,clip/prompts.json,out/a"


@pytest.mark.parametrize(
    "data, message",
    [
        (HEAD + b"x" * 200_000 + b",p,o\n", "line 2: not valid CSV (field larger than field limit"),
        (HEAD + ROW + b"\x00b\n", "output_dir must be a path (text without NUL"),
        (HEAD + b"clip/fr\x00ames,clip/prompts.json,out/a\n", "video must be a path (text without NUL"),
        (HEAD + b"\xff\xfe,p,o\n", "Cannot read the manifest"),
        (HEAD, "no rows"),
        (b"", "empty; the first line names the columns"),
        (HEAD + ROW + b",extra,more\n", "2 cell(s) more than the header"),
        (HEAD[:-1] + b",start\n" + ROW + b"," + b"9" * 5000 + b"\n", "start must be"),
        (HEAD[:-1] + b",start\n" + ROW + b",\xd9\xa3\n", "start must be"),  # an Arabic-Indic 3
    ],
    ids=["field-limit", "nul-output", "nul-video", "not-utf8", "header-only", "empty", "more-cells", "5000-digits",
         "non-ascii-digit"],
)  # fmt: skip
def test_bad_csv_manifest_is_refused_without_traceback(clip, data, message):
    text = refused_manifest(write_csv(clip, data))
    assert message in text, text


def test_quoted_csv_cells_keep_commas_and_line_breaks(clip):
    (clip / "a,b\nc").mkdir()
    (clip / "a,b\nc" / "00000.png").write_bytes((clip / "clip" / "frames" / "00000.png").read_bytes())
    manifest = write_csv(clip, b'video,prompts,output_dir\n"a,b\nc",clip/prompts.json,out/a\n')
    (r,) = batch.load_manifest(manifest, {"engine": "flow"})
    assert r.video == clip / "a,b\nc"


def test_a_valid_json_manifest_with_every_option_loads(clip):
    manifest = write_json(
        clip,
        json.dumps(
            [
                row(
                    engine="flow",
                    model="sam2.1_hiera_s",
                    image_size=512,
                    precision="fp32",
                    memory="divemem",
                    device="cpu",
                    start=0,
                    end=2,
                    png=False,
                    overlay=True,
                )
            ]
        ),  # fmt: skip
    )
    (r,) = batch.load_manifest(manifest)
    assert r.options == {"engine": "flow", "model": "sam2.1_hiera_s", "checkpoint": None, "image_size": 512,
                         "precision": "fp32", "memory": "divemem", "device": "cpu", "start": 0, "end": 2,
                         "png": False, "overlay": True}  # fmt: skip


def test_report_written_by_another_running_batch_is_refused(clip, no_ray, capsys):
    """Another process holds the report (its ``outputs.OutputSet`` lock, as a running batch does)."""
    report = clip / "r.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from SAM2SSlicerLib.outputs import OutputSet; o = OutputSet([]); "
         f"o.addFile({str(report)!r}, '--report', ('.json',)); o.check(); print('locked', flush=True); "
         "sys.stdin.read(); o.release()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(Path(batch.__file__).parents[1])),
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = refused(capsys, clip / "m.csv", "--report", report)
        assert "is being written by another sam2s run" in line and "\n" not in line, line
    finally:
        holder.communicate("", timeout=60)
    code, err = run(capsys, clip / "m.csv", "--report", report)  # released: accepted
    assert code == 2 and err == [f"error: {RAY}"], err
