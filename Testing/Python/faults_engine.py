"""Fault injection for the engine package ``sam2s``: checkpoints, frame sources, prompts files,
misuse of the tracking sessions (``VideoTracker`` and the weight-free ``FlowTracker``) and J&F
evaluation inputs.

Every case builds its faulty input in a fresh temporary folder, runs one call and checks:

1. the exception type (or, for inputs that must now work, the result);
2. that the message names the problem and the fix (key words);
3. that every file in the temporary folder is byte-identical afterwards (SHA-256 snapshot before
   and after; named pipes, sockets and unreadable entries are recorded by kind, never opened) and
   nothing was added, e.g. no marker written by code hidden in a checkpoint;
4. for sessions, that the session state (objects, prompts, memories) did not change.

Sizes are tiny (4 frames of 32 x 40, a random-weight model at 64 px) to keep the file fast.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pickle
import shlex
import shutil
import socket
import stat
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sam2s
import torch
from conftest import ROOT, random_model
from PIL import Image, ImageFile
from sam2s.checkpoints import CheckpointError, CheckpointInfo, DownloadCancelled, download, load_state_dict
from sam2s.flow import FlowTracker
from sam2s.frames import FrameSourceError, VideoFileFrames, open_frames
from sam2s.session import PromptError, TrackerBusyError
from sam2sapp.metrics import evaluate, read_labels
from sam2sapp.promptsfile import ObjectPrompts, Prompt, PromptsFileError, load_prompts, validate

T, H, W = 4, 32, 40  # frames of every session


# ------------------------------------------------------------------------------------ helpers
@dataclass
class Setup:
    """What a case runs: ``action()``; ``state()`` must return the same before and after it;
    ``check(result_or_error)`` adds assertions; ``cleanup()`` runs last (restores permissions,
    closes generators)."""

    action: Callable[[], Any]
    state: Callable[[], Any] | None = None
    check: Callable[[Any], None] | None = None
    cleanup: Callable[[], None] | None = None


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Path], Setup]
    error: type[BaseException] | None  # None: the call must succeed
    words: tuple[str, ...] = ()


def snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: sha256 of a regular file | kind}``; special files are never opened."""
    out: dict[str, str] = {}

    def walk(d: Path) -> None:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except PermissionError:
            out[str(d.relative_to(folder)) + "/"] = "unreadable folder"
            return
        for e in entries:
            rel = str(Path(e.path).relative_to(folder))
            mode = os.lstat(e.path).st_mode
            if stat.S_ISDIR(mode):
                out[rel + "/"] = "folder"
                walk(Path(e.path))
            elif stat.S_ISREG(mode):
                try:
                    out[rel] = hashlib.sha256(Path(e.path).read_bytes()).hexdigest()
                except PermissionError:
                    out[rel] = "unreadable file"
            else:
                out[rel] = f"special {stat.S_IFMT(mode):o}"

    walk(folder)
    return out


def frames_array(seed: int = 0, t: int = T, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (t, h, w, 3), dtype=np.uint8)


def save_frames(folder: Path, ext: str = "jpg", n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames_array(t=n)):
        paths.append(folder / f"{i:05d}.{ext}")
        Image.fromarray(frame).save(paths[-1])
    return paths


