"""Tests of sam2s.checkpoints: registry, cache directory, downloader, resolver and safe loader.

All offline: downloads go to a ThreadingHTTPServer bound to 127.0.0.1 on an ephemeral port.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import pickle
import random
import re
import shlex
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch
from sam2s import build_model
from sam2s import checkpoints as ck
from sam2s.checkpoints import (
    REGISTRY,
    CheckpointError,
    CheckpointInfo,
    ChecksumError,
    DownloadCancelled,
    DownloadError,
    cache_status,
    download,
    load_state_dict,
    resolve_checkpoint,
)

# --------------------------------------------------------------------------------------------
# Fixtures: a generated checkpoint and a local HTTP server
# --------------------------------------------------------------------------------------------


@dataclass
class Served:
    """A checkpoint served over HTTP on 127.0.0.1."""

    url: str
    data: bytes
    sha256: str
    requests: list[str] = field(default_factory=list)
    mode: str = "full"  # "full" or "truncate" (Content-Length of all bytes, half the body)

    def info(self, **changes: object) -> CheckpointInfo:
        base = CheckpointInfo(
            name="test_ckpt",
            config="sam2.1_hiera_t",
            url=self.url,
            filename="test_ckpt.pt",
            size_bytes=len(self.data),
            sha256=self.sha256,
        )
        return replace(base, **changes)


@pytest.fixture()
def checkpoint_file(tmp_path: Path) -> Path:
    path = tmp_path / "source" / "generated.pt"
    path.parent.mkdir()
    torch.manual_seed(0)
    torch.save({"model": {"w": torch.randn(64, 64)}}, path)
    return path


@pytest.fixture()
def served(checkpoint_file: Path) -> Iterator[Served]:
    data = checkpoint_file.read_bytes()
    state = Served(url="", data=data, sha256=hashlib.sha256(data).hexdigest())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            if self.path != "/test_ckpt.pt":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(state.data)))
            self.end_headers()
            if state.mode == "truncate":
                self.wfile.write(state.data[: len(state.data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(state.data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep stderr clean for the progress-bar assertions

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/test_ckpt.pt"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache directory, also set as $SAM2S_CACHE_DIR so nothing touches ~/.cache."""
    directory = tmp_path / "cache"
    monkeypatch.setenv(ck.ENV_CACHE_DIR, str(directory))
    return directory


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------------------------
# (a) successful download, progress bar, cache hit
# --------------------------------------------------------------------------------------------


