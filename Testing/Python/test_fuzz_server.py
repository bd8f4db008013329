"""Fuzz properties of the tracking server (issue 21, "Fuzzing in the suite"): ``protocol.decode``
either decodes a message or raises ``ProtocolError``, nothing else, for any bytes; and every
request body the server parses (random and near-valid JSON for ``POST /sessions``, ``/uploads``,
``/sessions/{sid}/jobs``, ``.../points``, ``.../box``; random and mutated binary messages for
``PUT /uploads/{id}`` and ``.../mask``) gets a 2xx answer or a JSON ``{"detail", "code"}`` error
below 500, never a 500 or an exception. The server runs in this process (FastAPI's
``TestClient``), with the flow engine on 4 frames of 32x24 in shared memory, so that every example
takes milliseconds. Examples per property: ``fuzzing`` (30 in make test, 10,000 in make fuzz)."""

from __future__ import annotations

import json
import struct
import time

import numpy as np
import pytest
from fuzzing import counted, json_values, mutated_json, mutated_text
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from sam2s.serving.client import create_shared_frames  # noqa: E402
from sam2s.serving.protocol import ProtocolError, decode, encode  # noqa: E402
from sam2s.serving.server import create_app  # noqa: E402
from test_server_limits import release_shared_frames  # noqa: E402

pytestmark = pytest.mark.fuzz

TOKEN = "token-fuzz-" + "z" * 40
HEADERS = {"Authorization": f"Bearer {TOKEN}", "X-SAM2S-Protocol": "1"}
T, H, W = 4, 24, 32
UPLOAD = "UPLOAD-ID"  # replaced by a complete upload's id before the request is sent
FRAMES = np.random.default_rng(0).integers(0, 255, (T, H, W, 3), dtype=np.uint8)
MASK = np.zeros((H, W), bool)
MASK[6:18, 8:24] = True


# ------------------------------------------------------------------------------------------------
# protocol.decode
# ------------------------------------------------------------------------------------------------


def _decodes_or_refuses(data: bytes) -> None:
    try:
        header, arrays = decode(data)
    except ProtocolError:
        return
    assert isinstance(header, dict) and "arrays" not in header
    assert all(isinstance(a, np.ndarray) for a in arrays)


@st.composite
def mutated_bytes(draw, data: bytes, max_mutations: int = 3) -> bytes:
    """``data`` with 1 to ``max_mutations`` edits: a byte changed, random bytes inserted, a slice
    deleted, or the data truncated."""
    for _ in range(draw(st.integers(1, max_mutations))):
        n = len(data)
        i = draw(st.integers(0, n))
        j = draw(st.integers(i, min(n, i + 16)))
        action = draw(st.sampled_from(["change", "insert", "delete", "truncate"]))
        if action == "change" and i < n:
            data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
        elif action == "insert":
            data = data[:i] + draw(st.binary(max_size=8)) + data[i:]
        elif action == "delete":
            data = data[:i] + data[j:]
        else:
            data = data[:i]
    return data


_arrays = st.one_of(
    st.builds(lambda n: np.arange(n, dtype=np.uint8).reshape(n, 1), st.integers(0, 9)),
    st.builds(lambda n: np.linspace(-1, 1, n, dtype=np.float32).reshape(1, n), st.integers(0, 9)),
    st.builds(lambda n: np.arange(n) % 3 == 0, st.integers(0, 20)),
)
_messages = st.builds(
    lambda header, arrays: encode(header, arrays),
    st.dictionaries(st.text(max_size=8).filter(lambda k: k != "arrays"), json_values, max_size=4),
    st.lists(_arrays, max_size=3),
)
VALID_HEADER = {"frame": 0, "logits": False, "arrays": [{"dtype": "bool", "shape": [2, 4], "encoding": "packbits"}]}


def _with_header(text: str, payload: bytes = b"\x00") -> bytes:
    head = text.encode("utf-8", "surrogatepass")
    return b"SAM2S" + struct.pack("<I", len(head)) + head + payload


