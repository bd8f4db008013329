"""COCO instance export (``SAM2SSlicerLib.coco``): ``sam2s track --coco`` on both paths of
``run_tracking`` and the module's Export > COCO (the controller, headless on real slicer-core MRML).

Every file is read back with ``pycocotools.coco.COCO`` and its decoded masks are compared with
the label PNGs of the same run (where objects do not overlap) and with each object's own mask.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pycocotools", reason="pycocotools is not installed (pip install 'sam2s[coco]')")
slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core", allow_module_level=True)

from conftest import ROOT  # noqa: E402
from faultkit import run_without  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from sam2s.modelspec import ModelSpec  # noqa: E402
from sam2sapp.promptsfile import ObjectPrompts, Prompt, dump_prompts  # noqa: E402
from sam2sapp.track import CliError, TrackRequest, run_tracking  # noqa: E402
from SAM2SSlicerLib import headless  # noqa: E402
from SAM2SSlicerLib.controller import JsonSettingsStore, SAM2SController  # noqa: E402
from SAM2SSlicerLib.synthetic import SyntheticClip  # noqa: E402
from slicertrack import track_in_slicer  # noqa: E402

FLOW = ModelSpec(engine="flow", device="cpu")

REAL = ROOT.parent / "shared" / "data" / "endoscapes_v4"


def _read(path: Path) -> tuple[COCO, dict]:
    return COCO(str(path)), json.loads(path.read_text(encoding="utf-8"))


def _check_against_pngs(coco: COCO, doc: dict, png_dir: Path) -> None:
    """Every frame's decoded annotations equal the label PNG where the objects do not overlap."""
    pngs = sorted(png_dir.glob("*.png"))
    assert [im["file_name"] for im in doc["images"]] == [p.name for p in pngs]
    for image in doc["images"]:
        labels = np.asarray(Image.open(png_dir / image["file_name"]))
        assert (image["height"], image["width"]) == labels.shape
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        masks = {a["track_id"]: coco.annToMask(a) for a in anns}
        count = sum(masks.values()) if masks else np.zeros_like(labels)
        single = count <= 1
        rebuilt = np.zeros_like(labels)
        for objectId, mask in masks.items():
            rebuilt[mask == 1] = objectId
            a = next(a for a in anns if a["track_id"] == objectId)
            assert a["area"] == int(mask.sum()) > 0 and a["iscrowd"] == 0
            ys, xs = np.nonzero(mask)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert isinstance(a["segmentation"]["counts"], str)
        assert np.array_equal(rebuilt[single], labels[single]), image["file_name"]
        for objectId in set(np.unique(labels)) - {0}:  # where the label says id, the object is there
            assert np.all(masks[int(objectId)][labels == objectId] == 1)


def _comparable(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "info"}  # info.date_created differs


@pytest.mark.slow  # the whole real clip (~4 s): make test, not make test-fast
@pytest.mark.skipif(not (REAL / "frames").is_dir(), reason="the real clip (../shared/data/endoscapes_v4) is absent")
def test_real_clip_coco_equals_label_pngs(tmp_path):
    """The real clip (the Slicer module's export equals ``sam2s track``'s on the overlapping clip below)."""
    for out in (tmp_path,):
        result = run_tracking(
            TrackRequest(REAL / "frames", REAL / "prompts.json", png_dir=out / "labels", model=FLOW, end=2,
                         progress=False, coco=out / "masklets.json")
        )  # fmt: skip
        assert result["outputs"]["coco"] == str(out / "masklets.json")
        coco, doc = _read(out / "masklets.json")
        _check_against_pngs(coco, doc, out / "labels")
        assert doc["licenses"] == [] and doc["videos"][0]["name"] == "frames"
        assert doc["categories"] == [{"id": 1, "name": "gallbladder"}, {"id": 2, "name": "cystic artery"}]
        assert {a["image_id"] for a in doc["annotations"]} == {1, 2, 3}  # frames 0..2 tracked
        frames = {im["id"]: im["frame_id"] for im in doc["images"]}
        assert len(frames) == doc["videos"][0]["frames"] == 127 and frames[1] == 0


