"""Limits and exposures of the tracking server (issue 21, "Reliability round 3", items 3, 5, 9, 12
and 13): every size, count and index a request carries is bounded before anything is allocated
(422), a session, upload or job that would not fit in the available memory gets 507, a token
has a byte quota (413), shared memory is attached only under the client's secret names (403),
malformed binary bodies get 422 (never 500), ``HEAD /health`` answers, ``--token-file`` replaces
``--token``, limits <= 0 are refused, SIGTERM exits 0, and ``sam2s serve`` takes the server's
options. The in-process tests use FastAPI's ``TestClient`` on ``create_app`` with its default
limits; the command-line ones run real server processes."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import sam2s.serving.server as server_module  # noqa: E402
from conftest import ROOT  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from sam2s.serving import protocol  # noqa: E402
from sam2s.serving.client import Client  # noqa: E402
from sam2s.serving.protocol import ProtocolError, decode, encode  # noqa: E402
from sam2s.serving.server import create_app  # noqa: E402

TOKEN = "token-limits-" + "l" * 40
HEADERS = {"Authorization": f"Bearer {TOKEN}", "X-SAM2S-Protocol": "1"}
FLOW = {"engine": "flow"}
T, H, W = 4, 24, 32
READY = re.compile(r"^SAM2S server listening on (https?://\S+?)(?: token=(\S+))?$")


# ------------------------------------------------------------------------------------------------
# In-process server
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """``frames``: 4 PNG frames of 32x24; ``wide``: one frame 8200 px wide; ``empty``: a checkpoint
    cache without checkpoints; ``weights.pt``: a checkpoint that is never built."""
    base = tmp_path_factory.mktemp("limits")
    rng = np.random.default_rng(0)
    (base / "frames").mkdir()
    for t in range(T):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(base / "frames" / f"{t:05d}.png")
    (base / "wide").mkdir()
    Image.fromarray(np.zeros((2, 8200, 3), np.uint8)).save(base / "wide" / "00000.png")
    (base / "empty").mkdir()
    (base / "weights.pt").write_bytes(b"never read")
    return base


@pytest.fixture(scope="module")
def api(folders):
    """``api(method, path, json=..., content=...)`` -> ``(status, answer)`` on one in-process server
    with the default limits, the frame folders allowed; the answer is the JSON (or the raw bytes)."""
    app = create_app([TOKEN], [folders])
    with TestClient(app) as client:

        def call(method: str, path: str, **kwargs):
            response = client.request(method, path, headers=HEADERS, **kwargs)
            kind = response.headers.get("content-type", "")
            return response.status_code, response.json() if kind.startswith("application/json") else response.content

        call.client = client
        yield call


def video(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (T, H, W, 3), dtype=np.uint8)


def upload(api, frames: np.ndarray) -> str:
    status, answer = api("POST", "/uploads", json={"shape": list(frames.shape)})
    assert status == 200, answer
    uid = answer["upload"]
    status, answer = api("PUT", f"/uploads/{uid}?start=0", content=encode({}, [frames]))
    assert status == 200, answer
    return uid


def flow_session(api) -> str:
    status, answer = api("POST", "/sessions", json={"frames": {"upload": upload(api, video())}, "model": FLOW})
    assert status == 200, answer
    return answer["session"]


def release_shared_frames(block) -> None:
    """Close and unlink a block of ``create_shared_frames`` that the in-process server attached.
    Before Python 3.13 attaching unregisters the name from this process's resource tracker (as a
    server in its own process must: the client owns the block), so it is registered again here,
    or ``unlink`` would make the tracker print a ``KeyError``."""
    from multiprocessing import resource_tracker

    block.close()
    if sys.version_info < (3, 13):
        resource_tracker.register(block._name, "shared_memory")  # noqa: SLF001
    block.unlink()


def refused(status_answer, status: int, code: str, *words: str) -> None:
    status_got, answer = status_answer
    assert status_got == status, (status_got, answer)
    assert answer["code"] == code, answer
    for word in words:
        assert word in answer["detail"], (word, answer["detail"])


# ------------------------------------------------------------------------------------------------
# Item 3: sizes, counts and indices, and memory
# ------------------------------------------------------------------------------------------------


def test_frame_sides_beyond_the_limit_get_422_from_every_source(api, folders):
    """The issue's 60000 x 60000 frames (10.8 GB per frame on the first prompt) and 8200 px frames
    of every source are refused when the session or upload is created, before anything is read."""
    path = str(folders / "frames")
    for frames in [
        {"path": path, "size": [60000, 60000]},
        {"path": path, "size": [8200, 10]},
        {"path": str(folders / "wide")},  # the file's own size
        {"path": str(folders / "wide"), "size": [64, 2]},  # decoded at its own size before resizing
    ]:
        refused(
            api("POST", "/sessions", json={"frames": frames, "model": FLOW}), 422, "limit_exceeded", "--max-frame-side"
        )
    refused(api("POST", "/uploads", json={"shape": [1, 9000, 9000, 3]}), 422, "limit_exceeded", "9000x9000")
    status, answer = api("POST", "/uploads")
    assert status == 200, answer
    uid = answer["upload"]
    chunk = encode({}, [np.zeros((1, 2, 8200, 3), np.uint8)])
    refused(api("PUT", f"/uploads/{uid}?start=0", content=chunk), 422, "limit_exceeded", "8200x2")
    assert api("PUT", f"/uploads/{uid}?start=0", content=encode({}, [video()]))[0] == 200  # nothing was kept
    assert api("DELETE", f"/uploads/{uid}")[0] == 200
    status, answer = api("POST", "/sessions", json={"frames": {"path": path, "size": [8192, 16]}, "model": FLOW})
    assert status == 200 and (answer["width"], answer["height"]) == (8192, 16), answer  # the limit itself is fine
    assert api("DELETE", f"/sessions/{answer['session']}")[0] == 200


def test_image_size_beyond_the_limit_gets_422_before_the_model(api, folders, monkeypatch):
    """``image_size`` 32000 (7.5 GB on the first prompt) is refused before the checkpoint is even
    looked up (here it is missing: a 400 would mean the size was not checked first): by the one
    rule of every front end (``sam2s.spec``, at most 4096), and below that by the server's limit."""
    monkeypatch.setenv("SAM2S_CACHE_DIR", str(folders / "empty"))
    model = {"engine": "sam2", "config": "sam2.1_hiera_t", "device": "cpu"}
    frames = {"path": str(folders / "frames")}
    answer = api("POST", "/sessions", json={"frames": frames, "model": {**model, "image_size": 32000}})
    refused(answer, 422, "invalid_request", "image size 32000: give a multiple of 32 from 64 to 4096")
    for size in (4096, 2080):
        answer = api("POST", "/sessions", json={"frames": frames, "model": {**model, "image_size": size}})
        refused(answer, 422, "limit_exceeded", f"model.image_size is {size}", "--max-image-size")
    status, answer = api("POST", "/sessions", json={"frames": frames, "model": {**model, "image_size": 2048}})
    assert (status, answer["code"]) == (400, "checkpoint_not_found"), answer  # within the limit: next check


