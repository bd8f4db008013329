"""Provenance in every output (``SAM2SSlicerLib.provenance``): a COCO file, a folder (label PNGs,
statistics, a batch ``result.json``), a ``.seg.nrrd`` written by Slicer's own writer from a real
slicer-core segmentation node, read into Slicer again and re-written by Slicer, and the node's
attributes; ``checkProvenance`` on the same and on another checkpoint, prompts file and image size.

The "checkpoints" are small random files: only their SHA-256 matters.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np
import pytest
import sam2s
import vtk

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core", allow_module_level=True)

from sam2s.modelspec import ModelSpec  # noqa: E402
from SAM2SSlicerLib import export, headless, provenance, segments  # noqa: E402
from SAM2SSlicerLib.outputs import OutputSet  # noqa: E402
from SAM2SSlicerLib.provenance import (  # noqa: E402
    PROVENANCE_FILE,
    PROVENANCE_KEY,
    Provenance,
    ProvenanceError,
    checkProvenance,
    makeProvenance,
    nodeProvenance,
    readProvenance,
    readSegmentProvenance,
    setNodeProvenance,
)

PROMPTS_NAME = 'prompts|é "q" \\ x.json'  # "|" separates Slicer's segment tags; "\\" is escaped by teem


@pytest.fixture
def files(tmp_path):
    """Two random 'checkpoints' and two prompts files."""
    rng = np.random.default_rng(7)
    out = {}
    for name in ("model.pt", "other.pt"):
        (tmp_path / name).write_bytes(rng.bytes(3 * 2**20 + 17))  # more than one 1 MiB block
        out[name] = tmp_path / name
    out["prompts"] = tmp_path / PROMPTS_NAME
    out["prompts"].write_text('{"objects": [{"id": 1, "name": "tool"}]}', encoding="utf-8")
    out["prompts2"] = tmp_path / "prompts2.json"
    out["prompts2"].write_text('{"objects": [{"id": 2, "name": "organ"}]}', encoding="utf-8")
    return out


def _prov(files, checkpoint="model.pt", prompts="prompts", promptsPath=None, **changes) -> Provenance:
    """A run of SAM 2.1 tiny at 512 px in fp32 with DiveMem; ``changes``: ModelSpec fields."""
    model = ModelSpec(
        config="sam2.1_hiera_t", checkpoint=None if checkpoint is None else str(files[checkpoint]),
        image_size=512, precision="fp32", device="cpu", memory="divemem", memory_params={"long_term_size": 3},
    ).replace(**changes)  # fmt: skip
    run = dict(firstFrame=0, lastFrame=2, passes=[(1, 2, False), (1, 0, True)])
    return makeProvenance(model, promptsPath=promptsPath or files[prompts], **run)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checks(path, files) -> dict[str, list[str]]:
    """checkProvenance of ``path`` against the model + prompts of :func:`_prov` and three changes."""
    same = dict(config="sam2.1_hiera_t", imageSize=512, precision="fp32", passes=[(1, 2, False), (1, 0, True)])
    return {
        "same": checkProvenance(path, checkpoint=files["model.pt"], promptsPath=files["prompts"], **same),
        "checkpoint": checkProvenance(path, checkpoint=files["other.pt"]),
        "prompts": checkProvenance(path, promptsPath=files["prompts2"]),
        "size": checkProvenance(path, imageSize=1024, memory="divemem"),
    }


def _assertChecks(path, files) -> None:
    got = _checks(path, files)
    assert got["same"] == []
    assert got["checkpoint"] == [
        f"{path}: checkpoint: recorded model.pt (sha256 {_sha(files['model.pt'])[:12]}), "
        f"given other.pt (sha256 {_sha(files['other.pt'])[:12]})"
    ]
    assert got["prompts"] == [
        f"{path}: prompts: recorded {PROMPTS_NAME} (sha256 {_sha(files['prompts'])[:12]}), "
        f"given prompts2.json (sha256 {_sha(files['prompts2'])[:12]})"
    ]
    assert got["size"] == [f"{path}: image size: recorded 512, given 1024"]


# ---------------------------------------------------------------------------------------------
# the record
# ---------------------------------------------------------------------------------------------


def test_record_hashes_and_json_form(files):
    prov = _prov(files)
    assert prov.checkpointName == "model.pt" and prov.checkpointSha256 == _sha(files["model.pt"])
    assert prov.promptsName == PROMPTS_NAME and prov.promptsSha256 == _sha(files["prompts"])
    assert prov.passes == ((1, 2, False), (1, 0, True)) and prov.sam2sVersion == sam2s.__version__
    assert prov.date.endswith("+00:00")
    data = prov.toDict()
    assert data["schema"] == provenance.SCHEMA and data["checkpoint_sha256"] == prov.checkpointSha256
    assert data["passes"] == [[1, 2, False], [1, 0, True]] and data["memory_params"] == {"long_term_size": 3}
    assert Provenance.fromDict(json.loads(json.dumps(data))) == prov
    text = prov.toJson()
    assert "|" not in text and "\n" not in text and text.isascii()
    assert Provenance.fromDict(json.loads(text)) == prov
    flow = _prov(files, engine="flow", checkpoint=None)
    assert flow.checkpointName is None and flow.checkpointSha256 is None
    assert Provenance.fromDict(flow.toDict()) == flow
    for broken, words in (
        ({**data, "schema": "sam2s.provenance/2"}, "schema 'sam2s.provenance/2'"),
        ({k: v for k, v in data.items() if k != "checkpoint_sha256"}, "no ['checkpoint_sha256']"),
        ({**data, "image_size": "512"}, "'image_size' is '512'"),
        ({**data, "passes": [[1, 2]]}, "'passes'"),
        ({**data, "engine": None}, "'engine'"),
        ([], "schema 'list'"),
    ):
        with pytest.raises(ValueError, match=re.escape(words)):
            Provenance.fromDict(broken)
    with pytest.raises(ValueError, match="engine 'sam3'"):
        _prov(files, engine="sam3")
    with pytest.raises(ValueError, match="precision 'fp8'"):
        _prov(files, precision="fp8")
    with pytest.raises(FileNotFoundError):
        _prov(files, checkpoint="model.pt", promptsPath=files["model.pt"].parent / "missing.json")


def test_checkpoint_hash_is_cached_per_path_size_and_mtime(files):
    path = files["model.pt"]
    first = provenance.fileSha256(path, cache=True)
    stat = os.stat(path)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF  # same size, same mtime: the cached digest
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert provenance.fileSha256(path, cache=True) == first
    assert provenance.fileSha256(path) == _sha(path) != first  # without the cache: read again
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert provenance.fileSha256(path, cache=True) == _sha(path)


# ---------------------------------------------------------------------------------------------
# COCO and folders
# ---------------------------------------------------------------------------------------------


def test_coco_info_round_trip(files, tmp_path):
    from SAM2SSlicerLib.coco import CocoWriter

    pytest.importorskip("pycocotools")
    prov = _prov(files)
    writer = CocoWriter([(1, "tool")], "clip", 3, 4, 5, provenance=prov)
    writer.addFrame(0, {1: np.ones((4, 5), bool)})
    path = writer.write(tmp_path / "masklets.json")
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["info"]["provenance"] == prov.toDict() and doc["info"]["version"]
    assert readProvenance(path) == prov
    _assertChecks(path, files)
    plain = CocoWriter([(1, "tool")], "clip", 3, 4, 5).write(tmp_path / "plain.json")
    assert "provenance" not in json.loads(plain.read_text(encoding="utf-8"))["info"]
    with pytest.raises(ProvenanceError, match="plain.json records no provenance.*older version or another tool"):
        readProvenance(plain)
    with pytest.raises(ProvenanceError, match="plain.json records no provenance"):
        checkProvenance(plain, imageSize=512)


def test_folders_stats_and_batch_result(files, tmp_path):
    prov = _prov(files)
    folder = tmp_path / "plain"
    folder.mkdir()
    assert provenance.writeProvenanceFile(folder, prov) == folder / PROVENANCE_FILE
    assert readProvenance(folder) == readProvenance(folder / PROVENANCE_FILE) == prov
    _assertChecks(folder, files)
    (folder / PROVENANCE_FILE).write_text(json.dumps({**prov.toDict(), "schema": "x"}), encoding="utf-8")
    with pytest.raises(ProvenanceError, match="written by an older version or another tool"):
        readProvenance(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProvenanceError, match=f"empty has no {PROVENANCE_FILE}"):
        readProvenance(tmp_path / "empty")
    batch = tmp_path / "row"  # a batch row's output_dir: result.json with "provenance"
    batch.mkdir()
    (batch / "result.json").write_text(json.dumps({"frames": 3, "provenance": prov.toDict()}), encoding="utf-8")
    assert readProvenance(batch) == readProvenance(batch / "result.json") == prov
    # the statistics folder, staged and committed as sam2s track does it (the pattern admits the file)
    pytest.importorskip("matplotlib")
    from SAM2SSlicerLib.stats import STATS_FILE_PATTERN, STATS_FILES, MaskletStatistics, writeStatisticsFolder

    stats = MaskletStatistics({1: "tool"}, 3)
    stats.addMask(0, 1, np.ones((4, 5), bool))
    outputs = OutputSet([])
    target = outputs.addFolder(tmp_path / "stats", "--stats", STATS_FILE_PATTERN, "statistics files")
    outputs.check()
    with outputs.writeFolder(target) as staging:
        written = writeStatisticsFolder(stats, staging, provenance=prov)
    outputs.release()
    assert [p.name for p in written] == [*STATS_FILES, PROVENANCE_FILE]
    assert readProvenance(tmp_path / "stats") == prov
    # the label PNG folder pattern of sam2s track admits provenance.json too
    pattern = provenance.folderPattern(export.labelPngPattern())
    assert all(re.fullmatch(pattern, n) for n in ("00000.png", PROVENANCE_FILE))
    assert not re.fullmatch(pattern, "notes.txt")


# ---------------------------------------------------------------------------------------------
# Slicer: the node, .seg.nrrd through Slicer's writer and reader, label PNGs, COCO from the node
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def scene():
    logic = headless.createTrackingLogic()
    logic.importVideo(np.zeros((3, 10, 12, 3), dtype=np.uint8), frameRate=5)
    seg = logic.createSegmentation()
    ids = []
    for i, name in enumerate(("tool", "organ")):
        segmentId = logic.addSegment(name, color=(0.1 * (i + 1), 0.5, 0.9))
        mask = np.zeros((3, 10, 12), dtype=bool)
        mask[i, 2 + i : 6 + i, 3:9] = True
        segments.writeSegmentFrames(seg, segmentId, logic.videoNode, 0, mask)
        ids.append(segmentId)
    return logic, seg, ids


def _slicerReadWrite(logic, source, target) -> object:
    """Read ``source`` into a new segmentation node with Slicer's reader and write it to ``target``."""
    loaded = logic.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
    reader = slicer.vtkMRMLSegmentationStorageNode()
    reader.SetFileName(str(source))
    assert reader.ReadData(loaded)
    writer = slicer.vtkMRMLSegmentationStorageNode()
    writer.SetFileName(str(target))
    assert writer.WriteData(loaded)
    return loaded


