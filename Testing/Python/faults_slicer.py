"""Bad inputs and misuse of the headless Slicer logic, one parametrised case each.

Every case prepares a small scene (a 4-frame 32x40 video, segmentation ``masks`` with segment
``tool``: object id 1, voxels on frame 0, a click on frame 1, and earlier exports in its tmp
folder), then runs ONE bad call and checks:

* the exception type and key words of its message (the problem and the fix);
* that every file that existed in the case's tmp folder is byte-identical afterwards (sha256)
  and, for refused calls, that no file was added;
* that the MRML state (nodes, segments, their tags and voxels, prompt control points, the
  current video / segmentation) did not change, where the call is refused.

Cases that must not raise (a segment deleted mid-track, non-ASCII names, the RLIMIT_AS
subprocess) return the message to check instead. Two cases need the kernel: ``RLIMIT_AS`` (a
subprocess limits its own address space, where a failed VTK allocation would abort with
SIGABRT) and permission bits (we run as root, so the export runs in a subprocess under
``setpriv --bounding-set=-all --inh-caps=-all``, without CAP_DAC_OVERRIDE).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import vtk

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core", allow_module_level=True)

from SAM2SSlicerLib import (  # noqa: E402
    ModelSettings,
    NotEnoughMemoryError,
    PromptError,
    TrackingBusyError,
    headless,
    readSegmentation,
    segments,
    videoimport,
)

MODULE = Path(__file__).resolve().parents[2] / "SAM2SSlicer"
FRAMES, HEIGHT, WIDTH = 4, 32, 40
TAGS = (segments.OBJECT_ID_TAG, segments.MASK_PROMPT_TAG, "Note")


# ---------------------------------------------------------------------------------------------
# the scene of every case, and snapshots
# ---------------------------------------------------------------------------------------------


def _video() -> np.ndarray:
    video = np.full((FRAMES, HEIGHT, WIDTH, 3), 30, dtype=np.uint8)
    for k in range(FRAMES):
        video[k, 6:18, 6 + k : 18 + k] = (230, 60, 40)
        video[k, 20:30, 24:36] = (40, 200, 60)
    return video


@pytest.fixture
def world(tmp_path):
    logic = headless.createTrackingLogic()
    logic.chunkSize = 2
    logic.setModelSettings(ModelSettings(engine="flow"))
    video = logic.importVideo(_video(), name="clip", frameRate=10)
    seg = logic.createSegmentation("masks")
    tool = logic.addSegment("tool", color=(0.9, 0.3, 0.2), objectId=1)
    mask = np.zeros((FRAMES, HEIGHT, WIDTH), dtype=bool)
    mask[0, 6:18, 6:18] = True
    segments.writeSegmentFrames(seg, tool, video, 0, mask)
    logic.addPointPrompt(tool, 1, 12.0, 12.0)
    logic.exportSegmentation(str(tmp_path / "before.seg.nrrd"))
    logic.exportLabelPngs(str(tmp_path / "labels"), frames=[0, 1])
    (tmp_path / "notes.txt").write_text("keep me\n")
    return types.SimpleNamespace(logic=logic, video=video, seg=seg, tool=tool, tmp=tmp_path)


def _files(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root``."""
    result = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            result[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def _mrml(logic) -> dict:
    """What a refused call must not change: nodes, segments (names, colours, tags, voxel digests),
    prompt control points and the logic's current nodes."""
    scene = logic.scene
    state: dict = {
        "nodes": [
            (scene.GetNthNode(i).GetID(), scene.GetNthNode(i).GetName()) for i in range(scene.GetNumberOfNodes())
        ],
        "current": (
            logic.videoNode.GetID() if logic.videoNode else None,
            logic.segmentationNode.GetID() if logic.segmentationNode else None,
        ),
    }
    video = logic.videoNode
    nodes = scene.GetNodesByClass("vtkMRMLSegmentationNode")
    for n in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(n)
        segmentation = node.GetSegmentation()
        for i in range(segmentation.GetNumberOfSegments()):
            segmentId = segmentation.GetNthSegmentID(i)
            segment = segmentation.GetSegment(segmentId)
            tags = []
            for tag in TAGS:
                value = vtk.mutable("")
                tags.append(str(value) if segment.GetTag(tag, value) else None)
            voxels = segments.readSegmentMask(node, segmentId, video) if video is not None else None
            state[(node.GetID(), segmentId)] = (
                segment.GetName(),
                tuple(segment.GetColor()),
                segment.GetNameAutoGenerated(),
                tuple(tags),
                None if voxels is None else hashlib.sha256(np.packbits(voxels).tobytes()).hexdigest(),
            )
    markups = scene.GetNodesByClass("vtkMRMLMarkupsFiducialNode")
    for n in range(markups.GetNumberOfItems()):
        node = markups.GetItemAsObject(n)
        points = []
        for i in range(node.GetNumberOfControlPoints()):
            position = [0.0, 0.0, 0.0]
            node.GetNthControlPointPosition(i, position)
            points.append((tuple(position), node.GetNthControlPointDescription(i)))
        state[node.GetID()] = points
    return state


CASES = []


def case(error, *words, mrml: bool = True):
    """Register a case: ``fn(world)`` prepares and returns the bad call (a callable). ``error`` is
    the exception type it must raise (None: it returns the message to check)."""

    def register(fn):
        CASES.append(pytest.param(fn, error, words, mrml, id=fn.__name__.removeprefix("case_")))
        return fn

    return register


@pytest.mark.parametrize("prepare, error, words, mrml", CASES)
def test_slicer_fault(prepare, error, words, mrml, world):
    call = prepare(world)
    files, state = _files(world.tmp), _mrml(world.logic)
    if error is None:
        message = call()
    else:
        with pytest.raises(error) as info:
            call()
        message = str(info.value)
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} is not in the message: {message}"
    after = _files(world.tmp)
    changed = sorted(p for p, digest in files.items() if after.get(p) != digest)
    assert not changed, f"files changed or removed: {changed}"
    if error is not None:
        assert sorted(set(after) - set(files)) == [], "a refused call wrote files"
    if mrml:
        assert _mrml(world.logic) == state, "the MRML state changed"