@given(st.binary(max_size=64) | st.binary(max_size=16).map(lambda b: b"SAM2S" + b))
@counted
def test_decode_random_bytes_decodes_or_raises_protocol_error(data):
    _decodes_or_refuses(data)


@given(_messages.flatmap(mutated_bytes))
@counted
def test_decode_mutated_messages_decodes_or_raises_protocol_error(data):
    _decodes_or_refuses(data)


@given(
    st.one_of(
        json_values.map(json.dumps),
        mutated_json(VALID_HEADER).map(json.dumps),
        mutated_text(json.dumps(VALID_HEADER)),
    )
)
@counted
def test_decode_random_and_near_valid_headers_decode_or_raise_protocol_error(text):
    _decodes_or_refuses(_with_header(text))


# ------------------------------------------------------------------------------------------------
# The server's request bodies
# ------------------------------------------------------------------------------------------------


class Server:
    """One in-process server: a flow session on the shared frames (object 1 prompted) and a
    supply of complete uploads; :meth:`send` checks every answer."""

    def __init__(self, client: TestClient, spec: dict) -> None:
        self.client, self.spec = client, spec
        self.upload: str | None = None
        answer = self.send("POST", "/sessions", json.dumps({"frames": spec, "model": {"engine": "flow"}}))
        self.sid = answer["session"]
        self.send("POST", f"/sessions/{self.sid}/objects/1/box", json.dumps({"frame": 0, "box": [4, 4, 20, 16]}))

    def send(self, method: str, path: str, body: str | bytes | None = None) -> dict | None:
        """Send one request; assert a 2xx answer or a JSON error ``{"detail", "code"}`` below 500;
        return the JSON answer of a 2xx (None for a binary one) or None for an error."""
        headers = dict(HEADERS)
        if isinstance(body, str):
            headers["Content-Type"] = "application/json"
            body = body.encode("utf-8", "surrogatepass")
        response = self.client.request(method, path, content=body, headers=headers)
        kind = response.headers.get("content-type", "")
        if response.status_code < 300:
            return response.json() if kind.startswith("application/json") else None
        assert response.status_code < 500, (response.status_code, response.content[:500])
        answer = response.json()
        assert isinstance(answer, dict) and isinstance(answer.get("detail"), str), answer
        assert isinstance(answer.get("code"), str), answer
        return None

    def upload_id(self) -> str:
        """The id of a complete upload of the frames (a new one once a session took the last)."""
        if self.upload is None:
            answer = self.send("POST", "/uploads", json.dumps({"shape": list(FRAMES.shape)}))
            assert answer is not None, "no upload could be created"
            self.upload = answer["upload"]
            assert self.send("PUT", f"/uploads/{self.upload}?start=0", encode({}, [FRAMES])) is not None
        return self.upload

    def idle(self) -> None:
        """Cancel the session's job, if one runs, and wait until it stopped."""
        deadline = time.monotonic() + 30
        while (job := self.send("GET", f"/sessions/{self.sid}")["running_job"]) is not None:
            self.send("DELETE", f"/sessions/{self.sid}/jobs/{job}")
            assert time.monotonic() < deadline, "the job did not stop"
            time.sleep(0.005)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server (default limits, no server-side paths, an empty checkpoint cache: no SAM 2 model
    is ever built), its shared frames and session."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SAM2S_CACHE_DIR", str(tmp_path_factory.mktemp("no-checkpoints")))
    block, spec = create_shared_frames(FRAMES)
    try:
        with TestClient(create_app([TOKEN])) as client:
            yield Server(client, spec)
    finally:
        release_shared_frames(block)
        mp.undo()


def _json_bodies(valid: dict) -> st.SearchStrategy[str]:
    """Random JSON, near-valid mutations of ``valid`` and raw-text mutations of it, as text."""
    text = json.dumps(valid)
    return st.one_of(
        st.just(text),
        json_values.map(json.dumps),
        mutated_json(valid).map(json.dumps),
        mutated_text(text),
    )


