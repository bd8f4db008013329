"""A new object mid-video, and a correction, after the others were tracked (issue defect 16).

Headless, on a real ``slicer-core`` MRML scene with the SAM 2 engine in this process (the default
``InProcessBackend``, subclassed only to record what the engine is asked to propagate), random
weights and a small synthetic clip, one logic session goes through:

1. objects 1 and 2 clicked on frame 0 and tracked over all 14 frames;
2. a new segment, object 3, clicked on frame 6 and tracked alone from there in both directions
   (``createTrackingJob([segment], startFrame=6, direction="both")``);
3. another new segment, object 4, clicked on frame 9 and tracked alone forward only;
4. a correction: a click for object 1 on frame 8, object 1 tracked alone from frame 8 forward;
5. everything tracked again (forward from frame 0, one batch of four objects).

After steps 2 to 4 the other segments are bit-identical on every frame (and so are the frames of
the corrected object before the corrected frame); the engine was asked to track (and yielded)
only the chosen object, and nothing of the other objects changed in the engine session (results,
memory features, pointers, tracking directions). A new object's masks equal those of a fresh
``sam2s.VideoTracker`` given only its click and propagated the same way; object 1's masks after
the correction equal those of the engine alone doing steps 1-4 with ``propagate(obj_ids=...)``.
After step 5 objects 2, 3 and 4 equal a fresh engine given all prompts at once (object 1: the
engine alone after the same steps, since its frame-8 click was given on a tracked frame, where
SAM 2 conditions a click on the memory of the frames before it).

Every comparison is exact (masks ``logits > 0``, as ``test_slicer_logic.py``): each object goes
through the same batches with the same memories on both sides (one object alone on its own; the
batch of four in step 5).
"""

from __future__ import annotations

import contextlib
import hashlib
import types

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core", allow_module_level=True)

from conftest import random_model  # noqa: E402
from SAM2SSlicerLib import headless  # noqa: E402
from SAM2SSlicerLib.backends import InProcessBackend  # noqa: E402

pytestmark = pytest.mark.slow  # one engine story of several tracks (~20 s): make test, not make test-fast

FRAMES, HEIGHT, WIDTH = 14, 96, 128
IMAGE_SIZE = 128
ALL = list(range(FRAMES))
NEW_FRAME = 6  # object 3 is first clicked here, after objects 1 and 2 were tracked over every frame
FORWARD_FRAME = 9  # object 4 is first clicked here and tracked forward only
CORRECTION_FRAME = 8  # then object 1 gets a click here
BOTH = [(NEW_FRAME, FRAMES - 1, False), (NEW_FRAME - 1, 0, True)]  # createTrackingJob(direction="both")
FORWARD = [(FORWARD_FRAME, FRAMES - 1, False)]
CORRECTION = [(CORRECTION_FRAME, FRAMES - 1, False)]


def _frames(passes) -> list[int]:
    return [
        t for start, end, reverse in passes for t in (range(start, end - 1, -1) if reverse else range(start, end + 1))
    ]


# ---------------------------------------------------------------------------------------------
# the engine session, recorded
# ---------------------------------------------------------------------------------------------


class RecordingBackend(InProcessBackend):
    """``InProcessBackend`` (the engine in this process) that records every ``propagate`` call as
    ``[start, end, reverse, [ids yielded on each frame]]`` in ``calls``; ``tracker`` is the engine
    session the logic made."""

    def __init__(self) -> None:
        self.calls: list[list] = []
        self.tracker = None

    def createTracker(self, *args, **kwargs):
        assert self.tracker is None, "the logic made a second engine session"
        tracker = super().createTracker(*args, **kwargs)
        propagate = tracker.propagate

        def recordingPropagate(start=None, end=None, reverse=False, obj_ids=None):
            yielded: list[list[int]] = []
            self.calls.append([start, end, reverse, yielded])
            with contextlib.closing(propagate(start, end, reverse, obj_ids)) as frames:
                for frame, ids, logits in frames:
                    yielded.append(list(ids))
                    yield frame, ids, logits

        tracker.propagate = recordingPropagate
        self.tracker = tracker
        return tracker

    def state(self, objectId: int):
        """What the engine session holds of one object: prompted frames, a digest of each
        conditioning and tracked frame's record, and the direction each frame was tracked in."""
        obj = self.tracker.objects[objectId]
        return (
            sorted(obj.prompts),
            {t: _digest(m) for t, m in obj.cond.items()},
            {t: _digest(m) for t, m in obj.non_cond.items()},
            dict(obj.tracked),
        )