def test_slicer_cases_are_many_and_distinct():
    assert len(CASES) >= 25
    assert len({p.id for p in CASES}) == len(CASES)


# ---------------------------------------------------------------------------------------------
# memory guard
# ---------------------------------------------------------------------------------------------


def _availableFor(usableBytes: int) -> int:
    return int((usableBytes + videoimport.MEMORY_MARGIN_BYTES) / (1 - videoimport.MEMORY_MARGIN_FRACTION)) + 1


@case(NotEnoughMemoryError, "not enough memory", "50 frames of 80x64", "GiB", "frameStep=5", "maxWidth=", "lastFrame=9")
def case_memory_injected_figure(w):
    frames = np.zeros((50, 64, 80, 3), dtype=np.uint8)
    return lambda: w.logic.importVideo(frames, availableMemory=_availableFor(10 * 64 * 80 * 5))


@case(NotEnoughMemoryError, "0.00 GiB is usable", "no import option fits", "free memory")
def case_memory_nothing_fits(w):
    return lambda: w.logic.importVideo(np.zeros((2, 8, 8, 3), dtype=np.uint8), availableMemory=0)


@case(NotEnoughMemoryError, "4 frames of 16x16", "frameStep=2", "endTime=0.1")
def case_memory_sequence(w):
    sequence = w.logic.scene.AddNewNodeByClass("vtkMRMLSequenceNode", "US")
    sequence.SetIndexUnit("s")
    for i in range(4):
        item = slicer.vtkMRMLScalarVolumeNode()
        slicer.util.updateVolumeFromArray(item, np.full((1, 16, 16), i, dtype=np.uint8))
        sequence.SetDataNodeAtValue(item, f"{0.1 * i:.1f}")
    return lambda: w.logic.importSequence(sequence, availableMemory=_availableFor(2 * 16 * 16 * 5))


@case(ValueError, "labelmaps", ">= 0")
def case_memory_negative_labelmaps(w):
    return lambda: w.logic.importVideo(np.zeros((2, 8, 8, 3), dtype=np.uint8), labelmaps=-1)