def test_node_attributes_and_seg_nrrd_survive_slicer_read_and_write(scene, files, tmp_path):
    logic, seg, ids = scene
    prov = _prov(files)
    assert nodeProvenance(seg) is None
    setNodeProvenance(seg, prov)
    assert nodeProvenance(seg) == prov and seg.GetAttribute(PROVENANCE_KEY) == prov.toJson()
    tag = vtk.mutable("")
    assert seg.GetSegmentation().GetSegment(ids[1]).GetTag(PROVENANCE_KEY, tag) and str(tag) == prov.toJson()
    path = export.exportSegmentation(seg, str(tmp_path / "out.seg.nrrd"))  # Slicer's own writer
    assert readProvenance(path) == prov and readSegmentProvenance(path) == {ids[0]: prov, ids[1]: prov}
    _assertChecks(path, files)
    header = open(path, "rb").read().split(b"\n\n")[0]
    assert header.count(b"|SAM2S.Provenance:{") == 2  # after SAM2S.ObjectId: tags are sorted by key
    tags = export.readSegmentation(path, skipVoxels=True)["segments"][0]["tags"]
    assert tags[PROVENANCE_KEY] == prov.toJson()
    # a custom NRRD field next to the tag: Slicer reads the file and writes it again
    data = open(path, "rb").read()
    end = data.index(b"\n\n")
    edited = tmp_path / "edited.seg.nrrd"
    edited.write_bytes(data[:end] + b"\nSAM2S_Provenance:=custom field" + data[end:])
    assert b"SAM2S_Provenance:=" in edited.read_bytes()[: end + 64]
    loaded = _slicerReadWrite(logic, edited, tmp_path / "again.seg.nrrd")
    again = (tmp_path / "again.seg.nrrd").read_bytes()
    assert b"SAM2S_Provenance:=" not in again  # dropped: why provenance is a segment tag
    assert readProvenance(tmp_path / "again.seg.nrrd") == prov  # kept
    assert nodeProvenance(loaded) is None  # node attributes live in the scene (.mrml), not the file
    assert loaded.GetSegmentation().GetSegment(ids[0]).GetTag(PROVENANCE_KEY, tag) and str(tag) == prov.toJson()
    _slicerReadWrite(logic, tmp_path / "again.seg.nrrd", tmp_path / "third.seg.nrrd")
    assert readProvenance(tmp_path / "third.seg.nrrd") == prov