SESSION_SHM = {"frames": {"shm": "SHM", "shape": [T, H, W, 3]}, "model": {"engine": "flow"}, "memory": "sam2"}
SESSION_UPLOAD = {"frames": {"upload": UPLOAD}, "model": {"engine": "flow", "image_size": 512}, "memory_params": {}}
SESSION_SAM2 = {
    "frames": {"upload": UPLOAD},
    "model": {"engine": "sam2", "config": "sam2.1_hiera_t", "image_size": 512, "device": "cpu", "precision": "fp32"},
    "memory": "divemem",
    "memory_params": {},
}


@given(_json_bodies(SESSION_SHM) | _json_bodies(SESSION_UPLOAD) | _json_bodies(SESSION_SAM2))
@counted
def test_session_bodies_get_a_session_or_a_json_error(server, body):
    uses_upload = UPLOAD in body
    body = body.replace("SHM", server.spec["shm"]).replace(UPLOAD, server.upload_id() if uses_upload else UPLOAD)
    answer = server.send("POST", "/sessions", body)
    if answer is not None:
        server.send("DELETE", f"/sessions/{answer['session']}")
        if uses_upload:  # the session took the upload, or it is deleted now (its frames may have been joined)
            server.send("DELETE", f"/uploads/{server.upload}")
            server.upload = None


@given(_json_bodies({"shape": [T, H, W, 3]}))
@counted
def test_upload_bodies_get_an_upload_or_a_json_error(server, body):
    answer = server.send("POST", "/uploads", body)
    if answer is not None:
        server.send("DELETE", f"/uploads/{answer['upload']}")


@given(_json_bodies({"passes": [[0, 3, False], [3, 0, True]], "obj_ids": [1], "logits": False}))
@counted
def test_job_bodies_start_a_job_or_get_a_json_error(server, body):
    server.send("POST", f"/sessions/{server.sid}/jobs", body)
    server.idle()


_OBJECTS = st.sampled_from(["1", "2", "0", "255", "-1", "99999999999999999999", "x"])


@given(_OBJECTS, _json_bodies({"frame": 0, "points": [[10, 8], [2.5, 3]], "labels": [1, 0], "clear_old_points": True}))
@counted
def test_points_bodies_prompt_or_get_a_json_error(server, oid, body):
    server.send("POST", f"/sessions/{server.sid}/objects/{oid}/points", body)


@given(_OBJECTS, _json_bodies({"frame": 1, "box": [4, 4, 20, 16], "points": [[8, 8]], "labels": [1], "logits": True}))
@counted
def test_box_bodies_prompt_or_get_a_json_error(server, oid, body):
    server.send("POST", f"/sessions/{server.sid}/objects/{oid}/box", body)


VALID_CHUNK = encode({}, [FRAMES[:2]])


@given(
    st.sampled_from([None, [T, H, W, 3], [2, H, W, 3]]),
    st.sampled_from(["0", "1", "2", "99999999999999999999", "-1", "x"]),
    st.just(VALID_CHUNK) | st.binary(max_size=64) | mutated_bytes(VALID_CHUNK) | _messages,
)
@counted
def test_upload_chunks_are_stored_or_get_a_json_error(server, shape, start, body):
    answer = server.send("POST", "/uploads", json.dumps({"shape": shape}))
    assert answer is not None, "no upload could be created"
    upload = answer["upload"]
    server.send("PUT", f"/uploads/{upload}?start={start}", body)
    server.send("DELETE", f"/uploads/{upload}")


VALID_MASK = encode({"frame": 2, "logits": False}, [MASK])


@given(_OBJECTS, st.just(VALID_MASK) | st.binary(max_size=64) | mutated_bytes(VALID_MASK) | _messages)
@counted
def test_mask_bodies_prompt_or_get_a_json_error(server, oid, body):
    server.send("POST", f"/sessions/{server.sid}/objects/{oid}/mask", body)