@case(ValueError, "availableMemory", ">= 0")
def case_memory_bad_injected_figure(w):
    return lambda: w.logic.importVideo(np.zeros((2, 8, 8, 3), dtype=np.uint8), availableMemory=-5)


RLIMIT_SCRIPT = """
import json, resource, sys
sys.path.insert(0, {module!r})
from SAM2SSlicerLib import headless, videoimport
import sam2s.frames  # imports torch before the limit is set
from sam2s import resources
logic = headless.createTrackingLogic()
room = 768 * 2**20
limit = resources.virtual_size_bytes() + room
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
result = {{"available": videoimport.availableMemoryBytes(), "room": room}}
try:
    logic.importVideo({folder!r})  # 40 frames of 3840x2160: the RGB volume alone is > 768 MiB
    result["imported"] = True
except videoimport.NotEnoughMemoryError as error:
    result["message"] = str(error)
    result["suggestions"] = error.suggestions
    node = logic.importVideo({folder!r}, frameStep=error.suggestions["frameStep"])  # the advice fits
    result["dims"] = list(node.GetImageData().GetDimensions())
print(json.dumps(result))
"""


@case(None, "not enough memory", "40 frames of 3840x2160", "frameStep=4", "maxWidth=")
def case_memory_real_rlimit_as(w):
    from PIL import Image

    folder = w.tmp / "frames4k"
    folder.mkdir()
    Image.new("RGB", (3840, 2160), (90, 120, 150)).save(folder / "00000.jpg", quality=50)
    for i in range(1, 40):
        os.link(folder / "00000.jpg", folder / f"{i:05d}.jpg")  # the same small file, 40 frames

    def call():
        script = RLIMIT_SCRIPT.format(module=str(MODULE), folder=str(folder))
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
        assert run.returncode == 0, f"exit {run.returncode} (-6 / 134 = aborted in VTK): {run.stderr[-2000:]}"
        result = json.loads(run.stdout.strip().splitlines()[-1])
        assert "imported" not in result
        assert 0 < result["available"] <= result["room"]  # the RLIMIT_AS room, not the physical memory
        step = result["suggestions"]["frameStep"]
        assert result["dims"] == [3840, 2160, math.ceil(40 / step)]
        return result["message"]

    return call


# ---------------------------------------------------------------------------------------------
# object ids
# ---------------------------------------------------------------------------------------------


@case(ValueError, "object id 0", "1..254", "background", "choose a free id")
def case_object_id_zero(w):
    return lambda: w.logic.addSegment("zero", objectId=0)


@case(ValueError, "object id 255", "1..254", "void")
def case_object_id_255(w):
    return lambda: w.logic.addSegment("void", objectId=255)


@case(ValueError, "1e+20", "1..254")
def case_object_id_huge_float(w):
    return lambda: w.logic.addSegment("huge", objectId=1e20)


@case(ValueError, "'x'", "integers in 1..254")
def case_object_id_text(w):
    return lambda: w.logic.addSegment("text", objectId="x")


@case(ValueError, "object id 1 is already used", "'tool'", "choose another id")
def case_object_id_duplicate(w):
    return lambda: w.logic.addSegment("twin", objectId=1)


@case(ValueError, "1..254", "leave it empty")
def case_object_id_reassigned_out_of_range(w):
    return lambda: segments.assignObjectId(w.seg, w.tool, 300)


@case(ValueError, "all 254 object ids", "delete segments", "another segmentation")
def case_object_ids_exhausted(w):
    for i in range(2, segments.MAX_OBJECT_ID + 1):
        w.logic.addSegment(f"s{i}")
    return lambda: w.logic.addSegment("one too many")


@case(ValueError, "invalid SAM2S.ObjectId tag '300'", "remove the tag")
def case_object_id_tag_edited_by_hand(w):
    other = w.logic.addSegment("edited")
    w.seg.GetSegmentation().GetSegment(other).SetTag(segments.OBJECT_ID_TAG, "300")
    return lambda: w.logic.addPointPrompt(other, 0, 5.0, 5.0)