@pytest.fixture(scope="module")
def overlapping(tmp_path_factory):
    """A two-object synthetic clip whose second object's prompt covers part of the first's."""
    folder = tmp_path_factory.mktemp("overlap")
    clip = SyntheticClip(4, 40, 56, num_objects=2, seed=5)
    (folder / "frames").mkdir()
    for i in range(4):
        Image.fromarray(clip.get(i)).save(folder / "frames" / f"{i:05d}.png")
    first = clip.mask(0, 0)
    second = clip.mask(0, 1).copy()
    ys, xs = np.nonzero(first)
    second[ys[: len(ys) // 2], xs[: len(xs) // 2]] = True  # overlap with object 1
    objects = [
        ObjectPrompts(id=1, name="tool", color=None, prompts=[Prompt(frame=0, mask=first)]),
        ObjectPrompts(id=2, name="tissue", color=None, prompts=[Prompt(frame=0, mask=second)]),
    ]
    dump_prompts(objects, folder / "prompts.json")
    return folder, first, second


def test_overlapping_objects_keep_their_own_masks_in_both_front_ends(overlapping, tmp_path):
    """``sam2s track --coco`` and the Slicer module's Export > COCO give the same document."""
    folder, first, second = overlapping
    docs = {}
    out = tmp_path / "track"
    out.mkdir()
    run_tracking(
        TrackRequest(folder / "frames", folder / "prompts.json", png_dir=out / "png", model=FLOW, progress=False,
                     coco=out / "c.json")
    )  # fmt: skip
    track_in_slicer(folder / "frames", folder / "prompts.json", tmp_path / "slicer", seg=False, coco=True).close()
    for name in ("track", "slicer"):
        out = tmp_path / name
        coco, doc = _read(out / "c.json")
        _check_against_pngs(coco, doc, out / "png")
        prompted = {a["track_id"]: coco.annToMask(a) for a in coco.loadAnns(coco.getAnnIds(imgIds=[1]))}
        assert np.array_equal(prompted[1], first) and np.array_equal(prompted[2], second)  # own masks
        assert (prompted[1] & prompted[2]).any()  # the overlap is in both annotations
        docs[name] = _comparable(doc)
    docs["slicer"]["videos"][0]["name"] = docs["track"]["videos"][0]["name"]  # the module names it after the node
    assert docs["track"] == docs["slicer"]


def test_coco_output_checks_before_work(overlapping, tmp_path):
    folder, _, _ = overlapping
    existing = tmp_path / "mine.json"
    existing.write_text("user data")
    with pytest.raises(CliError, match="exists"):
        run_tracking(
            TrackRequest(folder / "frames", folder / "prompts.json", model=FLOW, progress=False, coco=existing)
        )
    assert existing.read_text() == "user data"
    with pytest.raises(CliError, match="--coco"):
        run_tracking(TrackRequest(folder / "frames", folder / "prompts.json", model=FLOW, coco=tmp_path / "x.txt"))
    with pytest.raises(CliError, match="--coco OUT.json"):
        run_tracking(TrackRequest(folder / "frames", folder / "prompts.json", model=FLOW))


def test_module_export_through_the_controller(overlapping, tmp_path):
    """Export > COCO in the module: the controller writes what the logic's segmentation holds,
    refuses to replace a file unless told, and reads back equal to the segments' own masks."""
    folder, first, second = overlapping
    logic = headless.createTrackingLogic()
    controller = SAM2SController(logic, JsonSettingsStore(tmp_path / "settings.json"))
    messages: list[str] = []
    controller.statusListeners.append(messages.append)
    controller.importVideo(str(folder / "frames"))
    controller.createSegmentation()
    segmentation = logic.segmentationNode.GetSegmentation()
    ids = list(segmentation.GetSegmentIDs())  # a new segmentation starts with one segment
    ids = ids[:1] or [controller.newSegment()]
    ids.append(controller.newSegment(name="tissue"))
    segmentation.GetSegment(ids[0]).SetName("tool")
    for sid, mask in zip(ids, (first, second)):
        logic.setMaskPrompt(sid, 0, mask)
    assert controller.actions()["export"]
    path = controller.exportCoco(str(tmp_path / "module"))  # ".json" is added
    assert path == str(tmp_path / "module.json") and "module.json" in messages[-1]
    coco, doc = _read(Path(path))
    assert doc["videos"][0] == {"id": 1, "name": "frames", "frames": 4, "width": 56, "height": 40, "fps": None}
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    names = {c["id"]: c["name"] for c in doc["categories"]}
    assert sorted(names.values()) == ["tissue", "tool"] and len(anns) == 2
    for a in anns:
        sid = ids[["tool", "tissue"].index(names[a["category_id"]])]
        assert np.array_equal(coco.annToMask(a), logic.segmentMask(sid)[0])
    before = Path(path).read_bytes()
    with pytest.raises(ValueError, match="exists"):
        controller.exportCoco(path)
    assert Path(path).read_bytes() == before
    assert controller.exportCoco(path, overwrite=True) == path


def test_without_pycocotools_says_how_to_install_it(overlapping, tmp_path):
    folder, _, _ = overlapping
    out = tmp_path / "out"
    command = ["-m", "sam2sapp", "track", str(folder / "frames"), "--prompts", str(folder / "prompts.json")]
    command += ["--engine", "flow", "--png-dir", str(out), "--coco", str(tmp_path / "c.json")]
    proc = run_without(["pycocotools"], command, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert 'pip install -e ".[coco]"' in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / "c.json").exists()  # refused before any work