def test_frames_per_session_beyond_the_limit_get_422(api, folders):
    indices = [0] * 100_001
    answer = api(
        "POST", "/sessions", json={"frames": {"path": str(folders / "frames"), "frame_indices": indices}, "model": FLOW}
    )
    refused(answer, 422, "limit_exceeded", "100,001 frames", "--max-frames")
    refused(api("POST", "/uploads", json={"shape": [100_001, 1, 1, 3]}), 422, "limit_exceeded", "--max-frames")


def test_passes_and_frames_per_job_beyond_the_limits_get_422(api):
    sid = flow_session(api)
    assert api("POST", f"/sessions/{sid}/objects/1/box", json={"frame": 0, "box": [4, 4, 20, 16]})[0] == 200
    jobs = f"/sessions/{sid}/jobs"
    refused(
        api("POST", jobs, json={"passes": [[0, 0, False]] * 17}), 422, "limit_exceeded", "17 passes", "--max-passes"
    )
    answer = api("POST", jobs, json={"passes": [[0, 3, False]] * 3})  # 12 frames of a 4-frame session
    refused(answer, 422, "limit_exceeded", "12 frames", "2 times")
    assert api("GET", f"/sessions/{sid}")[1]["jobs"] == []  # nothing was started
    status, answer = api("POST", jobs, json={"passes": [[0, 3, False], [3, 0, True]]})  # 8 frames: fine
    assert status == 200 and answer["total"] == 8, answer
    api("DELETE", f"/sessions/{sid}")