def test_segments_of_different_runs_and_without_provenance(scene, files, tmp_path):
    logic, seg, ids = scene
    first, second = _prov(files), _prov(files, image_size=1024)
    setNodeProvenance(seg, first)
    setNodeProvenance(seg, second, [ids[1]])  # the second segment tracked again at 1024
    assert nodeProvenance(seg) == second
    with pytest.raises(KeyError, match="no segments"):
        setNodeProvenance(seg, second, ["nope"])
    path = export.exportSegmentation(seg, str(tmp_path / "mixed.seg.nrrd"))
    assert readSegmentProvenance(path) == {ids[0]: first, ids[1]: second}
    with pytest.raises(ProvenanceError, match="2 different runs"):
        readProvenance(path)
    assert checkProvenance(path, imageSize=512) == [
        f"{path} (segments {[ids[1]]}): image size: recorded 1024, given 512"
    ]
    drawn = logic.addSegment("drawn by hand")
    path = export.exportSegmentation(seg, str(tmp_path / "drawn.seg.nrrd"), segmentIds=[ids[0], drawn])
    assert readProvenance(path) == first
    assert checkProvenance(path, imageSize=512) == [f"{path}: segments {[drawn]} record no provenance"]
    bare = export.exportSegmentation(seg, str(tmp_path / "bare.seg.nrrd"), segmentIds=[drawn])
    with pytest.raises(ProvenanceError, match="no segment records provenance.*older version or another tool"):
        readProvenance(bare)
    with pytest.raises(ProvenanceError, match="no segment records provenance"):
        checkProvenance(bare)
    (tmp_path / "fake.seg.nrrd").write_bytes(b"PNG\n\n")
    with pytest.raises(ProvenanceError, match="not a NRRD"):
        readProvenance(tmp_path / "fake.seg.nrrd")