def _digest(memory) -> str:
    h = hashlib.sha1()
    for tensor in (memory.pred_masks, memory.obj_ptr, memory.object_score, memory.maskmem):
        h.update(b"-" if tensor is None else tensor.float().numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    # Seed 1: tracked masks cover about 60 % of the frame (seed 0: 90 %), so more pixels can differ.
    return random_model("sam2.1_hiera_t", IMAGE_SIZE, seed=1)


@pytest.fixture(scope="module")
def clip():
    """14 frames of 96 x 128 with four moving blobs; a click on the centre of each object on the
    frame where it is first prompted, and the correction click (object 1's centre on frame 8)."""
    from SAM2SSlicerLib.synthetic import SyntheticClip

    source = SyntheticClip(num_frames=FRAMES, height=HEIGHT, width=WIDTH, num_objects=4, seed=5)

    def centre(frame: int, k: int) -> tuple[float, float]:
        ys, xs = np.nonzero(source.mask(frame, k))
        return float(xs.mean()), float(ys.mean())

    first = {1: 0, 2: 0, 3: NEW_FRAME, 4: FORWARD_FRAME}
    return types.SimpleNamespace(
        frames=np.stack([source.get(i) for i in range(FRAMES)]),
        clicks={o: (f, centre(f, o - 1)) for o, f in first.items()},
        correction=centre(CORRECTION_FRAME, 0),
    )


def _masks(propagation, into=None) -> dict[int, dict[int, np.ndarray]]:
    """``{frame: {objectId: (H, W) bool}}`` of a ``propagate()`` generator."""
    into = {} if into is None else into
    for t, ids, logits in propagation:
        into.setdefault(t, {}).update({o: logits[i] > 0 for i, o in enumerate(ids)})
    return into


def _engine(model, clip, objectIds):
    import sam2s

    tracker = sam2s.VideoTracker(model, clip.frames.copy())
    for objectId in objectIds:
        _click(tracker, clip, objectId)
    return tracker


def _click(tracker, clip, objectId):
    frame, xy = clip.clicks[objectId]
    tracker.add_points(frame, objectId, [xy], [1])


@pytest.fixture(scope="module")
def engine(model, clip):
    """The engine alone, as the logic should drive it: each step tracks only its objects
    (``propagate(obj_ids=...)``); the masks each step yields."""
    tracker = _engine(model, clip, (1, 2))
    steps = {"first": _masks(tracker.propagate(0, FRAMES - 1))}
    _click(tracker, clip, 3)
    steps["new"] = {}
    for start, end, reverse in BOTH:
        _masks(tracker.propagate(start, end, reverse, obj_ids=[3]), steps["new"])
    _click(tracker, clip, 4)
    steps["forward"] = _masks(tracker.propagate(FORWARD_FRAME, FRAMES - 1, obj_ids=[4]))
    tracker.add_points(CORRECTION_FRAME, 1, [clip.correction], [1])
    steps["correction"] = _masks(tracker.propagate(CORRECTION_FRAME, FRAMES - 1, obj_ids=[1]))
    steps["again"] = _masks(tracker.propagate(0, FRAMES - 1))
    # A fresh engine per new object, given only its click; and one given every prompt at once.
    steps["alone3"] = {}
    alone = _engine(model, clip, (3,))
    for start, end, reverse in BOTH:
        _masks(alone.propagate(start, end, reverse), steps["alone3"])
    steps["alone4"] = _masks(_engine(model, clip, (4,)).propagate(FORWARD_FRAME, FRAMES - 1))
    fresh = _engine(model, clip, (1, 2, 3, 4))
    fresh.add_points(CORRECTION_FRAME, 1, [clip.correction], [1])
    steps["fresh"] = _masks(fresh.propagate(0, FRAMES - 1))
    return steps


@pytest.fixture(scope="module")
def story(model, clip):
    """One logic session through steps 1-5 (module docstring); after each step: the job, the
    propagate calls it made, every segment's ``(T, H, W)`` mask and the engine's state of every
    object."""
    backend = RecordingBackend()
    logic = headless.createTrackingLogic(backend=backend, chunkSize=4)
    logic.setModel(model)
    logic.importVideo(clip.frames)
    logic.createSegmentation("Tracked")
    ids: dict[int, str] = {}
    steps = {}

    def click(objectId, frame, xy):
        if objectId not in ids:
            ids[objectId] = logic.addSegment(f"object {objectId}", objectId=objectId)
        logic.addPointPrompt(ids[objectId], frame, *xy)

    def step(name, objectIds, **options):
        calls = len(backend.calls)
        before = {o: logic.segmentMask(s) for o, s in ids.items()}
        segmentIds = None if objectIds is None else [ids[o] for o in objectIds]
        job = logic.track(segmentIds, **options)  # createTrackingJob(segmentIds, **options), run and written
        steps[name] = types.SimpleNamespace(
            job=job,
            calls=backend.calls[calls:],
            before=before,
            after={o: logic.segmentMask(s) for o, s in ids.items()},
            engine={o: backend.state(o) for o in backend.tracker.objects},
        )

    for objectId in (1, 2):
        click(objectId, *clip.clicks[objectId])
    step("first", None)
    click(3, *clip.clicks[3])
    step("new", [3], startFrame=NEW_FRAME, direction="both")
    click(4, *clip.clicks[4])
    step("forward", [4], startFrame=FORWARD_FRAME, direction="forward")
    click(1, CORRECTION_FRAME, clip.correction)
    step("correction", [1], startFrame=CORRECTION_FRAME)
    step("again", None)
    return types.SimpleNamespace(logic=logic, ids=ids, steps=steps)


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


def _assertFramesEqual(mask: np.ndarray, expected: dict[int, dict[int, np.ndarray]], objectId: int, what: str):
    for frame, masks in expected.items():
        np.testing.assert_array_equal(mask[frame], masks[objectId], err_msg=f"{what}: object {objectId}, frame {frame}")


def _assertOnly(step, objectId: int, passes, previous) -> None:
    """The job of ``step`` tracked and wrote only ``objectId`` over the frames of ``passes``; the
    engine propagated only it; nothing of the other objects changed (engine and segments)."""
    frames = _frames(passes)
    job = step.job
    assert job.status == "done" and job.error is None and not job.warnings
    assert job.trackedFrames == frames and job.writtenFrames == len(frames)
    assert list(job.plan.writeObjects) == [objectId]
    assert [tuple(call[:3]) for call in step.calls] == passes
    yielded = [ids for call in step.calls for ids in call[3]]
    assert yielded == [[objectId]] * len(frames), "the engine was asked to track objects the job does not write"
    for other, state in previous.engine.items():
        if other != objectId:
            assert step.engine[other] == state, f"object {other} changed in the engine session"
    for other, mask in step.before.items():
        if other != objectId:
            assert np.array_equal(step.after[other], mask), f"segment of object {other} changed"


def test_first_track_equals_the_engine(story, engine):
    step = story.steps["first"]
    assert step.job.status == "done" and step.job.trackedFrames == ALL
    assert [ids for call in step.calls for ids in call[3]] == [[1, 2]] * FRAMES
    for objectId in (1, 2):
        _assertFramesEqual(step.after[objectId], engine["first"], objectId, "first track")
        area = step.after[objectId].mean()
        assert 0.05 < area < 0.95, f"object {objectId}: uninformative masks ({area:.2f} of the frame)"


def test_new_object_mid_video_tracked_alone_in_both_directions(story, engine):
    step = story.steps["new"]
    _assertOnly(step, 3, BOTH, story.steps["first"])
    assert not step.before[3].any()  # a new, empty segment
    _assertFramesEqual(step.after[3], engine["alone3"], 3, "new object, both directions")
    # The same frames as the engine driven alone (only object 3 tracked), and informative masks.
    _assertFramesEqual(step.after[3], engine["new"], 3, "new object, both directions")
    assert step.after[3].any() and not np.array_equal(step.after[3][NEW_FRAME], step.after[1][NEW_FRAME])


def test_new_object_mid_video_tracked_alone_forward(story, engine):
    step = story.steps["forward"]
    _assertOnly(step, 4, FORWARD, story.steps["new"])
    _assertFramesEqual(step.after[4], engine["alone4"], 4, "new object, forward")
    assert not step.after[4][:FORWARD_FRAME].any()  # frames before its first click were never tracked
    assert step.after[4][FORWARD_FRAME:].any()


def test_correction_tracks_only_the_corrected_object_from_its_frame(story, engine):
    step = story.steps["correction"]
    _assertOnly(step, 1, CORRECTION, story.steps["forward"])
    np.testing.assert_array_equal(step.after[1][:CORRECTION_FRAME], step.before[1][:CORRECTION_FRAME])
    _assertFramesEqual(step.after[1], engine["correction"], 1, "after the correction")
    assert not np.array_equal(step.after[1][CORRECTION_FRAME:], step.before[1][CORRECTION_FRAME:])  # it changed


def test_tracking_everything_again_equals_a_fresh_engine(story, engine):
    step = story.steps["again"]
    assert step.job.status == "done" and step.job.trackedFrames == ALL
    assert [ids for call in step.calls for ids in call[3]] == [[1, 2, 3, 4]] * FRAMES
    for objectId in (2, 3, 4):
        _assertFramesEqual(step.after[objectId], engine["fresh"], objectId, "tracked again (fresh engine)")
    _assertFramesEqual(step.after[1], engine["again"], 1, "tracked again (engine after the same steps)")
