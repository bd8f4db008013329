"""``sam2s track``'s one path (``sam2sapp.streaming``: the tracker's stream into sinks): the same
masks and files as the Slicer module (the headless logic tracking the same prompts and exporting
with Slicer's own writer), a disk-backed labelmap that is removed afterwards, and a streamed
``.seg.nrrd`` that Slicer's readers accept."""

from __future__ import annotations

import json

import nrrd
import numpy as np
import pytest
from conftest import random_model
from PIL import Image
from sam2s.modelspec import ModelSpec
from sam2sapp import cli, streaming
from sam2sapp.track import CliError, TrackRequest, run_tracking
from sam2sapp.visualize import write_video
from SAM2SSlicerLib import export
from SAM2SSlicerLib.outputs import OutputWriteError
from SAM2SSlicerLib.synthetic import SyntheticClip
from slicertrack import track_in_slicer

slicerio = pytest.importorskip("slicerio")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 10-frame 128x96 mp4 with 3 objects: masks on frame 3 (two of them overlap), clicks on frame 6."""
    folder = tmp_path_factory.mktemp("clip")
    source = SyntheticClip(10, 96, 128, 3, seed=1)
    write_video(folder / "video.mp4", (source.get(i) for i in range(10)), 25)
    for k in range(3):
        Image.fromarray(source.mask(3, k).astype(np.uint8) * 255).save(folder / f"m{k}.png")
    objects = [
        {"id": 1, "name": "a", "prompts": [{"frame": 3, "mask": "m0.png"}]},
        {
            "id": 5,
            "name": "b",
            "color": [0.1, 0.2, 0.3],
            "prompts": [{"frame": 3, "mask": "m1.png"}, {"frame": 6, "points": [[40.5, 30]], "labels": [1]}],
        },
        {"id": 2, "name": "c", "prompts": [{"frame": 3, "mask": "m2.png"}]},
    ]
    (folder / "prompts.json").write_text(json.dumps({"objects": objects}))
    return folder


def segment_masks(path) -> dict[str, np.ndarray]:
    """``{name: (I, J, K) bool}`` of a .seg.nrrd read with slicerio (layers resolved)."""
    seg = slicerio.read_segmentation(str(path))
    voxels = seg["voxels"]
    out = {}
    for s in seg["segments"]:
        layer = voxels[s["layer"]] if voxels.ndim == 4 else voxels
        out[s["name"]] = layer == s["labelValue"]
    return out


FLOW = ModelSpec(engine="flow", device="cpu")


def track(clip, **options) -> dict:
    return run_tracking(TrackRequest(clip / "video.mp4", clip / "prompts.json", progress=False, **options))


def run_both(clip, tmp_path, model=None, image_size=1024, end=None) -> dict:
    """``sam2s track`` into ``tmp_path / "stream"`` and the Slicer module into ``tmp_path / "slicer"``."""
    out = tmp_path / "stream"
    out.mkdir()
    spec = FLOW if model is None else ModelSpec(device="cpu", image_size=image_size)
    result = run_tracking(
        TrackRequest(clip / "video.mp4", clip / "prompts.json", out / "o.seg.nrrd", png_dir=out / "png",
                     model=spec, end=end, progress=False),
        model_object=model,
    )  # fmt: skip
    logic = track_in_slicer(clip / "video.mp4", clip / "prompts.json", tmp_path / "slicer", model=model,
                            image_size=image_size, end=end)  # fmt: skip
    try:
        rows = []
        for obj_id, sid in sorted((logic.objectIdOfSegment(s), s) for s in logic.promptedSegmentIds()):
            mask = logic.segmentMask(sid)
            areas = mask.reshape(mask.shape[0], -1).sum(axis=1)
            rows.append((obj_id, int((areas > 0).sum())))
    finally:
        logic.close()
    assert sorted((r["id"], r["frames_present"]) for r in result["objects"]) == rows
    return result


def _without_provenance(value: str) -> str:
    """A ``SegmentN_Tags`` value without the provenance tag (its date and prompts' hash differ:
    the prompts file vs the scene's prompts)."""
    return "".join(f"{t}|" for t in str(value).split("|")[:-1] if not t.startswith("SAM2S.Provenance:"))


def assert_same_files(tmp_path) -> None:
    a, b = tmp_path / "slicer", tmp_path / "stream"
    names = sorted(p.name for p in (a / "png").glob("*.png"))
    assert names == sorted(p.name for p in (b / "png").glob("*.png")) and len(names) == 10
    for name in names:
        assert (a / "png" / name).read_bytes() == (b / "png" / name).read_bytes(), name
    assert (a / "png" / "provenance.json").is_file() and (b / "png" / "provenance.json").is_file()
    ma, mb = segment_masks(a / "o.seg.nrrd"), segment_masks(b / "o.seg.nrrd")
    assert set(ma) == set(mb) == {"a", "b", "c"}
    for name in ma:
        np.testing.assert_array_equal(ma[name], mb[name], err_msg=name)
    ha, hb = nrrd.read_header(str(a / "o.seg.nrrd")), nrrd.read_header(str(b / "o.seg.nrrd"))
    assert set(ha) == set(hb)
    for key in ha:  # colours, names, layers, label values, extents, tags: as Slicer writes them
        if key.endswith("_Tags"):
            assert "SAM2S.Provenance:" in ha[key] and "SAM2S.Provenance:" in hb[key], key
            assert _without_provenance(ha[key]) == _without_provenance(hb[key]), key
        elif not key.endswith("_ID"):
            assert str(ha[key]) == str(hb[key]), key


def test_sam2s_track_equals_the_slicer_module_with_the_flow_engine(clip, tmp_path):
    run_both(clip, tmp_path)
    assert_same_files(tmp_path)


def test_sam2s_track_equals_the_slicer_module_with_sam2(clip, tmp_path):
    run_both(clip, tmp_path, model=random_model("sam2.1_hiera_t", 64), image_size=64, end=6)
    assert_same_files(tmp_path)


def test_the_overlay_and_a_png_only_run(clip, tmp_path):
    r = track(clip, png_dir=tmp_path / "png", overlay=tmp_path / "o.mp4", model=FLOW, start=2, end=7)
    assert set(r["outputs"]) == {"png_dir", "overlay"}
    from sam2s.frames import open_frames

    video = open_frames(tmp_path / "o.mp4")
    assert len(video) == 10 and (video.height, video.width) == (96, 128)
    assert not (np.asarray(Image.open(tmp_path / "png" / "00009.png")) > 0).any()  # outside --end: empty
    assert (np.asarray(Image.open(tmp_path / "png" / "00003.png")) > 0).any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4", "png"]  # no temporary left


def test_no_output_is_refused_before_any_work(clip, tmp_path, capsys):
    code = cli.main(["track", str(clip / "video.mp4"), "--prompts", str(clip / "prompts.json"), "--engine", "flow"])
    err = capsys.readouterr().err
    assert code == 2 and "--output" in err and "--png-dir" in err and "--overlay" in err
    with pytest.raises(CliError, match="Nothing to write"):
        run_tracking(TrackRequest(tmp_path / "missing.mp4", clip / "prompts.json"))  # before the video is read


def test_bad_and_existing_outputs_are_refused_before_any_work(clip, tmp_path):
    existing = tmp_path / "o.seg.nrrd"
    existing.write_bytes(b"the user's file")
    with pytest.raises(CliError, match="already exists"):
        track(clip, output=existing, model=FLOW)
    with pytest.raises(CliError, match=r"must end in \.seg\.nrrd"):
        track(clip, output=tmp_path / "o.nrrd", model=FLOW)
    with pytest.raises(CliError, match="does not exist"):
        track(clip, output=tmp_path / "no" / "o.seg.nrrd", model=FLOW)
    with pytest.raises(CliError, match="--server needs --token"):
        track(clip, png_dir=tmp_path / "png", server="http://127.0.0.1:9")
    with pytest.raises(CliError, match="--server http://127.0.0.1:9"):  # nothing listens there
        track(clip, png_dir=tmp_path / "png", server="http://127.0.0.1:9", token="t" * 32)
    assert existing.read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.seg.nrrd"]


def test_the_labelmap_file_is_removed_on_errors(clip, tmp_path, monkeypatch):
    """A failure while writing the .seg.nrrd: the old file stays, the temporary labelmap is gone."""
    existing = tmp_path / "o.seg.nrrd"
    existing.write_bytes(b"old")
    seen = []

    def fail(path, labelmap, objects, level=6, provenance=None):
        seen.append(labelmap.path)
        assert labelmap.path.is_file() and labelmap.path.parent == tmp_path
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(streaming, "write_segmentation", fail)
    with pytest.raises(OutputWriteError, match="No space left") as info:
        track(clip, output=existing, png_dir=tmp_path / "png", model=FLOW, end=4, overwrite=True)
    assert info.value.written == [tmp_path / "png"]  # the label folder was committed before
    assert seen and not seen[0].exists()
    assert len(list((tmp_path / "png").glob("*.png"))) == 10 and (tmp_path / "png" / "provenance.json").is_file()
    (tmp_path / "png").rename(tmp_path.parent / f"{tmp_path.name}-png")
    assert existing.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["o.seg.nrrd"]


def test_a_seg_nrrd_streamed_from_a_memmap_reads_back(tmp_path):
    """``DiskLabelmap`` + ``write_segmentation`` alone, on masks of known content, in several write chunks."""
    frames, height, width = 7, 40, 50
    objects = [
        streaming.StreamObject(3, "three", (1.0, 0.0, 0.0)),
        streaming.StreamObject(1, "one, größe", (0.0, 0.5, 1.0)),
        streaming.StreamObject(2, "empty", (0.2, 0.2, 0.2)),
    ]
    rng = np.random.default_rng(0)
    truth = {o.id: np.zeros((frames, height, width), bool) for o in objects}
    path = tmp_path / "s.seg.nrrd"
    with streaming.DiskLabelmap(path, (frames, height, width), [o.id for o in objects]) as labelmap:
        assert labelmap.path.parent == tmp_path and labelmap.path.stat().st_size == frames * height * width
        for t in range(frames):
            masks = {1: rng.random((height, width)) > 0.7, 3: rng.random((height, width)) > 0.9}
            for o, m in masks.items():
                truth[o][t] = m
            labelmap.write_frame(t, masks)
        monkeypatched = streaming.WRITE_CHUNK_BYTES
        streaming.WRITE_CHUNK_BYTES = 3 * height * width  # 3 frames a chunk
        try:
            streaming.write_segmentation(path, labelmap, objects)
        finally:
            streaming.WRITE_CHUNK_BYTES = monkeypatched
        temp = labelmap.path
    assert not temp.exists()
    export.verifyNrrdFile(str(path))
    seg = export.readSegmentation(str(path))
    assert seg["voxels"].shape == (2, width, height, frames)  # 1 and 3 overlap
    by_name = {s["name"]: s for s in seg["segments"]}
    assert list(by_name) == ["three", "one, größe", "empty"]
    for o in objects:
        s = by_name[o.name]
        got = (seg["voxels"][s["layer"]] == s["labelValue"]).transpose(2, 1, 0)  # (I, J, K) -> (T, H, W)
        np.testing.assert_array_equal(got, truth[o.id], err_msg=o.name)
        assert s["color"] == pytest.approx(o.color, abs=1e-6)
    assert [(s["layer"], s["labelValue"]) for s in seg["segments"]] == [(0, 1), (1, 1), (0, 2)]
    header = nrrd.read_header(str(path))
    assert header["encoding"] == "gzip" and header["kinds"] == ["list", "domain", "domain", "domain"]
    assert header["Segment1_Tags"].startswith("SAM2S.ObjectId:1|TerminologyEntry:")


def test_the_command_line(clip, tmp_path, capsys):
    argv = [
        "track",
        str(clip / "video.mp4"),
        "--prompts",
        str(clip / "prompts.json"),
        "--png-dir",
        str(tmp_path / "png"),
    ]
    code = cli.main([*argv, "--engine", "flow", "--quiet", "--end", "5"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "png_dir:" in out.out and "segmentation" not in out.out
    assert len(list((tmp_path / "png").glob("*.png"))) == 10
