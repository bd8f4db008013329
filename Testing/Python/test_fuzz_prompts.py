"""Fuzz properties of the prompts file (issue 21, "Fuzzing in the suite"): every generated document
either loads or raises ``PromptsFileError`` (the documented error class), never another exception
or a hang. Examples per property: ``fuzzing`` (a few in make test, 10,000 in make fuzz)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from fuzzing import counted, json_values, mutated_json, mutated_text
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from sam2sapp.promptsfile import PromptsFileError, load_prompts, parse_prompts

pytestmark = pytest.mark.fuzz

FRAMES, SIZE = 6, (24, 32)  # the video the prompts are checked against: 6 frames of 32x24 (W x H)
VALID = {
    "objects": [
        {
            "id": 1,
            "name": "grasper",
            "color": [0.9, 0.8, 0.1],
            "prompts": [
                {"frame": 0, "points": [[10, 12], [3.5, 4]], "labels": [1, 0]},
                {"frame": 0, "box": [2, 3, 20, 18]},
                {"frame": 2, "mask": "masks/obj1_f2.png"},
            ],
        },
        {"id": 7, "prompts": [{"frame": 5, "box": [0, 0, 32, 24], "points": [[5, 5]], "labels": [1]}]},
    ]
}
_FOLDER = tempfile.TemporaryDirectory(prefix="sam2s-fuzz-prompts-")
FOLDER = Path(_FOLDER.name)
(FOLDER / "masks").mkdir()
Image.fromarray((np.arange(24 * 32).reshape(SIZE) % 7 == 0).astype(np.uint8) * 255).save(FOLDER / "masks/obj1_f2.png")
Image.fromarray(np.ones((5, 5), np.uint8)).save(FOLDER / "masks/small.png")  # the wrong size, for mutations


def _load(text: str) -> None:
    path = FOLDER / "prompts.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        objects = load_prompts(path, num_frames=FRAMES, frame_size=SIZE)
    except PromptsFileError:
        return
    assert objects and all(1 <= o.id <= 254 and o.prompts for o in objects)


def test_the_valid_document_loads():
    _load(json.dumps(VALID))
    assert len(load_prompts(FOLDER / "prompts.json", num_frames=FRAMES, frame_size=SIZE)) == 2


@given(json_values)
@counted
def test_random_json_loads_or_is_refused(doc):
    _load(json.dumps(doc))


@given(mutated_json(VALID))
@counted
def test_near_valid_documents_load_or_are_refused(doc):
    _load(json.dumps(doc))


@given(mutated_text(json.dumps(VALID, indent=1)))
@counted
def test_raw_text_mutations_load_or_are_refused(text):
    _load(text)


@given(
    mutated_json(VALID)
    | json_values
    | st.builds(lambda n: {"objects": [{"id": 1, "prompts": [{"frame": n}]}]}, st.integers())
)
@counted
def test_decoded_documents_parse_or_are_refused(doc):
    """``parse_prompts`` on documents built in code (big integers reach it without strictjson)."""
    try:
        parse_prompts(doc, FOLDER, "fuzz", SIZE)
    except PromptsFileError:
        pass