def test_label_png_folder_and_coco_from_the_node(scene, files, tmp_path):
    logic, seg, ids = scene
    prov = _prov(files)
    setNodeProvenance(seg, prov)
    folder = tmp_path / "labels"
    extra = {PROVENANCE_FILE: prov.toJson().encode()}
    paths = export.exportLabelPngs(seg, logic.videoNode, str(folder), extraFiles=extra)
    assert sorted(p.name for p in folder.iterdir()) == sorted([os.path.basename(p) for p in paths] + [PROVENANCE_FILE])
    assert readProvenance(folder) == prov
    with pytest.raises(ValueError, match="not a plain file name"):
        export.exportLabelPngs(seg, logic.videoNode, str(tmp_path / "x"), extraFiles={"00001.png": b""})
    pytest.importorskip("pycocotools")
    from SAM2SSlicerLib.coco import segmentationCoco

    path = segmentationCoco(seg, logic.videoNode).write(tmp_path / "node.json")
    assert readProvenance(path) == prov


# --------------------------------------------------------------------------- the outputs of the front ends
@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """``sam2s track`` of a generated clip with a SAM 2.1 tiny checkpoint of random weights at 64 px
    in fp32 into every output that records provenance."""
    import torch
    from conftest import random_model
    from PIL import Image
    from sam2sapp import cli
    from SAM2SSlicerLib.synthetic import SyntheticClip

    folder = tmp_path_factory.mktemp("tracked")
    clip = SyntheticClip(8, 48, 64, 2, seed=2)
    (folder / "frames").mkdir()
    for t in range(8):
        Image.fromarray(clip.get(t)).save(folder / "frames" / f"{t:05d}.png")
    Image.fromarray(clip.mask(2, 0).astype(np.uint8) * 255).save(folder / "m.png")
    objects = [{"id": 1, "name": "a", "prompts": [{"frame": 2, "mask": "m.png"}]}]
    (folder / "prompts.json").write_text(json.dumps({"objects": objects}))
    (folder / "other.json").write_text(json.dumps({"objects": objects}, indent=2))  # the same prompts, other bytes
    torch.save({"model": random_model("sam2.1_hiera_t", 64).state_dict()}, folder / "tiny.pt")
    model = ["--checkpoint", str(folder / "tiny.pt"), "--image-size", "64", "--precision", "fp32", "--quiet"]
    base = ["track", str(folder / "frames"), "--prompts", str(folder / "prompts.json"), *model]
    outputs = ["--output", "o.seg.nrrd", "--png-dir", "png", "--coco", "c.json", "--stats", "stats"]
    argv = base + [str(folder / v) if i % 2 else v for i, v in enumerate(outputs)]
    assert cli.main(argv) == 0
    return folder, base