# ---------------------------------------------------------------------------------------------
# prompts
# ---------------------------------------------------------------------------------------------


@case(PromptError, "outside frame 1", "click inside")
def case_point_outside_the_frame(w):
    return lambda: w.logic.addPointPrompt(w.tool, 1, WIDTH + 1.0, 5.0)


@case(PromptError, "frame 4 is outside the video", "0..3")
def case_point_on_a_frame_after_the_video(w):
    return lambda: w.logic.addPointPrompt(w.tool, FRAMES, 5.0, 5.0)


@case(PromptError, "nan", "click inside")
def case_point_nan(w):
    return lambda: w.logic.addPointPrompt(w.tool, 0, float("nan"), 5.0)


@case(PromptError, "less than one pixel", "drag over")
def case_box_without_area(w):
    return lambda: w.logic.setBoxPrompt(w.tool, 2, (10, 10, 10.5, 20))


@case(PromptError, "outside frame 2")
def case_box_corner_outside(w):
    return lambda: w.logic.setBoxPrompt(w.tool, 2, (10, 10, 20, HEIGHT + 5))


@case(ValueError, "shape", "(32, 40)", "resize")
def case_mask_prompt_wrong_shape(w):
    return lambda: w.logic.setMaskPrompt(w.tool, 2, np.ones((HEIGHT + 1, WIDTH), dtype=bool))


@case(ValueError, "0/1 or bool", "threshold")
def case_mask_prompt_probabilities(w):
    return lambda: w.logic.setMaskPrompt(w.tool, 2, np.full((HEIGHT, WIDTH), 0.7))


@case(ValueError, "frame 7 is outside the video", "pick a frame")
def case_mask_prompt_frame_outside(w):
    return lambda: w.logic.setMaskPrompt(w.tool, 7, np.ones((HEIGHT, WIDTH), dtype=bool))


@case(KeyError, "no segment with ID 'nope'")
def case_prompt_unknown_segment(w):
    return lambda: w.logic.addPointPrompt("nope", 0, 5.0, 5.0)


@case(PromptError, "no prompt on frame 3", "click on the object")
def case_preview_without_prompt(w):
    return lambda: w.logic.previewFrame(w.tool, 3)


# ---------------------------------------------------------------------------------------------
# tracking
# ---------------------------------------------------------------------------------------------


@case(ValueError, "no segment has prompts", "click on an object")
def case_track_without_prompts(w):
    w.logic.createSegmentation("empty")
    w.logic.addSegment("nothing yet")
    return lambda: w.logic.track()


@case(ValueError, "has no prompts", "click on it")
def case_track_a_segment_without_prompts(w):
    other = w.logic.addSegment("unprompted")
    return lambda: w.logic.track([other])


@case(RuntimeError, "no video is selected", "import a video")
def case_track_without_video(w):
    w.logic.setVideoNode(None)
    return lambda: w.logic.track()


@case(RuntimeError, "no segmentation is selected", "create one")
def case_track_without_segmentation(w):
    w.logic.setSegmentationNode(None)
    return lambda: w.logic.track()


@case(ValueError, "direction must be one of", "forward", "sideways")
def case_track_bad_direction(w):
    return lambda: w.logic.track(direction="sideways")


@case(ValueError, "frame range 3..1", "0..3")
def case_track_reversed_frame_range(w):
    return lambda: w.logic.track(firstFrame=3, lastFrame=1)


@case(ValueError, "start frame 3 is outside the frame range 0..2")
def case_track_start_outside_range(w):
    return lambda: w.logic.track(startFrame=3, lastFrame=2)


@case(KeyError, "no segment with ID 'ghost'")
def case_track_unknown_segment(w):
    return lambda: w.logic.track(["ghost"])


@case(TrackingBusyError, "tracking is running", "cancel", mrml=False)  # frame 1 is written before the error
def case_track_while_tracking(w):
    def progress(done, total, frame):
        w.logic.createTrackingJob()  # from inside the running job

    return lambda: w.logic.track(progressCallback=progress)