@functools.cache
def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit grey PNG of ``width`` x ``height`` zeros: a few KB that decode to
    ``width * height`` pixels (20000 x 20000: 48 KB for 400 million pixels; 0.2 s to make)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    z, parts = zlib.compressobj(9), []
    for start in range(0, height, 1000):
        parts.append(z.compress(row * min(1000, height - start)))
    parts.append(z.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


BOMB = (20000, 20000)  # above 2 x PIL.Image.MAX_IMAGE_PIXELS: PIL raises DecompressionBombError
BIG = (10000, 10000)  # above MAX_IMAGE_PIXELS only: PIL merely warns (DecompressionBombWarning)


def test_engine_png_bomb_generator_is_cheap_and_real():
    data = png_bomb(*BOMB)
    assert len(data) < 100_000
    assert BOMB[0] * BOMB[1] > 2 * Image.MAX_IMAGE_PIXELS > BIG[0] * BIG[1] > Image.MAX_IMAGE_PIXELS


@functools.lru_cache(maxsize=1)
def small_model():
    """One random-weight SAM 2.1 tiny model at 64 px for all session cases (built on first use)."""
    torch.set_num_threads(2)
    return random_model("sam2.1_hiera_t", 64)


def video_state(tracker: sam2s.VideoTracker) -> dict:
    return {
        k: (
            sorted(o.prompts),
            {t: m.pred_masks.numpy().tobytes() for t, m in o.pending.items()},
            {t: m.pred_masks.numpy().tobytes() for t, m in o.cond.items()},
            {t: m.pred_masks.numpy().tobytes() for t, m in o.non_cond.items()},
            dict(o.tracked),
        )
        for k, o in tracker.objects.items()
    }


def flow_state(tracker: FlowTracker) -> dict:
    return {
        k: (
            {t: v.tobytes() for t, v in o.cond.items()},
            {t: v.tobytes() for t, v in o.tracked.items()},
            sorted(o.prompts),
        )
        for k, o in tracker.objects.items()
    }


# ------------------------------------------------------------------------------------ checkpoints
class RunsCode:
    """Unpickling it would run ``touch <marker>`` through ``os.system`` (a malicious checkpoint)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class NotATensor:
    """Any custom object: unpickling it imports and constructs arbitrary classes."""


SYSTEM = f"{os.system.__module__}.system"  # "posix.system" on Linux and macOS


def ckpt(writer: Callable[[Path], None]) -> Callable[[Path], Setup]:
    def setup(tmp: Path) -> Setup:
        path = tmp / "model.pt"
        writer(path)
        return Setup(lambda: load_state_dict(path))

    return setup


def pickle_code(protocol: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with open(path, "wb") as f:
            pickle.dump({"model": RunsCode(path.parent / "code-ran")}, f, protocol=protocol)

    return write


def truncated_zip(path: Path) -> None:
    torch.save({"model": {"w": torch.zeros(64, 64)}}, path)
    path.write_bytes(path.read_bytes()[:3000])


CODE_WORDS = ("was refused", "contains code or objects other than tensors", "refusing to unpickle", "re-save")
DAMAGED_WORDS = ("truncated or not a PyTorch checkpoint", "download it again")


def cancelled_download(tmp: Path) -> Setup:
    """A download whose cancel event is set before it starts: refused before connecting (the URL
    is never tried) and before the cache folder is created."""
    info = CheckpointInfo("x", "sam2.1_hiera_t", "http://127.0.0.1:9/x.pt", "x.pt", 10, "0" * 64)
    cancel = threading.Event()
    cancel.set()
    return Setup(lambda: download(info, cache_dir=tmp / "cache", progress=False, cancel=cancel))


CHECKPOINT_CASES = [
    Case("download-cancelled-before-start", cancelled_download, DownloadCancelled, ("x.pt", "cancelled after 0 of 10")),
    Case("ckpt-pickle-protocol0-runs-code", ckpt(pickle_code(0)), CheckpointError, (*CODE_WORDS, SYSTEM)),
    Case("ckpt-pickle-protocol4-runs-code", ckpt(pickle_code(4)), CheckpointError, (*CODE_WORDS, SYSTEM)),
    Case(
        "ckpt-zip-custom-object",
        ckpt(lambda p: torch.save({"model": {"w": torch.zeros(2)}, "x": NotATensor()}, p)),
        CheckpointError,
        (*CODE_WORDS, "faults_engine.NotATensor"),
    ),
    Case(
        "ckpt-legacy-format-custom-object",
        ckpt(lambda p: torch.save({"x": NotATensor()}, p, _use_new_zipfile_serialization=False)),
        CheckpointError,
        (*CODE_WORDS, "faults_engine.NotATensor"),
    ),
    Case(
        "ckpt-numpy-arrays",
        ckpt(lambda p: torch.save({"model": {"w": np.zeros(3)}}, p)),
        CheckpointError,
        ("objects other than tensors", "numpy", "re-save"),
    ),
    Case("ckpt-truncated-zip", ckpt(truncated_zip), CheckpointError, (*DAMAGED_WORDS, "zip archive is incomplete")),
    Case("ckpt-random-bytes", ckpt(lambda p: p.write_bytes(bytes(range(256)) * 40)), CheckpointError, DAMAGED_WORDS),
    Case(
        "ckpt-empty-file", ckpt(lambda p: p.write_bytes(b"")), CheckpointError, ("empty (0 bytes)", "download it again")
    ),
    Case(
        "ckpt-dict-with-non-tensors",
        ckpt(lambda p: torch.save({"model": {"w": torch.zeros(1), "step": 3}}, p)),
        CheckpointError,
        ("not all named tensors", "'step'", "expected a dict of tensors"),
    ),
]


# ------------------------------------------------------------------------------------ frame sources
SOURCE_FIX = ("video file", "image folder")


def fifo_source(name: str, opener: Callable[[Any], Any] = open_frames) -> Callable[[Path], Setup]:
    def setup(tmp: Path) -> Setup:
        os.mkfifo(tmp / name)
        return Setup(lambda: opener(tmp / name))

    return setup


def fifo_in_folder(tmp: Path) -> Setup:
    save_frames(tmp / "frames", "png", 2)
    os.mkfifo(tmp / "frames" / "00002.png")
    return Setup(lambda: open_frames(tmp / "frames"))


def socket_source(tmp: Path) -> Setup:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp / "camera.mp4"))
    return Setup(lambda: open_frames(tmp / "camera.mp4"), cleanup=sock.close)


def in_child(target: Path, chmod: Path) -> Setup:
    """Open ``target`` in a child process without the root capabilities (``setpriv``), with
    ``chmod`` made unreadable (mode 000); re-raise the child's error here by its type."""
    cmd = [sys.executable, "-c", CHILD, str(target)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot drop the capability to read any file")
        cmd = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *cmd]
    mode = chmod.stat().st_mode
    os.chmod(chmod, 0)

    def action():
        env = dict(os.environ, PYTHONPATH=str(ROOT / "SAM2SSlicer"))
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert run.returncode == 0, run.stderr  # the child exits normally after reporting
        kind, message = json.loads(run.stdout.strip().splitlines()[-1])
        if kind != "ok":
            raise {"FrameSourceError": FrameSourceError, "PermissionError": PermissionError}.get(kind, RuntimeError)(
                f"{kind}: {message}"
            )

    return Setup(action, cleanup=lambda: os.chmod(chmod, stat.S_IMODE(mode)))


CHILD = """
import json, sys
from sam2s.frames import open_frames
try:
    source = open_frames(sys.argv[1])
    source.get(0)
    print(json.dumps(["ok", ""]))
except Exception as error:
    print(json.dumps([type(error).__name__, str(error)]))
"""


def unlistable_folder(tmp: Path) -> Setup:
    save_frames(tmp / "frames")
    return in_child(tmp / "frames", tmp / "frames")


def unreadable_image(tmp: Path) -> Setup:
    paths = save_frames(tmp / "frames")
    return in_child(tmp / "frames", paths[0])


def damaged_on_get(kind: str) -> Callable[[Path], Setup]:
    """Three frames; the middle one is cut in half (JPEG) or has zeroed compressed data (PNG):
    the folder opens (headers only), ``get(1)`` fails."""

    def setup(tmp: Path) -> Setup:
        paths = save_frames(tmp / "frames", "jpg" if kind == "truncated" else "png")
        data = bytearray(paths[1].read_bytes())
        if kind == "truncated":
            data = data[: len(data) // 2]
        else:
            start = data.index(b"IDAT") + 100
            data[start : start + 64] = bytes(64)
        paths[1].write_bytes(bytes(data))
        source = open_frames(tmp / "frames")
        assert len(source) == 3 and source.get(2).shape == (H, W, 3)

        def check(_):
            assert ImageFile.LOAD_TRUNCATED_IMAGES is False

        return Setup(lambda: source.get(1), check=check)

    return setup


def bomb_folder(size: tuple[int, int]) -> Callable[[Path], Setup]:
    def setup(tmp: Path) -> Setup:
        (tmp / "frames").mkdir()
        (tmp / "frames" / "00000.png").write_bytes(png_bomb(*size))
        return Setup(lambda: open_frames(tmp / "frames"))

    return setup


def tracker_on_fifo(tmp: Path) -> Setup:
    os.mkfifo(tmp / "video.mp4")
    return Setup(lambda: sam2s.VideoTracker(small_model(), tmp / "video.mp4"))


FRAME_CASES = [
    Case("frames-fifo-video", fifo_source("clip.mp4"), FrameSourceError, ("clip.mp4 is a named pipe", *SOURCE_FIX)),
    Case("frames-fifo-no-extension", fifo_source("pipe"), FrameSourceError, ("pipe is a named pipe", *SOURCE_FIX)),
    Case(
        "frames-fifo-videofileframes",
        fifo_source("clip.mkv", VideoFileFrames),
        FrameSourceError,
        ("named pipe (FIFO)", "not a regular file or folder", *SOURCE_FIX),
    ),
    Case(
        "frames-fifo-among-images",
        fifo_in_folder,
        FrameSourceError,
        ("frame image", "00002.png is a named pipe", "remove it or replace it"),
    ),
    Case(
        "frames-char-device",
        lambda tmp: Setup(lambda: open_frames("/dev/null")),
        FrameSourceError,
        ("/dev/null is a character device", *SOURCE_FIX),
    ),
    Case("frames-socket", socket_source, FrameSourceError, ("camera.mp4 is a socket", *SOURCE_FIX)),
    Case(
        "frames-unlistable-folder",
        unlistable_folder,
        FrameSourceError,
        ("image folder", "cannot be listed", "Permission denied", "check its permissions"),
    ),
    Case(
        "frames-unreadable-image",
        unreadable_image,
        FrameSourceError,
        ("00000.jpg cannot be opened", "Permission denied", "check its permissions", "chmod a+r"),
    ),
    Case(
        "frames-truncated-jpeg-on-get",
        damaged_on_get("truncated"),
        FrameSourceError,
        ("00001.jpg could not be read", "truncated", "replace or remove it"),
    ),
    Case(
        "frames-damaged-png-on-get",
        damaged_on_get("damaged"),
        FrameSourceError,
        ("00001.png could not be read", "damaged or incomplete", "replace or remove it"),
    ),
    Case(
        "frames-decompression-bomb",
        bomb_folder(BOMB),
        FrameSourceError,
        ("00000.png is too large to decode", "400000000 pixels", "decompression bomb", "MAX_IMAGE_PIXELS"),
    ),
    Case(
        "frames-image-above-pixel-limit",
        bomb_folder(BIG),
        FrameSourceError,
        ("00000.png is 10000x10000 pixels", "decompression-bomb limit", "replace it", "MAX_IMAGE_PIXELS"),
    ),
    Case("tracker-frames-from-fifo", tracker_on_fifo, FrameSourceError, ("video.mp4 is a named pipe", *SOURCE_FIX)),
]


# ------------------------------------------------------------------------------------ prompts files
def prompts_file(doc: Any, masks: dict[str, bytes] | None = None, **kwargs) -> Callable[[Path], Setup]:
    def setup(tmp: Path) -> Setup:
        for name, data in (masks or {}).items():
            (tmp / name).write_bytes(data)
        path = tmp / "prompts.json"
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        return Setup(lambda: load_prompts(path, **kwargs))

    return setup


def one_object(oid: Any = 1, *prompts: dict) -> dict:
    return {"objects": [{"id": oid, "prompts": list(prompts) or [{"frame": 0, "points": [[5, 5]], "labels": [1]}]}]}


def png_bytes(h: int, w: int) -> bytes:
    """A white ``h`` x ``w`` grey PNG (a mask covering the whole image)."""
    out = io.BytesIO()
    Image.fromarray(np.full((h, w), 255, np.uint8)).save(out, format="PNG")
    return out.getvalue()


ID_WORDS = ('"id"', "integer id in 1..254", "0 is the background", "255 marks void")
BOX = {"frame": 1, "box": [1, 1, 20, 20]}

PROMPT_CASES = [
    Case(
        "prompts-json-nested-array",
        prompts_file("[" * 100_000),
        PromptsFileError,
        ("nested more than 64 levels", '{"objects"'),
    ),
    Case(
        "prompts-json-nested-in-objects",
        prompts_file('{"objects": ' + "[" * 50_000),
        PromptsFileError,
        ("prompts.json", "nested more than 64 levels", "check how the file was written"),
    ),
    Case(
        "prompts-mask-decompression-bomb",
        prompts_file(one_object(1, {"frame": 0, "mask": "bomb.png"}), {"bomb.png": png_bomb(*BOMB)}),
        PromptsFileError,
        ('"mask"', "bomb.png is too large to decode", "400000000 pixels", "not decoded", "save the mask at the frame"),
    ),
    Case(
        "prompts-mask-above-pixel-limit",
        prompts_file(one_object(1, {"frame": 0, "mask": "big.png"}), {"big.png": png_bomb(*BIG)}),
        PromptsFileError,
        ("big.png is 10000x10000 pixels", "decompression-bomb limit", "not decoded"),
    ),
    Case(
        "prompts-mask-size-from-header",
        prompts_file(one_object(1, {"frame": 0, "mask": "m.png"}), {"m.png": png_bytes(20, 30)}, frame_size=(H, W)),
        PromptsFileError,
        ('"mask"', "m.png is 30x20 (W x H) but the frames are 40x32", "save the mask at the frame size"),
    ),
    Case("prompts-id-0", prompts_file(one_object(0)), PromptsFileError, (*ID_WORDS, "got 0")),
    Case("prompts-id-negative", prompts_file(one_object(-1)), PromptsFileError, (*ID_WORDS, "got -1")),
    Case("prompts-id-255", prompts_file(one_object(255)), PromptsFileError, (*ID_WORDS, "got 255")),
    Case("prompts-id-300", prompts_file(one_object(300)), PromptsFileError, (*ID_WORDS, "got 300")),
    Case("prompts-id-1e20", prompts_file(one_object(1e20)), PromptsFileError, (*ID_WORDS, "got 1e+20")),
    Case(
        "prompts-two-boxes-one-frame",
        prompts_file(one_object(3, BOX, {"frame": 1, "points": [[2, 2]], "labels": [1]}, BOX)),
        PromptsFileError,
        ("prompts[2]", 'a second "box" for frame 1', "prompts[0] already", "one box per object and frame", "Keep one"),
    ),
    Case(
        "prompts-two-masks-one-frame",
        prompts_file(
            one_object(3, {"frame": 2, "mask": "m.png"}, {"frame": 2, "mask": "m.png", "box": [1, 1, 5, 5]}),
            {"m.png": png_bytes(H, W)},
        ),
        PromptsFileError,
        ('a second "mask" for frame 2', "one mask per object and frame", "combine the masks"),
    ),
    Case(
        "prompts-validate-id-255-in-code",
        lambda tmp: Setup(
            lambda: validate([ObjectPrompts(255, "x", None, [Prompt(0, box=np.array([0.0, 0, 4, 4]))])], source="code")
        ),
        PromptsFileError,
        ("code: objects[0]", *ID_WORDS),
    ),
]


# ------------------------------------------------------------------------------------ engine sessions
def video_session(call: Callable[[sam2s.VideoTracker], Any]) -> Callable[[Path], Setup]:
    def setup(tmp: Path) -> Setup:
        tracker = sam2s.VideoTracker(small_model(), frames_array())
        tracker.add_points(0, 1, [[10, 10]], [1])
        return Setup(lambda: call(tracker), state=lambda: video_state(tracker))

    return setup


def busy(
    make: Callable[[], Any], call: Callable[[Any], Any], state: Callable[[Any], Any], retry: bool = True
) -> Callable[[Path], Setup]:
    """A session whose propagate() generator has yielded once; ``call`` must be refused, then work
    once the generator is closed (when ``retry``)."""

    def setup(tmp: Path) -> Setup:
        tracker = make()
        tracker.add_points(0, 1, [[10, 10]], [1])
        gen = tracker.propagate()
        assert next(gen)[0] == 0

        def cleanup():
            gen.close()
            if retry:
                call(tracker)  # allowed again

        return Setup(lambda: call(tracker), state=lambda: state(tracker), cleanup=cleanup)

    return setup


def new_video():
    return sam2s.VideoTracker(small_model(), frames_array())


def new_flow():
    return FlowTracker(frames_array())


RANGE_WORDS = ("is out of range", "1..254", "0 is the background", "255 marks void", "choose an id in that range")
BUSY_WORDS = ("while a propagate() loop", "Finish the loop", ".close() on the propagate() generator")
MASK = np.zeros((H, W), bool)
MASK[5:20, 5:25] = True

ENGINE_CASES = [
    Case(
        "tracker-id-0-add_points",
        video_session(lambda t: t.add_points(1, 0, [[5, 5]], [1])),
        PromptError,
        ("obj_id=0", *RANGE_WORDS),
    ),
    Case(
        "tracker-id-negative-add_box",
        video_session(lambda t: t.add_box(1, -1, [1, 1, 9, 9])),
        PromptError,
        ("obj_id=-1", *RANGE_WORDS),
    ),
    Case(
        "tracker-id-255-add_mask",
        video_session(lambda t: t.add_mask(1, 255, MASK)),
        PromptError,
        ("obj_id=255", *RANGE_WORDS),
    ),
    Case(
        "tracker-id-10e20-add_points",
        video_session(lambda t: t.add_points(1, 10**20, [[5, 5]], [1])),
        PromptError,
        ("obj_id=100000000000000000000", *RANGE_WORDS),
    ),
    Case(
        "tracker-propagate-unknown-obj_ids",
        video_session(lambda t: next(t.propagate(obj_ids=[1, 7]))),
        KeyError,
        ("No object with id 7", "known ids: [1]"),
    ),
    Case(
        "tracker-propagate-empty-obj_ids",
        video_session(lambda t: next(t.propagate(obj_ids=[]))),
        PromptError,
        ("obj_ids is empty", "None to track all"),
    ),
    Case(
        "tracker-busy-add_points",
        busy(new_video, lambda t: t.add_points(2, 1, [[5, 5]], [1]), video_state),
        TrackerBusyError,
        ("add_points()", *BUSY_WORDS),
    ),
    Case(
        "tracker-busy-add_box",
        busy(new_video, lambda t: t.add_box(2, 2, [1, 1, 9, 9]), video_state),
        TrackerBusyError,
        ("add_box()", *BUSY_WORDS),
    ),
    Case(
        "tracker-busy-add_mask",
        busy(new_video, lambda t: t.add_mask(2, 1, MASK), video_state),
        TrackerBusyError,
        ("add_mask()", *BUSY_WORDS),
    ),
    Case(
        "tracker-busy-remove_object",
        busy(new_video, lambda t: t.remove_object(1), video_state),
        TrackerBusyError,
        ("remove_object()", *BUSY_WORDS),
    ),
    Case(
        "tracker-busy-reset",
        busy(new_video, lambda t: t.reset(), video_state),
        TrackerBusyError,
        ("reset()", *BUSY_WORDS),
    ),
    Case(
        "tracker-busy-second-propagate",
        busy(new_video, lambda t: next(t.propagate()), video_state),
        TrackerBusyError,
        ("propagate()", *BUSY_WORDS),
    ),
    Case(
        "flow-busy-add_box",
        busy(new_flow, lambda t: t.add_box(2, 1, [1, 1, 9, 9]), flow_state),
        TrackerBusyError,
        ("add_box()", *BUSY_WORDS),
    ),
    Case(
        "flow-busy-reset",
        busy(new_flow, lambda t: t.reset(), flow_state),
        TrackerBusyError,
        ("reset()", *BUSY_WORDS),
    ),
]


def flow_session(call: Callable[[FlowTracker], Any], frame: int = 1) -> Callable[[Path], Setup]:
    def setup(tmp: Path) -> Setup:
        tracker = FlowTracker(frames_array(t=6))
        tracker.add_points(frame, 1, [[10, 10]], [1])
        return Setup(lambda: call(tracker), state=lambda: flow_state(tracker))

    return setup


def tiny_frames(h: int, w: int) -> Callable[[Path], Setup]:
    """Frames below DIS's 12 x 12 minimum: box and click prompts, then both directions."""

    def setup(tmp: Path) -> Setup:
        frames = frames_array(h=h, w=w)
        tracker = FlowTracker(frames)

        def action():
            tracker.add_box(0, 1, [0, 0, w, h])
            tracker.add_points(0, 2, [[w / 2, h / 2]], [1])
            forward = [logits for _, _, logits in tracker.propagate()]
            tracker.add_points(T - 1, 1, [[0, 0]], [0])
            backward = [t for t, _, _ in tracker.propagate(start=T - 1, reverse=True)]
            return forward, backward

        def check(result):
            forward, backward = result
            assert len(forward) == T and all(v.shape == (2, h, w) and v.dtype == np.float32 for v in forward)
            assert backward == list(range(T - 1, -1, -1))

        return Setup(action, check=check)

    return setup


NOTHING_WORDS = ("Nothing to track", "the objects are prompted on frames [3]", "Start at a prompted frame")

FLOW_CASES = [
    Case("flow-id-0-add_mask", flow_session(lambda t: t.add_mask(1, 0, MASK)), PromptError, ("obj_id=0", *RANGE_WORDS)),
    Case(
        "flow-start-after-every-prompt",
        flow_session(lambda t: next(t.propagate(start=5)), frame=3),
        PromptError,
        (*NOTHING_WORDS, "forward from start=5", "before frame 5 (e.g. start=3)", "or track up to frame 5 first"),
    ),
    Case(
        "flow-start-before-every-prompt-backward",
        flow_session(lambda t: next(t.propagate(start=1, reverse=True)), frame=3),
        PromptError,
        (*NOTHING_WORDS, "backward from start=1", "(e.g. start=3)"),
    ),
    Case(
        "flow-start-on-first-frame-before-prompts",
        flow_session(lambda t: next(t.propagate(start=0)), frame=3),
        PromptError,
        (*NOTHING_WORDS, "it is the first frame"),
    ),
    Case(
        "flow-propagate-unknown-obj_ids",
        flow_session(lambda t: next(t.propagate(obj_ids=[2]))),
        KeyError,
        ("No object with id 2", "known ids: [1]"),
    ),
    *[
        Case(f"flow-tiny-frames-{h}x{w}", tiny_frames(h, w), None)
        for h, w in ((8, 8), (2, 40), (40, 2), (3, 3), (1, 1))
    ],
]


# ------------------------------------------------------------------------------------ evaluation inputs
def label_folders(tmp: Path, gt: dict[str, np.ndarray], pred: dict[str, np.ndarray]) -> tuple[Path, Path]:
    for folder, images in (("gt", gt), ("pred", pred)):
        (tmp / folder).mkdir()
        for name, labels in images.items():
            Image.fromarray(labels).save(tmp / folder / name)
    return tmp / "pred", tmp / "gt"


def labels(*ids: int) -> np.ndarray:
    out = np.zeros((H, W), np.uint8)
    for i, k in enumerate(ids):
        out[4 + 6 * i : 9 + 6 * i, 5:30] = k
    return out


def eval_case(call: Callable[[Path, Path], Any], check: Callable[[Any], None] | None = None):
    def setup(tmp: Path) -> Setup:
        gt = {"00000.png": labels(1, 2), "00001.png": labels(1), "00002.png": labels(2)}
        pred_dir, gt_dir = label_folders(tmp, gt, {"00000.png": labels(1, 2)})
        return Setup(lambda: call(pred_dir, gt_dir), check=check)

    return setup


def label_file(data: bytes | np.ndarray) -> Callable[[Path], Setup]:
    def setup(tmp: Path) -> Setup:
        path = tmp / "00007.png"
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            Image.fromarray(data).save(path)
        return Setup(lambda: read_labels(path))

    return setup


def check_exclude(res):
    assert res["frames"] == ["00001.png", "00002.png"]


def check_missing(res):
    assert res["missing"] == ["00001.png", "00002.png"]
    assert res["objects"][1]["missing"] == ["00001.png"] and res["objects"][2]["missing"] == ["00002.png"]


WIDE = np.zeros((4, 4), np.uint16)
WIDE[1, 1] = 300

EVAL_CASES = [
    Case(
        "eval-labels-above-255",
        label_file(WIDE),
        ValueError,
        ("00007.png has labels 0..300", "valid range 0..255", "save it as an 8-bit"),
    ),
    Case(
        "eval-label-decompression-bomb",
        label_file(png_bomb(*BOMB)),
        ValueError,
        ("00007.png is too large to decode", "400000000 pixels", "not decoded", "frame size"),
    ),
    Case(
        "eval-label-above-pixel-limit",
        label_file(png_bomb(*BIG)),
        ValueError,
        ("00007.png is 10000x10000 pixels", "decompression-bomb limit", "not decoded"),
    ),
    Case("eval-exclude-digit-string", eval_case(lambda p, g: evaluate(p, g, exclude=["0"]), check_exclude), None),
    Case(
        "eval-exclude-wrong-type",
        eval_case(lambda p, g: evaluate(p, g, exclude=[0.0])),
        TypeError,
        ("exclude entries must be frame numbers", "'00000.png'", "0.0"),
    ),
    Case(
        "eval-exclude-everything",
        eval_case(lambda p, g: evaluate(p, g, exclude=["0", 1, "00002.png"])),
        ValueError,
        ("No ground-truth label PNG to evaluate", "excluding"),
    ),
    Case("eval-missing-predictions-per-object", eval_case(evaluate, check_missing), None),
]


# ------------------------------------------------------------------------------------ the test
CASES = CHECKPOINT_CASES + FRAME_CASES + PROMPT_CASES + ENGINE_CASES + FLOW_CASES + EVAL_CASES


def test_engine_cases_are_many_and_distinct():
    assert len(CASES) >= 35
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_engine_fault(case: Case, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    prepared = case.setup(work)
    try:
        files_before = snapshot(work)
        state_before = prepared.state() if prepared.state else None
        if case.error is None:
            result = prepared.action()
            if prepared.check:
                prepared.check(result)
        else:
            with pytest.raises(case.error) as caught:
                prepared.action()
            message = str(caught.value)
            for word in case.words:
                assert word in message, f"{word!r} not in: {message}"
            if prepared.check:
                prepared.check(caught.value)
        assert snapshot(work) == files_before  # byte-identical, nothing added or removed
        if prepared.state:
            assert prepared.state() == state_before  # the session did not change
    finally:
        if prepared.cleanup:
            prepared.cleanup()