def test_every_output_of_sam2s_track_reads_back_its_provenance(tracked):
    folder, _ = tracked
    records = [readProvenance(folder / name) for name in ("o.seg.nrrd", "png", "c.json", "stats")]
    assert all(r == records[0] for r in records)
    prov = records[0]
    assert (prov.engine, prov.config, prov.imageSize, prov.precision, prov.device) == (
        "sam2", "sam2.1_hiera_t", 64, "fp32", "cpu"
    )  # fmt: skip
    assert prov.checkpointName == "tiny.pt" and prov.checkpointSha256 == _sha(folder / "tiny.pt")
    assert prov.promptsName == "prompts.json" and prov.promptsSha256 == _sha(folder / "prompts.json")
    assert (prov.firstFrame, prov.lastFrame, prov.passes) == (0, 7, ((2, 7, False), (1, 0, True)))
    assert prov.memory == "sam2" and prov.sam2sVersion == sam2s.__version__


def test_check_provenance_on_the_command_line(tracked, capsys):
    from sam2sapp import cli

    folder, base = tracked
    for output in ("o.seg.nrrd", "png", "c.json", "stats"):
        assert cli.main([*base, "--check-provenance", str(folder / output)]) == 0, output
        assert "made from these prompts with this model" in capsys.readouterr().out
    other = [a if a != str(folder / "prompts.json") else str(folder / "other.json") for a in base]
    assert cli.main([*other, "--check-provenance", str(folder / "o.seg.nrrd")]) == 1
    assert "prompts: recorded prompts.json" in capsys.readouterr().out
    bigger = [a if a != "64" else "128" for a in base]
    assert cli.main([*bigger, "--check-provenance", str(folder / "c.json")]) == 1
    assert "image size: recorded 64, given 128" in capsys.readouterr().out
    (folder / "plain").mkdir(exist_ok=True)
    assert cli.main([*base, "--check-provenance", str(folder / "plain")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --check-provenance:") and "older version or another tool" in err


def test_the_slicer_modules_tracking_records_provenance_on_the_node(tracked, tmp_path):
    from slicertrack import track_in_slicer

    folder, _ = tracked
    logic = track_in_slicer(folder / "frames", folder / "prompts.json", tmp_path)  # the flow engine
    try:
        prov = nodeProvenance(logic.segmentationNode)
        assert prov is not None and prov.engine == "flow" and prov.passes == ((2, 7, False), (1, 0, True))
        assert prov.promptsName.endswith("(prompts in the scene)") and len(prov.promptsSha256) == 64
        assert readProvenance(tmp_path / "o.seg.nrrd") == prov  # Slicer's own writer kept the segment tags
        assert readProvenance(tmp_path / "png") == prov  # the module's label PNG export
    finally:
        logic.close()


def test_the_date_is_now_unless_source_date_epoch_fixes_it(monkeypatch):
    import datetime

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1798761600")
    assert provenance.runDate() == "2027-01-01T00:00:00+00:00"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH='soon'"):
        provenance.runDate()
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    now = datetime.datetime.now(datetime.timezone.utc)
    date = datetime.datetime.fromisoformat(provenance.runDate())
    assert abs((date - now).total_seconds()) < 5 and date.utcoffset() == datetime.timedelta(0)