@case(None, "'tool'", "was deleted while tracking", "from frame 3 on", "track it", mrml=False)
def case_segment_deleted_mid_track(w):
    def progress(done, total, frame):
        if done == 3:  # frames 1, 2 are written (chunk of 2) before this
            w.seg.GetSegmentation().RemoveSegment(w.tool)

    def call():
        job = w.logic.track(progressCallback=progress)
        assert job.trackedFrames == [1, 2, 3] and len(job.warnings) == 1
        assert job.writtenFrames == 2  # frame 3 was dropped, not counted
        assert w.seg.GetSegmentation().GetNumberOfSegments() == 0
        return job.warnings[0]

    return call


@case(None, "'masks' was removed from the scene", "choose a segmentation", mrml=False)
def case_segmentation_removed_mid_track(w):
    def call():
        job = w.logic.track(progressCallback=lambda d, n, f: d == 2 and w.logic.scene.RemoveNode(w.seg))
        assert len(job.warnings) == 1 and job.writtenFrames == 0 and job.trackedFrames == [1, 2, 3]
        return job.warnings[0]

    return call


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


@case(ValueError, "'../00000.png'", "not a plain file name", "folder argument")
def case_label_pattern_parent_folder(w):
    return lambda: w.logic.exportLabelPngs(str(w.tmp / "labels"), fileNamePattern="../{frame:05d}.png")


@case(ValueError, "'sub/0.png'", "not a plain file name")
def case_label_pattern_subfolder(w):
    return lambda: w.logic.exportLabelPngs(str(w.tmp / "labels"), fileNamePattern="sub/{frame}.png")


@case(ValueError, "not a plain file name")
def case_label_pattern_absolute(w):
    return lambda: w.logic.exportLabelPngs(str(w.tmp / "labels"), fileNamePattern=str(w.tmp / "{frame}.png"))


@case(ValueError, "frames 0 and 1 the same name '7.png'", "{frame} always does")
def case_label_pattern_duplicate_names(w):
    w.video.SetAttribute("SAM2S.SourceFrameIndices", "7,7,8,9")
    return lambda: w.logic.exportLabelPngs(str(w.tmp / "labels"), fileNamePattern="{source}.png")


@case(ValueError, "must end with .png")
def case_label_pattern_wrong_suffix(w):
    return lambda: w.logic.exportLabelPngs(str(w.tmp / "labels"), fileNamePattern="{frame}.jpg")


@case(ValueError, "outside the video's frames 0..3")
def case_label_frames_outside(w):
    return lambda: w.logic.exportLabelPngs(str(w.tmp / "labels"), frames=[0, 9])


@case(KeyError, "no segments ['ghost']", "existing segments")
def case_label_unknown_segment(w):
    return lambda: w.logic.exportLabelPngs(str(w.tmp / "labels"), ["ghost"])


@case(OSError, "does not exist", "create it")
def case_export_into_a_missing_folder(w):
    return lambda: w.logic.exportSegmentation(str(w.tmp / "missing" / "out.seg.nrrd"))


@case(ValueError, "must end with .seg.nrrd", "add the .seg.nrrd suffix")
def case_export_wrong_suffix(w):
    return lambda: w.logic.exportSegmentation(str(w.tmp / "out.nrrd"))


READ_ONLY_SCRIPT = """
import json, sys
sys.path.insert(0, {module!r})
import numpy as np
import slicer
from SAM2SSlicerLib import headless, segments
logic = headless.createTrackingLogic()
video = slicer.vtkMRMLVectorVolumeNode()
slicer.util.updateVolumeFromArray(video, np.zeros((4, 32, 40, 3), dtype=np.uint8))
logic.scene.AddNode(video)
logic.setVideoNode(video)
seg = logic.createSegmentation("masks")
tool = logic.addSegment("tool", objectId=1)
segments.writeSegmentFrames(seg, tool, video, 0, np.ones((1, 32, 40), dtype=bool))
flags = lambda: [seg.GetSegmentation().GetSegment(tool).GetColorAutoGenerated()]
before = flags()
try:
    if {mode!r} == "seg":
        logic.exportSegmentation({target!r})
    else:
        logic.exportLabelPngs({target!r}, overwrite=True)
    print(json.dumps({{"error": None}}))
except Exception as error:
    print(json.dumps({{"error": type(error).__name__, "message": str(error), "flags": [before, flags()]}}))
"""