def test_objects_per_session_beyond_the_limit_get_422(api):
    sid = flow_session(api)
    box = {"frame": 0, "box": [4, 4, 20, 16]}
    for oid in range(1, 65):
        assert api("POST", f"/sessions/{sid}/objects/{oid}/box", json=box)[0] == 200, oid
    refused(api("POST", f"/sessions/{sid}/objects/65/box", json=box), 422, "limit_exceeded", "--max-objects")
    clicks = {"frame": 0, "points": [[8, 8]], "labels": [1]}
    refused(api("POST", f"/sessions/{sid}/objects/200/points", json=clicks), 422, "limit_exceeded")
    mask = encode({"frame": 0}, [np.ones((H, W), bool)])
    refused(api("POST", f"/sessions/{sid}/objects/66/mask", content=mask), 422, "limit_exceeded")
    assert api("POST", f"/sessions/{sid}/objects/64/points", json=clicks)[0] == 200  # an existing object
    assert len(api("GET", f"/sessions/{sid}")[1]["obj_ids"]) == 64
    api("DELETE", f"/sessions/{sid}")


def test_what_does_not_fit_in_the_available_memory_gets_507(api, folders, monkeypatch):
    """Sessions (their frames and, for SAM 2, ``image_size ** 2`` activations), uploads and a job's
    results are compared with the available memory before anything is allocated."""
    sid = flow_session(api)
    assert api("POST", f"/sessions/{sid}/objects/1/box", json={"frame": 0, "box": [4, 4, 20, 16]})[0] == 200
    available = 64 * 2**20
    monkeypatch.setattr(server_module, "available_memory_bytes", lambda: available, raising=False)
    frames = {"path": str(folders / "frames"), "frame_indices": [0, 1], "size": [8000, 8000]}
    answer = api("POST", "/sessions", json={"frames": frames, "model": FLOW})
    refused(answer, 507, "insufficient_memory", "2 frames of 8000x8000 pixels")
    assert answer[1]["available_bytes"] == available and answer[1]["needed_bytes"] > 16 * 8000 * 8000
    model = {"engine": "sam2", "config": "sam2.1_hiera_t", "checkpoint": str(folders / "weights.pt"), "device": "cpu"}
    monkeypatch.setattr(server_module, "available_memory_bytes", lambda: 2 * 2**30, raising=False)
    answer = api(
        "POST", "/sessions", json={"frames": {"path": str(folders / "frames")}, "model": {**model, "image_size": 2048}}
    )
    refused(answer, 507, "insufficient_memory", "a SAM 2 model at image_size 2048")  # before the model is built
    assert answer[1]["needed_bytes"] >= 4 * 2**30
    monkeypatch.setattr(server_module, "available_memory_bytes", lambda: available, raising=False)
    refused(api("POST", "/uploads", json={"shape": [1000, 240, 320, 3]}), 507, "insufficient_memory", "an upload")
    answer = api("POST", f"/sessions/{sid}/jobs", json={"passes": [[0, 3, False]], "logits": True})
    assert answer[0] == 200  # 4 x 32 x 24 float32: fits
    monkeypatch.setattr(server_module, "available_memory_bytes", lambda: 1000, raising=False)
    deadline = time.monotonic() + 60
    while api("GET", f"/sessions/{sid}")[1]["running_job"] is not None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    answer = api("POST", f"/sessions/{sid}/jobs", json={"passes": [[0, 3, False]], "logits": True})
    refused(answer, 507, "insufficient_memory", "this job's results")
    api("DELETE", f"/sessions/{sid}")


def test_session_memory_estimate_scales_with_the_image_size():
    from sam2s.resources import SAM2_BYTES_PER_INPUT_PIXEL
    from sam2s.serving.server import estimate_session_bytes

    flow = estimate_session_bytes(1920, 1080)
    assert estimate_session_bytes(1920, 1080, image_size=1024) - flow == SAM2_BYTES_PER_INPUT_PIXEL * 1024**2
    assert estimate_session_bytes(1920, 1080, image_size=2048) > 4 * 2**30  # at least 4 GiB
    assert estimate_session_bytes(60000, 60000) > 50 * 2**30


def test_version_lists_the_limits(api):
    status, info = api("GET", "/version")
    assert status == 200
    expected = {
        "max_upload_bytes": 8 * 2**30,
        "max_token_bytes": 16 * 2**30,
        "max_sessions_per_token": 8,
        "max_frame_side": 8192,
        "max_image_size": 2048,
        "max_frames": 100_000,
        "max_objects": 64,
        "max_passes": 16,
        "max_job_frames_per_session_frame": 2,
    }
    assert {k: info.get(k) for k in expected} == expected


