"""The prompts file format (``sam2sapp.promptsfile``): reading, writing, and precise errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sam2sapp.promptsfile import (
    ObjectPrompts,
    Prompt,
    PromptsFileError,
    dump_prompts,
    load_prompts,
    parse_prompts,
    validate,
)

EXAMPLE = {
    "objects": [
        {
            "id": 1,
            "name": "gallbladder",
            "color": [0.9, 0.8, 0.1],
            "prompts": [
                {"frame": 0, "points": [[451, 137]], "labels": [1]},
                {"frame": 0, "box": [543, 230, 587, 273]},
                {"frame": 5, "mask": "masks/obj1_f5.png"},
            ],
        },
        {"id": 2, "prompts": [{"frame": 3, "points": [[10.5, 20], [30, 40]], "labels": [1, 0], "box": [0, 0, 50, 60]}]},
    ]
}
SIZE = (480, 854)  # (H, W)


def write(tmp_path, doc, name="prompts.json"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


@pytest.fixture
def example(tmp_path):
    (tmp_path / "masks").mkdir()
    mask = np.zeros(SIZE, np.uint8)
    mask[100:200, 300:420] = 255
    Image.fromarray(mask).save(tmp_path / "masks" / "obj1_f5.png")
    return write(tmp_path, EXAMPLE)


def test_load_example(example):
    objs = load_prompts(example, num_frames=10, frame_size=SIZE)
    assert [o.id for o in objs] == [1, 2]
    assert objs[0].name == "gallbladder" and objs[0].color == (0.9, 0.8, 0.1)
    assert objs[1].name == "object 2" and objs[1].color is None
    p0, p1, p2 = objs[0].prompts
    assert p0.frame == 0 and p0.points.shape == (1, 2) and p0.points.dtype == np.float64
    np.testing.assert_array_equal(p0.labels, [1])
    assert p0.box is None and p0.mask is None
    np.testing.assert_array_equal(p1.box, [543, 230, 587, 273])
    assert p2.frame == 5 and p2.mask.shape == SIZE and p2.mask.dtype == bool
    assert p2.mask.sum() == 100 * 120 and p2.mask[150, 350]
    assert p2.mask_path == example.parent / "masks" / "obj1_f5.png"
    q = objs[1].prompts[0]
    assert q.points.shape == (2, 2) and q.box is not None and list(q.labels) == [1, 0]


def test_dump_then_load_round_trip(example, tmp_path):
    objs = load_prompts(example)
    objs[1].prompts.append(Prompt(7, mask=np.eye(SIZE[0], SIZE[1], dtype=bool)))
    objs[1].prompts.append(Prompt(8, mask=~np.eye(SIZE[0], SIZE[1], dtype=bool), mask_path=Path("m/eight.png")))
    source_mask = tmp_path / "masks" / "obj1_f5.png"
    before = source_mask.stat().st_mtime_ns
    out = tmp_path / "out" / "again.json"
    out.parent.mkdir()
    dump_prompts(objs, out)
    assert source_mask.stat().st_mtime_ns == before  # the mask it was read from is referred to, not rewritten
    assert (out.parent / "m" / "eight.png").is_file()
    again = load_prompts(out, num_frames=10, frame_size=SIZE)
    assert [(o.id, o.name, o.color) for o in again] == [(o.id, o.name, o.color) for o in objs]
    for a, b in zip(again, objs):
        assert len(a.prompts) == len(b.prompts)
        for pa, pb in zip(a.prompts, b.prompts):
            assert pa.frame == pb.frame
            for key in ("points", "labels", "box", "mask"):
                va, vb = getattr(pa, key), getattr(pb, key)
                assert (va is None) == (vb is None), key
                if va is not None:
                    np.testing.assert_array_equal(va, vb)
    doc = json.loads(out.read_text())
    assert doc["objects"][0]["prompts"][0] == {"frame": 0, "points": [[451, 137]], "labels": [1]}  # integers stay
    assert doc["objects"][0]["prompts"][2]["mask"] == str(source_mask.resolve())
    assert doc["objects"][1]["prompts"][1]["mask"] == "masks/obj2_f7.png"
    assert doc["objects"][1]["prompts"][2]["mask"] == "m/eight.png"
    # dumping next to the original: paths stay relative
    dump_prompts(load_prompts(example), tmp_path / "copy.json")
    assert json.loads((tmp_path / "copy.json").read_text())["objects"][0]["prompts"][2]["mask"] == "masks/obj1_f5.png"


def test_real_prompts_file(shared_data):
    objs = load_prompts(shared_data / "prompts.json", num_frames=127, frame_size=SIZE)
    assert [(o.id, o.name) for o in objs] == [(1, "gallbladder"), (2, "cystic artery")]


def test_mask_pngs_nonzero_is_object(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1, 2] = (0, 0, 7)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    pal = Image.fromarray(np.array([[0, 1], [2, 0]], np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    pal.save(tmp_path / "pal.png")
    doc = {"objects": [{"id": 1, "prompts": [{"frame": 0, "mask": "rgb.png"}, {"frame": 1, "mask": "pal.png"}]}]}
    objs = load_prompts(write(tmp_path, doc))
    assert objs[0].prompts[0].mask.sum() == 1 and objs[0].prompts[0].mask[1, 2]
    np.testing.assert_array_equal(objs[0].prompts[1].mask, [[False, True], [True, False]])


def obj(**prompt):
    return {"objects": [{"id": 1, "prompts": [{"frame": 0, **prompt}]}]}


BAD = [
    # (document, load_prompts kwargs, words the message must contain)
    ('{"objects": [\n  {"id": 1,,}]}', {}, ["not valid JSON", "line 2", "column"]),
    ({}, {}, ['missing "objects"']),
    ({"objects": []}, {}, ["non-empty list"]),
    (
        {"objects": [{"id": 1, "prompts": [{"frame": 0, "box": [0, 0, 5, 5]}]}] * 2},
        {},
        ["objects[1]", "duplicate id 1"],
    ),
    ({"objects": [{"id": 0, "prompts": []}]}, {}, ["objects[0]", '"id"', "1..254", "0 is the background"]),
    ({"objects": [{"id": 255, "prompts": []}]}, {}, ["objects[0]", '"id"', "1..254", "255 marks void"]),
    ({"objects": [{"id": 300, "prompts": []}]}, {}, ['"id"', "1..254", "8-bit label PNGs"]),
    ({"objects": [{"id": -1, "prompts": []}]}, {}, ['"id"', "1..254"]),
    ({"objects": [{"id": 1e20, "prompts": []}]}, {}, ['"id"', "integer id in 1..254"]),
    ({"objects": [{"id": "1", "prompts": []}]}, {}, ["integer id in 1..254"]),
    ({"objects": [{"id": True, "prompts": []}]}, {}, ["integer id in 1..254"]),
    ({"objects": [{"id": 1, "prompts": []}]}, {}, ['"prompts"', "non-empty list"]),
    ({"objects": [{"id": 1, "colour": [1, 0, 0], "prompts": []}]}, {}, ['"colour"', 'did you mean "color"']),
    ({"objects": [{"id": 1, "color": [1, 0], "prompts": []}]}, {}, ['"color"', "3 numbers", "0..1"]),
    ({"objects": [{"id": 1, "color": [0.5, 2, 0], "prompts": []}]}, {}, ['"color"', "0..1"]),
    (obj(pionts=[[1, 2]], labels=[1]), {}, ["prompts[0]", '"pionts"', 'did you mean "points"']),
    (obj(), {}, ["prompts[0]", "empty prompt"]),
    (obj(points=[[1, 2, 3]], labels=[1]), {}, ['"points"', "(N, 2)"]),
    (obj(points=[[1, 2]]), {}, ['missing "labels"']),
    (obj(points=[[1, 2], [3, 4]], labels=[1]), {}, ['"labels"', "1 labels for 2 points"]),
    (obj(points=[[1, 2]], labels=[2]), {}, ['"labels"', "0/1"]),
    (obj(labels=[1]), {}, ['"labels" without "points"']),
    (obj(box=[1, 2, 3]), {}, ['"box"', "4 numbers"]),
    (obj(box=[5, 2, 5, 8]), {}, ['"box"', "x0 < x1"]),
    ({"objects": [{"id": 1, "prompts": [{"frame": 1.5, "box": [0, 0, 5, 5]}]}]}, {}, ['"frame"', "integer"]),
    ({"objects": [{"id": 1, "prompts": [{"frame": -1, "box": [0, 0, 5, 5]}]}]}, {}, ['"frame"', "non-negative"]),
    ({"objects": [{"id": 1, "prompts": [{"box": [0, 0, 5, 5]}]}]}, {}, ['missing "frame"']),
    (
        {"objects": [{"id": 1, "prompts": [{"frame": 10, "box": [0, 0, 5, 5]}]}]},
        {"num_frames": 10},
        ["out of range", "10 frames"],
    ),
    (obj(points=[[900, 2]], labels=[1]), {"frame_size": SIZE}, ['"points"', "outside the 854x480 frame"]),
    (obj(box=[0, 0, 10, 481]), {"frame_size": SIZE}, ['"box"', "outside"]),
    (obj(mask="nope.png"), {}, ['"mask"', "does not exist"]),
    (obj(mask="garbage.png"), {}, ['"mask"', "cannot read"]),
    (obj(mask="small.png"), {"frame_size": SIZE}, ['"mask"', "is 5x4 (W x H) but the frames are 854x480"]),
    (obj(mask=3), {}, ['"mask"', "path"]),
    (
        {"objects": [{"id": 1, "prompts": [{"frame": 2, "box": [0, 0, 5, 5]}, {"frame": 2, "box": [1, 1, 6, 6]}]}]},
        {},
        [
            "prompts[1]",
            '"box"',
            'a second "box" for frame 2',
            "prompts[0] already gives",
            "one box per object and frame",
        ],
    ),
    (
        {"objects": [{"id": 1, "prompts": [{"frame": 0, "mask": "small.png"}, {"frame": 0, "mask": "small.png"}]}]},
        {},
        ["prompts[1]", '"mask"', 'a second "mask" for frame 0', "one mask per object and frame"],
    ),
    ("[" * 100_000, {}, ["nested more than 64 levels deep", '{"objects": [{"id": 1, "prompts"']),
    # issue 21 item 7: numbers that crashed the reader with a traceback
    (obj(box=[0, 0, 2**1024, 5]), {}, ["the integer 1797", "309 digits", "line 1", "at most 19"]),
    (obj(points=[[2**1024, 1]], labels=[1]), {}, ["the integer 1797", "309 digits"]),
    ('{"objects": [{"id": 1, "prompts": [{"frame": ' + "7" * 4301 + "}]}]}", {}, ["4301 digits", "line 1"]),
    ('{"objects": [{"id": 1, "prompts": [{"frame": 0, "box": [0, 0, NaN, 5]}]}]}', {}, ["NaN is not a JSON number"]),
    ('{"objects": [{"id": 1, "prompts": [{"frame": 0, "box": [0, 0, 1e999, 5]}]}]}', {}, ["1e999", "too large"]),
    ({"objects": [{"id": 1, "prompts": [{"frame": 0, "box": [0, 0, 5, 5]}]}], "extra": 1}, {}, ['unknown key "extra"']),
]


@pytest.mark.parametrize("doc, kwargs, words", BAD, ids=[w[-1] for _, _, w in BAD])
def test_invalid_files_name_the_place_and_the_expectation(tmp_path, doc, kwargs, words):
    (tmp_path / "garbage.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "small.png")
    path = write(tmp_path, doc)
    with pytest.raises(PromptsFileError) as err:
        load_prompts(path, **kwargs)
    msg = str(err.value)
    assert msg.startswith(str(path)), msg
    for w in words:
        assert w in msg, (w, msg)
    if isinstance(doc, dict) and "prompts[0]" in words:
        assert "objects[0] (id 1): prompts[0]" in msg


def test_missing_file_and_error_type(tmp_path):
    with pytest.raises(PromptsFileError, match="does not exist"):
        load_prompts(tmp_path / "none.json")
    assert issubclass(PromptsFileError, ValueError)


def test_validate_objects_built_in_code():
    good = [ObjectPrompts(3, "tool", None, [Prompt(2, points=np.array([[1.0, 2.0]]), labels=np.array([1]))])]
    validate(good, num_frames=3, frame_size=(10, 10))
    with pytest.raises(PromptsFileError, match="out of range"):
        validate(good, num_frames=2)
    with pytest.raises(PromptsFileError, match="outside"):
        validate(good, frame_size=(1, 1))
    with pytest.raises(PromptsFileError, match=r"objects\[1\] \(id 3\).*duplicate"):
        validate(good * 2)
    with pytest.raises(PromptsFileError, match="expected 1 labels"):
        validate([ObjectPrompts(1, "a", None, [Prompt(0, points=np.zeros((1, 2)), labels=np.zeros(2))])])


def test_validate_refuses_ids_outside_1_to_254_and_second_box_or_mask():
    def one(oid, prompts=None):
        return [ObjectPrompts(oid, "o", None, prompts or [Prompt(0, box=np.array([0.0, 0, 4, 4]))])]

    validate(one(1))
    validate(one(254))
    for bad in (0, -1, 255, 300, 10**20):
        with pytest.raises(PromptsFileError, match=r"integer id in 1\.\.254.*0 is the background and 255"):
            validate(one(bad))
    two_boxes = [Prompt(3, box=np.array([0.0, 0, 4, 4])), Prompt(3, box=np.array([1.0, 1, 5, 5]))]
    with pytest.raises(PromptsFileError, match=r'prompts\[1\]: "box": a second "box" for frame 3'):
        validate(one(1, two_boxes))
    two_masks = [Prompt(3, mask=np.ones((4, 4), bool)), Prompt(3, mask=np.zeros((4, 4), bool))]
    with pytest.raises(PromptsFileError, match='a second "mask" for frame 3'):
        validate(one(1, two_masks))


def test_points_of_several_prompts_on_a_frame_merge_and_a_mask_may_join_them(tmp_path):
    """Points from several prompts on one frame are all kept (in file order); a mask plus points
    plus a box on one frame is allowed (the clicks and the box refine the mask)."""
    Image.fromarray(np.eye(6, 8, dtype=np.uint8) * 255).save(tmp_path / "m.png")
    doc = {
        "objects": [
            {
                "id": 7,
                "prompts": [
                    {"frame": 4, "points": [[1, 2]], "labels": [1]},
                    {"frame": 1, "mask": "m.png"},
                    {"frame": 4, "points": [[3, 4], [5, 1]], "labels": [0, 1], "box": [0, 0, 6, 5]},
                    {"frame": 1, "points": [[2, 2]], "labels": [1]},
                    {"frame": 1, "box": [1, 1, 7, 5]},
                ],
            }
        ]
    }
    (obj,) = load_prompts(write(tmp_path, doc), num_frames=5, frame_size=(6, 8))
    assert [p.frame for p in obj.prompts] == [4, 1, 4, 1, 1]  # all kept, in file order
    np.testing.assert_array_equal(obj.prompts[1].mask, np.eye(6, 8, dtype=bool))
    np.testing.assert_array_equal(obj.prompts[2].labels, [0, 1])


def test_mask_png_of_another_size_is_refused_from_its_header(tmp_path):
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "small.png")
    path = write(tmp_path, obj(mask="small.png"))
    with pytest.raises(PromptsFileError, match=r"small\.png is 5x4 \(W x H\) but the frames are 8x6; save the mask"):
        load_prompts(path, frame_size=(6, 8))
    assert load_prompts(path)[0].prompts[0].mask.shape == (4, 5)  # size unknown: read, checked later


@pytest.mark.parametrize("prompt", [{"box": [0, 0, 2**1024, 5]}, {"points": [[1, -(2**1024)]], "labels": [1]}])
def test_decoded_documents_with_integers_beyond_a_float_are_refused_not_crashed(prompt):
    """Issue 21 item 7: a document built in code (not read by strictjson) with an integer of
    2**1024 or more gave an OverflowError traceback; it is a PromptsFileError naming the field."""
    key = next(iter(prompt))
    with pytest.raises(PromptsFileError, match=rf'prompts\[0\]: "{key}"'):
        parse_prompts(obj(**prompt))
