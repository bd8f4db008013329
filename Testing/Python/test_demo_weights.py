"""``sam2s demo`` gets its weights first (``sam2sapp.demo.demo_checkpoint``): downloaded and
verified from a local HTTP server (127.0.0.1, as in ``test_checkpoints.py``) it tracks with SAM 2;
offline it says so and uses the flow engine; a download with a wrong SHA-256 is deleted and the
demo stops with a clear error. Real model (random weights, saved as a real checkpoint), real
Slicer logic; tiny image size and the first frames of the generated clip only.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import torch

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

from conftest import ROOT  # noqa: E402, F401 - puts SAM2SSlicer on sys.path
from sam2s.checkpoints import CheckpointInfo  # noqa: E402
from sam2sapp.demo import run_demo  # noqa: E402
from sam2sapp.track import CliError  # noqa: E402

IMAGE_SIZE, END = 64, 0  # frame 0 only: the download and the engine choice are what is tested


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A small random-weights ``sam2.1_hiera_t`` checkpoint (fp16) served at ``url``."""
    import sam2s

    torch.manual_seed(0)
    model = sam2s.build_model("sam2.1_hiera_t", image_size=IMAGE_SIZE)
    path = tmp_path_factory.mktemp("served") / "random.pt"
    torch.save({"model": {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}}, path)
    data = path.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/random.pt"
    try:
        yield url, len(data), hashlib.sha256(data).hexdigest()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _info(url: str, size: int, sha256: str) -> CheckpointInfo:
    return CheckpointInfo("sam2.1_hiera_t", "sam2.1_hiera_t", url, "demo_test.pt", size, sha256)


def _demo(tmp_path: Path, info: CheckpointInfo | None = None, url: str | None = None) -> int:
    return run_demo(
        tmp_path / "out", image_size=IMAGE_SIZE, end=END, checkpoint_info=info, download_url=url,
        cache_dir=tmp_path / "cache",
    )  # fmt: skip


def test_verified_download_tracks_with_sam2(server, tmp_path, capsys):
    url, size, sha256 = server
    assert _demo(tmp_path, _info(url, size, sha256)) == 0
    out = capsys.readouterr().out
    assert "engine: sam2" in out and "J&F" in out
    assert (tmp_path / "cache" / "demo_test.pt").stat().st_size == size
    assert (tmp_path / "out" / "masklets.seg.nrrd").is_file() and (tmp_path / "out" / "contact_sheet.png").is_file()


def test_wrong_sha256_is_refused_and_nothing_is_kept(server, tmp_path):
    url, size, _ = server
    with pytest.raises(CliError, match="failed verification and was deleted") as excinfo:
        _demo(tmp_path, _info(url, size, "0" * 64))
    assert "--engine flow" in str(excinfo.value)
    assert not any((tmp_path / "cache").iterdir())  # no partial or bad file left
    assert not (tmp_path / "out" / "masklets.seg.nrrd").exists()  # stopped before tracking


def test_offline_falls_back_to_flow(tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on: the download cannot connect
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _demo(tmp_path, url=f"http://127.0.0.1:{port}/sam2.1_hiera_tiny.pt") == 0
    captured = capsys.readouterr()
    assert "offline" in captured.err and "Falling back to the weight-free 'flow' engine" in captured.err
    assert "engine: flow" in captured.out
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