# ------------------------------------------------------------------------------------------------
# Item 5: shared memory, quotas
# ------------------------------------------------------------------------------------------------


def test_shared_memory_is_attached_only_under_the_clients_secret_names(api):
    """A ``/dev/shm`` block the client did not create (another program's, or one with a guessable
    name) is refused before it is opened; ``create_shared_frames``'s blocks work."""
    from multiprocessing import shared_memory

    frames = video(3)
    other = shared_memory.SharedMemory(create=True, size=frames.nbytes)  # e.g. another program's block
    try:
        np.ndarray(frames.shape, np.uint8, buffer=other.buf)[:] = frames
        for name in (other.name, "sam2s_" + "0" * 21, "sam2s_" + "0" * 23, "sam2s_" + "A" * 22, "../" + other.name):
            answer = api(
                "POST", "/sessions", json={"frames": {"shm": name, "shape": list(frames.shape)}, "model": FLOW}
            )
            refused(answer, 403, "shm_not_allowed", "create_shared_frames")
    finally:
        other.close()
        other.unlink()

    from sam2s.serving.client import SHARED_FRAMES_PREFIX, create_shared_frames, is_shared_frames_name

    block, spec = create_shared_frames(frames)
    try:
        assert spec["shm"].startswith(SHARED_FRAMES_PREFIX) and is_shared_frames_name(spec["shm"])
        assert len(spec["shm"]) <= 29  # macOS: at most 31 characters with the leading '/'
        status, answer = api("POST", "/sessions", json={"frames": spec, "model": FLOW})
        assert status == 200 and answer["num_frames"] == T, answer
        api("DELETE", f"/sessions/{answer['session']}")
        wide = {"shm": spec["shm"], "shape": [1, 2, 9000, 3]}
        refused(api("POST", "/sessions", json={"frames": wide, "model": FLOW}), 422, "limit_exceeded")
    finally:
        release_shared_frames(block)


def test_each_token_has_a_byte_quota_over_its_uploads_and_sessions():
    from sam2s.serving.server import ServerLimits

    frame_bytes = H * W * 3
    limits = ServerLimits(max_upload_bytes=6 * frame_bytes, max_token_bytes=10 * frame_bytes)
    with TestClient(create_app([TOKEN, TOKEN + "2"], limits=limits)) as client:

        def call(method, path, token=TOKEN, **kwargs):
            headers = {**HEADERS, "Authorization": f"Bearer {token}"}
            response = client.request(method, path, headers=headers, **kwargs)
            return response.status_code, response.json()

        first = call("POST", "/uploads", json={"shape": [4, H, W, 3]})[1]["upload"]
        call("PUT", f"/uploads/{first}?start=0", content=encode({}, [video()]))
        session = call("POST", "/sessions", json={"frames": {"upload": first}, "model": FLOW})[1]["session"]
        second = call("POST", "/uploads", json={"shape": [4, H, W, 3]})  # 8 frames held in all
        assert second[0] == 200, second
        refused(call("POST", "/uploads", json={"shape": [3, H, W, 3]}), 413, "quota_exceeded", "--max-token-gb")
        chunked = call("POST", "/uploads")[1]["upload"]  # no declared shape: counted chunk by chunk
        assert call("PUT", f"/uploads/{chunked}?start=0", content=encode({}, [video()[:2]]))[0] == 200
        answer = call("PUT", f"/uploads/{chunked}?start=2", content=encode({}, [video()[:1]]))
        refused(answer, 413, "quota_exceeded")
        assert call("POST", "/uploads", token=TOKEN + "2", json={"shape": [4, H, W, 3]})[0] == 200  # another token
        assert call("DELETE", f"/sessions/{session}")[0] == 200  # closing the session frees its frames
        assert call("PUT", f"/uploads/{chunked}?start=2", content=encode({}, [video()[:2]]))[0] == 200