def test_download_success_progress_and_cache_hit(
    served: Served, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = served.info()
    path = download(info, cache_dir=cache, progress=True)

    assert path == cache / "test_ckpt.pt"
    assert path.read_bytes() == served.data
    assert hashlib.sha256(path.read_bytes()).hexdigest() == served.sha256
    assert len(served.requests) == 1
    assert _listing(cache) == ["test_ckpt.pt", "test_ckpt.pt" + ck.MARKER_SUFFIX]

    err = capsys.readouterr().err
    assert "test_ckpt.pt" in err
    assert "100%" in err  # the bar reached its total ...
    final = err.replace("\r", "\n").strip().splitlines()[-1]
    done, total = re.search(r"([\d.]+k?B?)/([\d.]+k?B?)", final).groups()
    assert done == total  # ... e.g. "16.7k/16.7k"

    # Second call: served from the cache, no request, no output.
    assert download(info, cache_dir=cache, progress=True) == path
    assert len(served.requests) == 1
    assert capsys.readouterr().err == ""

    # Without the marker the file is re-hashed once (still no request) and the marker rewritten.
    (cache / ("test_ckpt.pt" + ck.MARKER_SUFFIX)).unlink()
    assert download(info, cache_dir=cache) == path
    assert len(served.requests) == 1
    assert (cache / ("test_ckpt.pt" + ck.MARKER_SUFFIX)).is_file()

    # resolve_checkpoint finds the cached file without downloading.
    assert resolve_checkpoint(info, cache_dir=cache) == path
    assert len(served.requests) == 1
    assert load_state_dict(path)["w"].shape == (64, 64)


def test_download_without_progress_prints_nothing(
    served: Served, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    download(served.info(), cache_dir=cache, progress=False)
    assert capsys.readouterr().err == ""


def test_corrupt_cached_file_is_replaced(served: Served, cache: Path) -> None:
    cache.mkdir()
    (cache / "test_ckpt.pt").write_bytes(b"\0" * len(served.data))  # right size, wrong bytes
    with pytest.warns(UserWarning, match="SHA256"):
        path = download(served.info(), cache_dir=cache, progress=False)
    assert path.read_bytes() == served.data
    assert len(served.requests) == 1


def test_url_override_and_unknown_name(served: Served, cache: Path) -> None:
    info = served.info(url="https://dl.fbaipublicfiles.com/never/contacted.pt")
    path = download(info, cache_dir=cache, progress=False, url=served.url)
    assert path.read_bytes() == served.data
    with pytest.raises(ValueError, match="sam2.1_hiera_t"):
        download("sam3_hiera_huge", cache_dir=cache)


def test_unknown_sha256_warns_but_downloads(served: Served, cache: Path) -> None:
    with pytest.warns(UserWarning, match="No SHA256"):
        path = download(served.info(sha256=None), cache_dir=cache, progress=False)
    assert path.read_bytes() == served.data


# --------------------------------------------------------------------------------------------
# (b) checksum mismatch, (c) interrupted download, (d) unreachable server
# --------------------------------------------------------------------------------------------


def test_sha256_mismatch_raises_and_leaves_nothing(served: Served, cache: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as excinfo:
        download(served.info(sha256=wrong), cache_dir=cache, progress=False)
    message = str(excinfo.value)
    assert wrong in message and served.sha256 in message
    assert "retry" in message.lower() and "manually" in message
    assert isinstance(excinfo.value, RuntimeError)
    assert _listing(cache) == []


def test_size_mismatch_raises_before_download(served: Served, cache: Path) -> None:
    with pytest.raises(ChecksumError, match="bytes"):
        download(served.info(size_bytes=len(served.data) + 1), cache_dir=cache, progress=False)
    assert _listing(cache) == []


def test_interrupted_download_raises_and_leaves_nothing(served: Served, cache: Path) -> None:
    served.mode = "truncate"
    with pytest.raises(DownloadError) as excinfo:
        download(served.info(), cache_dir=cache, progress=False, timeout=10)
    message = str(excinfo.value)
    assert "interrupted" in message
    assert "offline" in message
    assert isinstance(excinfo.value, RuntimeError)
    assert _listing(cache) == []


def test_http_error_is_download_error(served: Served, cache: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(served.info(), cache_dir=cache, progress=False, url=served.url + ".missing")
    assert _listing(cache) == []


def test_unreachable_server_gives_offline_hint(cache: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}/sam2.1_hiera_tiny.pt"
    with pytest.raises(DownloadError) as excinfo:
        download("sam2.1_hiera_t", cache_dir=cache, progress=False, url=url, timeout=5)
    message = str(excinfo.value)
    assert "Could not reach" in message and url in message
    assert "offline" in message
    assert "local path" in message  # pass the file's path instead of the name ...
    assert str(cache / "sam2.1_hiera_tiny.pt") in message  # ... or drop it into the cache
    assert _listing(cache) == []


# --------------------------------------------------------------------------------------------
# (e) cache directory
# --------------------------------------------------------------------------------------------


def test_cache_dir_env_var_is_respected(served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "env-cache"
    monkeypatch.setenv(ck.ENV_CACHE_DIR, str(target))
    assert ck.cache_dir() == target
    path = download(served.info(), progress=False)  # no cache_dir argument
    assert path == target / "test_ckpt.pt"
    assert path.is_file()


def test_platform_cache_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ck.ENV_CACHE_DIR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ck.cache_dir() == tmp_path / "xdg" / "sam2s"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert ck.cache_dir() == tmp_path / ".cache" / "sam2s"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert ck.cache_dir() == tmp_path / "Library" / "Caches" / "sam2s"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert ck.cache_dir() == tmp_path / "Local" / "sam2s" / "Cache"


# --------------------------------------------------------------------------------------------
# (f) registry
# --------------------------------------------------------------------------------------------


META_NAMES = [f"{v}_hiera_{s}" for v in ("sam2", "sam2.1") for s in ("t", "s", "b+", "l")]
OTHER_NAMES = ["edgetam", "sam2_hiera_s_endo18", "medsam2"]


def test_registry_sanity() -> None:
    assert list(REGISTRY) == META_NAMES + OTHER_NAMES
    sizes = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}
    for name in META_NAMES:
        info = REGISTRY[name]
        version, size = name.split("_hiera_")
        assert info.name == name and info.config == name
        assert info.filename == f"{version}_hiera_{sizes[size]}.pt"
        stamp = "072824" if version == "sam2" else "092824"
        assert info.url == f"https://dl.fbaipublicfiles.com/segment_anything_2/{stamp}/{info.filename}"
        assert re.fullmatch(r"[0-9a-f]{64}", info.sha256)
        assert isinstance(info.size_bytes, int) and info.size_bytes > 0
        assert (info.image_size, info.licence, info.bring_your_own) == (1024, "Apache-2.0", False)
    downloadable = [info for info in REGISTRY.values() if not info.bring_your_own]
    assert len({info.sha256 for info in downloadable}) == len(downloadable) == 9
    # Sizes grow with the model (t < s < b+ < l) and SAM 2.1 files are slightly larger.
    for version in ("sam2", "sam2.1"):
        row = [REGISTRY[f"{version}_hiera_{s}"].size_bytes for s in ("t", "s", "b+", "l")]
        assert row == sorted(row)
    with pytest.raises(dataclasses.FrozenInstanceError):
        REGISTRY["sam2_hiera_t"].url = "http://example.invalid/"  # type: ignore[misc]


def test_registry_names_match_model_configs() -> None:
    from sam2s.config import CONFIGS

    assert {info.config for info in REGISTRY.values()} <= set(CONFIGS)


def test_get_info_aliases() -> None:
    assert ck.get_info("sam2.1_hiera_tiny.pt") is REGISTRY["sam2.1_hiera_t"]
    assert ck.get_info("configs/sam2/sam2_hiera_b+.yaml") is REGISTRY["sam2_hiera_b+"]
    with pytest.raises(ValueError, match="known checkpoints"):
        ck.get_info("nope")


# --------------------------------------------------------------------------------------------
# (f2) EdgeTAM, SurgSAM-2 and MedSAM2: metadata, strict loading at their training size, wrong
#      layouts refused, the bring-your-own entry never downloaded, `sam2s models`
# --------------------------------------------------------------------------------------------

# name: (config, trained image size, bring your own, file name)
OTHER_ENTRIES = {
    "edgetam": ("edgetam", 1024, False, "edgetam.pt"),
    "sam2_hiera_s_endo18": ("sam2_hiera_s", 512, True, "sam2_hiera_s_endo18.pth"),
    "medsam2": ("sam2.1_hiera_t", 512, True, "MedSAM2_latest.pt"),
}


def test_other_entries_metadata() -> None:
    for name, (config, image_size, byo, filename) in OTHER_ENTRIES.items():
        info = REGISTRY[name]
        assert (info.name, info.config, info.image_size, info.bring_your_own) == (name, config, image_size, byo)
        assert info.filename == filename and info.url.startswith("https://") and info.homepage.startswith("https://")
        assert info.licence and info.title and str(image_size) in info.summary and info.licence in info.summary
        if byo:  # no published hash: nothing to check a download against, so none is made
            assert info.sha256 is None and info.size_bytes is None and "bring your own" in info.summary
        else:
            assert re.fullmatch(r"[0-9a-f]{64}", info.sha256)
            assert isinstance(info.size_bytes, int) and info.size_bytes > 1_000_000
        assert ck.get_info(filename) is info and ck.get_info(f"/somewhere/{filename}") is info
        assert ck.default_image_size(name) == ck.default_image_size(f"/somewhere/{filename}") == image_size
    assert REGISTRY["edgetam"].licence == "Apache-2.0"
    assert REGISTRY["edgetam"].size_bytes == 56_116_523
    assert "/resolve/" in REGISTRY["medsam2"].url and "wanglab/MedSAM2" in REGISTRY["medsam2"].url
    # Meta's entries and plain config names keep 1024.
    assert ck.default_image_size("sam2_hiera_s") == ck.default_image_size("sam2.1_hiera_tiny.pt") == 1024
    assert ck.default_image_size("no_such_model") == ck.DEFAULT_IMAGE_SIZE == 1024


def _state_dict_of(config: str, image_size: int) -> dict[str, torch.Tensor]:
    """Our model's keys and shapes for ``config`` with its (random) initial values, floats in fp16
    to halve the files (loading converts them back)."""
    from sam2s.config import get_config
    from sam2s.modeling.sam2 import SAM2Model

    torch.manual_seed(0)
    state = SAM2Model(get_config(config, image_size)).state_dict()
    return {k: v.half() if v.is_floating_point() else v.clone() for k, v in state.items()}


@pytest.fixture(scope="module")
def layout_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    """``{config: (file, state dict)}``: a checkpoint of each new entry's config: Meta's layout
    under "model" (EdgeTAM, MedSAM2 as their loaders read it) or at the top level (SurgSAM-2's
    loader takes both)."""
    directory = tmp_path_factory.mktemp("layouts")
    files = {}
    for config, image_size, top_level in (("edgetam", 1024, False), ("sam2_hiera_s", 512, True),
                                          ("sam2.1_hiera_t", 512, False)):  # fmt: skip
        state = _state_dict_of(config, image_size)
        path = directory / f"{config}.pt"
        torch.save(state if top_level else {"model": state}, path)
        files[config] = (path, state)
    return files


@pytest.mark.parametrize("name", OTHER_NAMES)
def test_other_entry_loads_strictly_at_its_training_size(
    name: str, layout_files: dict, cache: Path, tmp_path: Path
) -> None:
    """A file with the entry's key layout loads strictly through the registry (``CheckpointInfo.build``:
    ``build_model`` with the entry's config) at the image size the model was trained at; the
    bring-your-own file is found in the cache under its published name."""
    info = REGISTRY[name]
    path, state = layout_files[info.config]
    if info.bring_your_own:
        cache.mkdir()
        (cache / info.filename).write_bytes(path.read_bytes())
        model = build_model(info.config, checkpoint=info.name)  # from the cache: never downloaded, never hashed
    else:
        copy = tmp_path / info.filename  # a local path: its size and SHA-256 are not the registry's
        copy.write_bytes(path.read_bytes())
        model = build_model(info.config, checkpoint=copy)
    assert model.config.name == info.config and model.config.image_size == info.image_size
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key in list(state)[:: max(1, len(state) // 20)]:  # the file's values, not the initial ones
        assert torch.equal(loaded[key], state[key].to(loaded[key].dtype)), key
    if name == "medsam2":  # an explicit size wins; Meta's entries keep 1024
        assert build_model(info.config, checkpoint=cache / info.filename, image_size=1024).config.image_size == 1024
        # build_model without a size takes the entry's training size from the file's name
        assert build_model("sam2.1_hiera_t", checkpoint=cache / info.filename).config.image_size == 512


@pytest.mark.parametrize(
    ("name", "wrong"),
    [("edgetam", "sam2.1_hiera_t"), ("sam2_hiera_s_endo18", "sam2.1_hiera_t"), ("medsam2", "edgetam")],
)
def test_other_entry_refuses_a_file_of_another_layout(name: str, wrong: str, layout_files: dict) -> None:
    """E.g. SAM 2.1 tiny keys for the EdgeTAM entry: refused before anything is loaded, naming the
    config the file matches."""
    info = REGISTRY[name]
    with pytest.raises(CheckpointError) as excinfo:
        build_model(info.config, checkpoint=layout_files[wrong][0])
    message = str(excinfo.value)
    assert f"does not fit model config {info.config!r}" in message
    assert f"It matches config {wrong!r}" in message


def test_bring_your_own_entry_is_never_downloaded(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a bring-your-own entry must not reach the network")

    monkeypatch.setattr(ck.urllib.request, "urlopen", no_network)
    info = REGISTRY["sam2_hiera_s_endo18"]
    with pytest.raises(DownloadError) as excinfo:
        download(info.name, progress=False)
    message = str(excinfo.value)
    for part in (info.url, str(cache / info.filename), "'sam2_hiera_s'", "512 px", "hash is unknown", "local path"):
        assert part in message, part
    assert _listing(cache) == []
    with pytest.raises(FileNotFoundError) as excinfo:
        resolve_checkpoint(info.name, allow_download=True)
    assert info.url in str(excinfo.value) and "not in the cache" in str(excinfo.value)
    # A file the user brings is used as is (nothing to check it against).
    cache.mkdir()
    (cache / info.filename).write_bytes(b"weights")
    assert download(info.name, progress=False) == resolve_checkpoint(info.name) == cache / info.filename
    assert dict((i.name, p) for i, p in cache_status())[info.name] == cache / info.filename


def test_models_command_lists_the_new_entries(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sam2sapp import cli

    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    for name, (_, _, _, filename) in OTHER_ENTRIES.items():
        assert name in out and filename in out


def test_models_command_shows_licence_and_training_size(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sam2sapp import cli

    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in OTHER_NAMES:
        info = REGISTRY[name]
        row = next(line for line in lines if line.startswith(name + " "))
        assert info.licence in row and f"{info.image_size} px" in row, row


# --------------------------------------------------------------------------------------------
# (g) load_state_dict
# --------------------------------------------------------------------------------------------


class _NotATensor:
    """A custom class: unpickling it would import and construct arbitrary objects."""


def test_load_state_dict_good(checkpoint_file: Path, tmp_path: Path) -> None:
    state = load_state_dict(checkpoint_file)
    assert list(state) == ["w"] and state["w"].shape == (64, 64) and state["w"].device.type == "cpu"
    bare = tmp_path / "bare.pt"
    torch.save({"a": torch.zeros(2), "b": torch.ones(3)}, bare)  # a plain state dict
    assert set(load_state_dict(bare)) == {"a", "b"}


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("truncated", "truncated or not a PyTorch checkpoint"),
        ("text", "truncated or not a PyTorch checkpoint"),
        ("empty", "empty"),
        (
            "custom_class",
            r"was refused: it contains code or objects other than tensors \(first: test_checkpoints\._NotATensor\)"
            r".*refusing to unpickle arbitrary code.*re-save a clean state dict",
        ),
        ("legacy_custom_class", r"code or objects other than tensors \(first: test_checkpoints\._NotATensor\)"),
        ("not_tensors", "not all named tensors"),
    ],
)
def test_load_state_dict_rejects_bad_files(checkpoint_file: Path, tmp_path: Path, kind: str, pattern: str) -> None:
    bad = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        data = checkpoint_file.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        bad.write_text("this is not a checkpoint\n")
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "custom_class":
        torch.save({"model": {"w": torch.zeros(1)}, "extra": _NotATensor()}, bad)
    elif kind == "legacy_custom_class":  # the pre-1.6 format: several pickles, then raw storages
        torch.save({"model": {"w": torch.zeros(1)}, "extra": _NotATensor()}, bad, _use_new_zipfile_serialization=False)
    else:
        torch.save({"model": {"w": torch.zeros(1), "step": 3}}, bad)
    with pytest.raises(CheckpointError, match=pattern) as excinfo:
        load_state_dict(bad)
    assert str(bad) in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)


class _RunsCode:
    """Unpickling this runs a shell command (``os.system``): what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_pickle_that_carries_code_is_refused_as_code(tmp_path: Path, protocol: int) -> None:
    """A plain ``pickle.dump`` (not torch's zip format) with a code-running object: torch's safe
    unpickler fails on an earlier opcode, yet the message must say "code", naming the global."""
    marker = tmp_path / "code-ran"
    bad = tmp_path / f"evil{protocol}.pt"
    with open(bad, "wb") as f:
        pickle.dump({"model": _RunsCode(marker)}, f, protocol=protocol)
    with pytest.raises(CheckpointError, match=rf"contains code .*\(first: {os.system.__module__}\.system\)") as err:
        load_state_dict(bad)
    assert "refusing to unpickle" in str(err.value) and "torch.save({'model': model.state_dict()}" in str(err.value)
    assert not marker.exists()  # nothing was executed


def test_legacy_format_checkpoint_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save({"model": {"w": torch.arange(3.0)}}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_state_dict(path)["w"], torch.arange(3.0))


def test_garbage_and_truncated_legacy_files_are_reported_as_damaged(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.pt"
    torch.save({"model": {"w": torch.zeros(4)}}, legacy, _use_new_zipfile_serialization=False)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(legacy.read_bytes()[:150])
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(256)) * 20)
    no_tensors = tmp_path / "protocol0.pt"
    with open(no_tensors, "wb") as f:
        pickle.dump({"model": {"w": [1.0, 2.0]}}, f, protocol=0)  # no global at all, but not torch's format
    for path in (cut, noise, no_tensors):
        with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint") as err:
            load_state_dict(path)
        assert "code" not in str(err.value)


def test_load_state_dict_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_state_dict(tmp_path / "missing.pt")


# --------------------------------------------------------------------------------------------
# (h) resolve_checkpoint, cache_status
# --------------------------------------------------------------------------------------------


def test_resolve_local_path(checkpoint_file: Path, cache: Path) -> None:
    assert resolve_checkpoint(checkpoint_file) == checkpoint_file
    assert resolve_checkpoint(str(checkpoint_file)) == checkpoint_file
    assert _listing(cache) == []


def test_resolve_registry_name_not_cached(cache: Path) -> None:
    with pytest.raises(FileNotFoundError) as excinfo:
        resolve_checkpoint("sam2.1_hiera_t", allow_download=False)
    message = str(excinfo.value)
    assert "sam2s download sam2.1_hiera_t" in message
    assert "sam2s.download('sam2.1_hiera_t')" in message
    assert _listing(cache) == []


def test_resolve_unknown_name(cache: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither an existing file nor a known checkpoint"):
        resolve_checkpoint("no_such_model.pt")


def test_resolve_downloads_when_allowed(served: Served, cache: Path) -> None:
    path = resolve_checkpoint(served.info(), allow_download=True, progress=False)
    assert path == cache / "test_ckpt.pt" and path.read_bytes() == served.data
    assert len(served.requests) == 1


def _serve_larger_file(served: Served, size: int = 3 * (1 << 20) + 12345) -> None:
    """Make the server offer ``size`` deterministic random bytes (several 1 MiB blocks)."""
    served.data = random.Random(0).randbytes(size)
    served.sha256 = hashlib.sha256(served.data).hexdigest()


def test_download_progress_callback(served: Served, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A callable ``progress`` gets ``(received, total)`` after each block of at most 1 MiB:
    strictly increasing counts ending at the file's size; no bar is printed."""
    _serve_larger_file(served)
    calls: list[tuple[int, int | None]] = []
    path = download(served.info(), cache_dir=cache, progress=lambda done, total: calls.append((done, total)))
    assert path.read_bytes() == served.data
    received = [done for done, _ in calls]
    assert len(calls) == 4 and received[-1] == len(served.data)
    assert all(0 < b - a <= 1 << 20 for a, b in zip([0, *received], received))  # strictly increasing blocks
    assert {total for _, total in calls} == {len(served.data)}
    assert capsys.readouterr().err == ""
    calls.clear()
    assert download(served.info(), cache_dir=cache, progress=lambda *a: calls.append(a)) == path
    assert calls == []  # a cache hit reports nothing


def test_download_cancel_removes_the_partial_file(served: Served, cache: Path) -> None:
    """Setting the ``cancel`` event stops the download with DownloadCancelled and removes the partial
    file; set before the start, nothing is requested (``resolve_checkpoint`` passes both hooks)."""
    _serve_larger_file(served)
    cancel = threading.Event()
    seen: list[int] = []

    def progress(done: int, total: int | None) -> None:
        seen.append(done)
        cancel.set()  # e.g. the user presses Cancel while the first block arrives

    with pytest.raises(DownloadCancelled, match=f"cancelled after {1 << 20} of {len(served.data)} bytes"):
        download(served.info(), cache_dir=cache, progress=progress, cancel=cancel)
    assert seen == [1 << 20]
    assert _listing(cache) == []  # no partial file, no marker
    assert issubclass(DownloadCancelled, RuntimeError) and not issubclass(DownloadCancelled, DownloadError)
    requests = len(served.requests)
    with pytest.raises(DownloadCancelled, match="cancelled after 0 of"):
        resolve_checkpoint(served.info(), allow_download=True, progress=False, cancel=cancel)
    assert len(served.requests) == requests and _listing(cache) == []
    received: list[int] = []
    path = resolve_checkpoint(
        served.info(), allow_download=True, progress=lambda done, _: received.append(done), cancel=threading.Event()
    )
    assert path.read_bytes() == served.data and received[-1] == len(served.data)


def test_cache_status(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    status = cache_status()
    assert [info.name for info, _ in status] == list(REGISTRY)
    assert all(path is None for _, path in status)
    # Pretend the tiny SAM 2.1 checkpoint is cached: a small fake file with a matching size.
    fake = replace(REGISTRY["sam2.1_hiera_t"], size_bytes=5)
    monkeypatch.setitem(REGISTRY, "sam2.1_hiera_t", fake)
    cache.mkdir()
    (cache / fake.filename).write_bytes(b"12345")
    found: dict[str, Path | None] = {info.name: path for info, path in cache_status()}
    assert found["sam2.1_hiera_t"] == cache / fake.filename
    assert sum(path is not None for path in found.values()) == 1
