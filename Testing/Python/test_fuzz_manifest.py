"""Fuzz properties of the batch manifest (issue 21, "Fuzzing in the suite"): every generated JSON or CSV
manifest either loads (``batch.load_manifest`` returns checked rows) or raises ``BatchError`` (the
documented error class), never another exception or a hang. Examples per property: ``fuzzing`` (a
few in make test, 10,000 in make fuzz). No Ray: the manifest is checked before Ray starts."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from fuzzing import counted, json_values, mutated_json, mutated_text
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from sam2s import spec
from sam2sapp import batch

pytestmark = pytest.mark.fuzz

# The folder of the manifests: a 3-frame image-folder video, a prompts file with a mask, a file video
# (its bytes are not decoded before Ray) and a checkpoint file (not loaded before Ray).
_FOLDER = tempfile.TemporaryDirectory(prefix="sam2s-fuzz-manifest-")
FOLDER = Path(_FOLDER.name)
(FOLDER / "clip" / "frames").mkdir(parents=True)
for _i in range(3):
    Image.fromarray(np.full((12, 16, 3), 50 * _i, np.uint8)).save(FOLDER / "clip" / "frames" / f"{_i:05d}.png")
Image.fromarray(np.pad(np.full((4, 6), 255, np.uint8), ((4, 4), (5, 5)))).save(FOLDER / "clip" / "mask.png")
(FOLDER / "clip" / "prompts.json").write_text(
    json.dumps({"objects": [{"id": 1, "prompts": [{"frame": 0, "mask": "mask.png"}]}]})
)
(FOLDER / "clip" / "video.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
(FOLDER / "tiny.pt").write_bytes(b"not loaded before Ray")

VALID = [
    {"video": "clip/frames", "prompts": "clip/prompts.json", "output_dir": "out/a"},
    {"video": "clip/video.mp4", "prompts": "clip/prompts.json", "output_dir": "out/b", "engine": "sam2",
     "checkpoint": "tiny.pt", "image_size": 512, "precision": "fp32", "memory": "divemem", "device": "cpu",
     "start": 0, "end": 2, "png": False, "overlay": True},
    {"video": "clip/frames", "prompts": "clip/prompts.json", "output_dir": "out/c", "model": "sam2.1_hiera_s",
     "start": "1", "png": "yes", "overlay": "0"},
]  # fmt: skip
"""A manifest whose three rows load (the JSON form; :data:`VALID_CSV` is the same as CSV)."""


def _as_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, batch.COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: json.dumps(v) if isinstance(v, bool) else v for k, v in r.items()} for r in rows)
    return out.getvalue()


VALID_CSV = _as_csv(VALID)


def _load(text: str, suffix: str) -> None:
    """Write ``text`` as the manifest ``m<suffix>`` and load it: rows that pass every check, or BatchError."""
    path = FOLDER / f"m{suffix}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        rows = batch.load_manifest(path, {"engine": "flow"})
    except batch.BatchError as err:
        assert str(err), "a BatchError without a message"
        return
    assert rows and [r.row for r in rows] == sorted({r.row for r in rows})
    for r in rows:
        assert r.video.is_absolute() and r.prompts.is_file() and r.output_dir.is_absolute()
        o = r.options
        assert set(o) == set(batch.OPTIONS)
        assert o["engine"] in ("sam2", "flow") and o["device"] in (None, "cpu", "cuda")
        assert isinstance(o["png"], bool) and isinstance(o["overlay"], bool)
        size = o["image_size"]  # None: the checkpoint's training size (ModelSpec.input_size)
        assert size is None or (size % 32 == 0 and spec.MIN_IMAGE_SIZE <= size <= spec.MAX_IMAGE_SIZE)
        for k in ("start", "end"):
            assert o[k] is None or (type(o[k]) is int and 0 <= o[k] <= batch.MAX_FRAME)
        assert o["start"] is None or o["end"] is None or o["start"] <= o["end"]
        assert batch.output_state(r.output_dir)[0] != "foreign"


def test_the_valid_manifests_load():
    for text, suffix in ((json.dumps(VALID), ".json"), (VALID_CSV, ".csv")):
        _load(text, suffix)
        assert len(batch.load_manifest(FOLDER / f"m{suffix}", {"engine": "flow"})) == 3


@given(json_values)
@counted
def test_random_json_loads_or_is_refused(doc):
    _load(json.dumps(doc), ".json")


_cells = st.sampled_from(
    ["", " ", "clip/frames", "clip/prompts.json", "tiny.pt", "out/x", "sam2", "flow", "sam2.1_hiera_s", "fp32",
     "divemem", "cpu", "cuda", "cuda:0", "true", "no", "-1", "0", "2", "512", "65", "1e3"]
)  # fmt: skip
_values = _cells | json_values | st.integers(-(2**40), 2**40)


_rows = st.builds(
    lambda video, out, cells: {"video": video, "prompts": "clip/prompts.json", "output_dir": out, **cells},
    st.sampled_from(["clip/frames", "clip/video.mp4"]),
    st.sampled_from(["out/x", "out/y"]),
    st.dictionaries(st.sampled_from([*batch.OPTIONS, "vidoe"]), _values, max_size=4),
)
"""Rows whose paths are valid and whose option cells (at most 4) are random."""


@given(st.lists(_rows, min_size=1, max_size=2))
@counted
def test_rows_of_random_option_values_load_or_are_refused(rows):
    _load(json.dumps(rows), ".json")


@given(mutated_json(VALID))
@counted
def test_near_valid_json_manifests_load_or_are_refused(doc):
    _load(json.dumps(doc), ".json")


@given(mutated_text(json.dumps(VALID, indent=1)))
@counted
def test_raw_text_mutations_of_a_json_manifest_load_or_are_refused(text):
    _load(text, ".json")


@given(mutated_text(VALID_CSV))
@counted
def test_raw_text_mutations_of_a_csv_manifest_load_or_are_refused(text):
    _load(text, ".csv")


_csv_cells = _cells | st.sampled_from([*batch.COLUMNS, '"', '""', "a,b", "\x00", "9" * 5000]) | st.text(max_size=8)


@given(
    st.lists(st.lists(_csv_cells, max_size=6), max_size=5).map(lambda rows: "\n".join(",".join(r) for r in rows))
    | st.text(max_size=200)
)
@counted
def test_random_csv_loads_or_is_refused(text):
    _load(text, ".csv")