def _readOnlyExport(w, mode: str, target: Path, folder: Path):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop root's capabilities")
    folder.chmod(0o555)

    def call():
        try:
            script = READ_ONLY_SCRIPT.format(module=str(MODULE), mode=mode, target=str(target))
            command = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-c", script]
            run = subprocess.run(command, capture_output=True, text=True, timeout=120)
        finally:
            folder.chmod(0o755)
        assert run.returncode == 0, run.stderr[-2000:]
        result = json.loads(run.stdout.strip().splitlines()[-1])
        if result["error"] == "PermissionError":  # an OSError subclass: raise the same kind here
            raise PermissionError(result["message"])
        if result["error"] == "OutputError":  # found before writing (outputs.OutputError, a ValueError)
            raise ValueError(result["message"])
        assert result["error"] == "OSError", result
        if mode == "seg":  # the export marks colours as chosen by the user; restored after the failure
            assert result["flags"] == [[True], [True]]
        raise OSError(result["message"])

    return call


@case(OSError, "could not write", "writable")
def case_export_seg_nrrd_into_a_read_only_folder(w):
    folder = w.tmp / "readonly"
    folder.mkdir()
    shutil.copy(w.tmp / "before.seg.nrrd", folder / "result.seg.nrrd")  # an older result it must keep
    return _readOnlyExport(w, "seg", folder / "result.seg.nrrd", folder)


@case(ValueError, "cannot create files", "choose a folder you can write to")
def case_export_label_pngs_into_a_read_only_folder(w):
    folder = w.tmp / "labels"  # holds 00000.png and 00001.png from an earlier export
    return _readOnlyExport(w, "png", folder, folder)


@case(ValueError, "is not empty", "overwrite=True", "other files stay")
def case_export_label_pngs_into_a_folder_with_files(w):
    return lambda: w.logic.exportLabelPngs(str(w.tmp / "labels"))  # holds 00000.png and 00001.png


@case(None, "Gallenblase größe|胆囊|Instrument α")
def case_non_ascii_segment_names_round_trip(w):
    names = ["Gallenblase größe", "胆囊", "Instrument α"]
    ids = [w.tool] + [w.logic.addSegment(name) for name in names[1:]]
    w.seg.GetSegmentation().GetSegment(w.tool).SetName(names[0])

    def call():
        path = w.logic.exportSegmentation(str(w.tmp / "names.seg.nrrd"))
        data = readSegmentation(path, skipVoxels=True)
        assert [s["id"] for s in data["segments"]] == ids
        loaded = w.logic.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(path)
        assert storage.ReadData(loaded)
        slicerNames = [loaded.GetSegmentation().GetSegment(s).GetName() for s in ids]
        w.logic.scene.RemoveNode(loaded)
        assert slicerNames == names
        return "|".join(s["name"] for s in data["segments"])

    return call


@case(FileNotFoundError, "missing.mp4")
def case_import_a_missing_file(w):
    return lambda: w.logic.importVideo(w.tmp / "missing.mp4")


@case(ValueError, "frameStep must be an integer >= 1")
def case_import_frame_step_zero(w):
    return lambda: w.logic.importVideo(_video(), frameStep=0)


def test_slicer_case_helpers_notice_changes(world):
    """The snapshots used above do see a changed voxel, tag, control point and file."""
    files, state = _files(world.tmp), _mrml(world.logic)
    segments.writeSegmentFrames(world.seg, world.tool, world.video, 3, np.ones((1, HEIGHT, WIDTH), dtype=bool))
    assert _mrml(world.logic) != state
    state = _mrml(world.logic)
    world.seg.GetSegmentation().GetSegment(world.tool).SetTag("Note", "x")
    assert _mrml(world.logic) != state
    state = _mrml(world.logic)
    world.logic.addPointPrompt(world.tool, 2, 3.0, 3.0)
    assert _mrml(world.logic) != state
    (world.tmp / "notes.txt").write_text("changed\n")
    assert _files(world.tmp) != files