def test_limits_that_are_not_positive_are_refused():
    from sam2s.serving.server import ServerLimits

    for field, value, option in [
        ("max_upload_bytes", -5 * 2**30, "--max-upload-gb"),
        ("max_upload_bytes", 0, "--max-upload-gb"),
        ("max_frame_side", 0, "--max-frame-side"),
        ("max_objects", 300, "--max-objects"),
        ("idle_timeout_s", float("nan"), "--idle-timeout"),
        ("max_frames", 2.5, "--max-frames"),
        ("max_passes", True, "--max-passes"),
    ]:
        with pytest.raises(ValueError, match=re.escape(option)):
            ServerLimits(**{field: value})
    with pytest.raises(ValueError, match="raise --max-token-gb"):
        ServerLimits(max_upload_bytes=32 * 2**30)


# ------------------------------------------------------------------------------------------------
# Item 9: malformed binary bodies
# ------------------------------------------------------------------------------------------------


def _message(header: str, payload: bytes = b"") -> bytes:
    head = header.encode()
    return b"SAM2S" + struct.pack("<I", len(head)) + head + payload


MALFORMED = {
    "a zero-size array with a 1e29 dimension": _message(
        '{"arrays": [{"dtype": "uint8", "shape": [0, 100000000000000000000000000000], "encoding": "raw"}]}'
    ),
    "a zero-size array whose other dimensions overflow": _message(
        '{"arrays": [{"dtype": "float32", "shape": [0, 4294967296, 4294967296], "encoding": "raw"}]}'
    ),
    "a header nested 50,000 deep": _message('{"arrays": [], "x": ' + "[" * 50_000 + "]" * 50_000 + "}"),
    "a 5,000-digit integer": _message('{"arrays": [], "frame": ' + "9" * 5000 + "}"),
}


@pytest.mark.parametrize("what", list(MALFORMED))
def test_malformed_binary_bodies_raise_protocol_error_and_get_422(api, what):
    with pytest.raises(ProtocolError):
        decode(MALFORMED[what])
    sid = flow_session(api)
    refused(api("POST", f"/sessions/{sid}/objects/1/mask", content=MALFORMED[what]), 422, "invalid_request")
    uid = api("POST", "/uploads")[1]["upload"]
    refused(api("PUT", f"/uploads/{uid}?start=0", content=MALFORMED[what]), 422, "invalid_request")
    api("DELETE", f"/uploads/{uid}")
    api("DELETE", f"/sessions/{sid}")


def test_decode_bounds_every_dimension():
    assert protocol.MAX_DIMENSION == 2**31 - 1
    big = np.zeros((0, protocol.MAX_DIMENSION), np.uint8)
    assert decode(encode({}, [big]))[1][0].shape == big.shape
    spec = {"dtype": "uint8", "shape": [0, protocol.MAX_DIMENSION + 1], "encoding": "raw"}
    with pytest.raises(ProtocolError, match="non-negative integers of at most"):
        decode(_message(json.dumps({"arrays": [spec]})))


# ------------------------------------------------------------------------------------------------
# Item 12: small server items
# ------------------------------------------------------------------------------------------------


def test_head_health_answers_without_a_token(api):
    response = api.client.head("/health")
    assert response.status_code == 200
    assert api.client.get("/health").json() == {"status": "ok"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SAM2S_SERVER_TOKEN"}
    env["PYTHONPATH"] = str(ROOT / "SAM2SSlicer") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _start(
    command: list[str], folder: Path, name: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str | None, Path]:
    """Start ``command`` (given ``--ready-file folder/name.ready``, the environment ``env`` or
    ``_env()``) and wait until it is ready or exits: ``(process, url or None, stderr file)``."""
    ready, err = folder / f"{name}.ready", folder / f"{name}.err"
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [*command, "--ready-file", str(ready)],
            env=env or _env(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=folder,
        )
    deadline = time.monotonic() + 120
    while not (ready.exists() and ready.read_text().endswith("\n")):
        if proc.poll() is not None:
            return proc, None, err
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{command} did not start or exit within 120 s: {err.read_text()}")
        time.sleep(0.05)
    match = READY.match(ready.read_text().strip())
    assert match, ready.read_text()
    return proc, match.group(1), err


def _stop(proc: subprocess.Popen) -> int:
    """SIGTERM, and the exit status (killed after 30 s)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the server did not stop within 30 s of SIGTERM")


SERVER = [sys.executable, "-m", "sam2s.serving.server", "--port", "0"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-upload-gb", "-5"], "--max-upload-gb"),
        (["--max-upload-gb", "0"], "--max-upload-gb"),
        (["--max-upload-gb", "nan"], "--max-upload-gb"),
        (["--max-token-gb", "-1"], "--max-token-gb"),
        (["--max-sessions", "0"], "--max-sessions"),
        (["--max-frame-side", "-1"], "--max-frame-side"),
        (["--port", "70000"], "--port"),
    ],
)
def test_limits_that_are_not_positive_are_refused_on_the_command_line(tmp_path, args, message):
    proc, url, err = _start([*SERVER, *args], tmp_path, "refused")
    if url is not None:
        _stop(proc)
        pytest.fail(f"the server started with {args}")
    assert proc.returncode == 2, err.read_text()
    assert message in err.read_text(), err.read_text()


def _token_file(folder: Path, token: str, mode: int = 0o600) -> Path:
    path = folder / "token"
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


@pytest.mark.slow  # a server or launcher process: make test-fast leaves it to make test
def test_sigterm_shuts_down_gracefully_with_exit_status_0(tmp_path):
    """After SIGTERM the server closes its sessions and exits with 0 (uvicorn raised the signal
    again after its graceful shutdown: -15)."""
    token = "env-token-" + "e" * 40
    env = dict(_env(), SAM2S_SERVER_TOKEN=token)
    proc, url, err = _start([*SERVER], tmp_path, "sigterm", env)
    assert url is not None, err.read_text()
    client = Client(url, token)
    session = client.create_session({"upload": client.upload_frames(video())}, FLOW)
    session.add_box(0, 1, [4, 4, 20, 16])
    assert _stop(proc) == 0, err.read_text()


@pytest.mark.slow  # a server or launcher process: make test-fast leaves it to make test
def test_token_file_gives_the_token_and_must_be_private(tmp_path):
    """``--token-file`` gives the token without showing it in ``ps``; a file other users can read
    is refused (exit status 2, the message says ``chmod 600``)."""
    token = "file-token-" + "f" * 40
    path = _token_file(tmp_path, token)
    proc, url, err = _start([*SERVER, "--token-file", str(path)], tmp_path, "file")
    assert url is not None, err.read_text()
    try:
        assert Client(url, token).version()["protocol"] == protocol.PROTOCOL_VERSION
        assert token not in " ".join(proc.args)
    finally:
        assert _stop(proc) == 0, err.read_text()
    path.chmod(0o644)
    proc, url, err = _start([*SERVER, "--token-file", str(path)], tmp_path, "public")
    assert url is None and proc.returncode == 2 and "chmod 600" in err.read_text(), err.read_text()


# ------------------------------------------------------------------------------------------------
# Item 13: sam2s serve
# ------------------------------------------------------------------------------------------------


SAM2S = [sys.executable, "-m", "sam2sapp"]


def test_sam2s_serve_help_lists_the_servers_options():
    proc = subprocess.run([*SAM2S, "serve", "--help"], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for option in ("--host", "--port", "--token-file", "--allow-path", "--ssl-certfile", "--max-frame-side"):
        assert option in proc.stdout, option


@pytest.mark.slow  # a server or launcher process: make test-fast leaves it to make test
def test_sam2s_serve_starts_with_options_answers_health_and_exits_0_on_sigterm(tmp_path):
    """The README's recipe, on 127.0.0.1: ``sam2s serve --host ... --port 0 --token-file F``."""
    token = "serve-token-" + "s" * 40
    command = [*SAM2S, "serve", "--host", "127.0.0.1", "--port", "0", "--token-file", str(_token_file(tmp_path, token))]
    proc, url, err = _start(command, tmp_path, "serve")
    assert url is not None, err.read_text()
    try:
        client = Client(url, token)
        assert client.health()
        assert client.version()["max_frame_side"] == 8192
    finally:
        status = _stop(proc)
    assert status == 0, err.read_text()


@pytest.mark.slow  # a server or launcher process: make test-fast leaves it to make test
def test_sam2s_serve_help_works_without_fastapi_and_says_how_to_install_it(tmp_path, monkeypatch):
    from faultkit import run_without

    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    proc = run_without(["fastapi", "uvicorn"], [*SAM2S[1:], "serve", "--help"], tmp_path)
    assert proc.returncode == 0 and "--token-file" in proc.stdout, proc.stderr
    proc = run_without(["fastapi", "uvicorn"], [*SAM2S[1:], "serve", "--port", "0"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert 'pip install -e ".[server]"' in proc.stderr and "clone" in proc.stderr, proc.stderr
