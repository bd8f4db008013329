"""The extension's packaging: CMake lists, ``.s4ext`` fields, icons, requirements, and that the
headless logic imports with ``slicer-core`` alone (no Qt, no Slicer application, and no torch /
PyAV / OpenCV until they are used). The GUI files (Qt shell) run only inside Slicer: ruff checks
their syntax, ``SAM2SSlicerTest`` their behaviour there, import-linter that the library below
them has no Qt."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "SAM2SSlicer"
S4EXT_FIELDS = (
    "scm",
    "scmurl",
    "scmrevision",
    "depends",
    "build_subdirectory",
    "homepage",
    "contributors",
    "category",
    "iconurl",
    "description",
    "screenshoturls",
    "enabled",
    "status",
)


def _cmakeList(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} is not set in the module CMakeLists.txt"
    return [line.strip().replace("${MODULE_NAME}", "SAM2SSlicer") for line in match.group(1).split() if line.strip()]


def test_module_cmakelists_lists_every_python_file_and_resource():
    text = (MODULE / "CMakeLists.txt").read_text()
    scripts = _cmakeList(text, "MODULE_PYTHON_SCRIPTS")
    resources = _cmakeList(text, "MODULE_PYTHON_RESOURCES")
    onDisk = sorted(p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*.py") if "__pycache__" not in p.parts)
    missing = [p for p in onDisk if p not in scripts]
    assert not missing, f"add these files to MODULE_PYTHON_SCRIPTS in SAM2SSlicer/CMakeLists.txt: {missing}"
    stale = [p for p in scripts if not (MODULE / p).is_file()]
    assert not stale, f"MODULE_PYTHON_SCRIPTS lists files that do not exist: {stale}"
    assert len(scripts) == len(set(scripts))
    absent = [p for p in resources if not (MODULE / p).is_file()]
    assert not absent, f"MODULE_PYTHON_RESOURCES lists files that do not exist: {absent}"
    for needed in ("Resources/Icons/SAM2SSlicer.png", "Resources/UI/SAM2SSlicer.ui", "Resources/requirements.txt"):
        assert needed in resources
    assert "slicerMacroBuildScriptedModule" in text and "slicer_add_python_unittest" in text


def test_extension_cmakelists_and_s4ext():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert "project(SAM2SSlicer)" in text
    assert "add_subdirectory(SAM2SSlicer)" in text
    for variable in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        match = re.search(rf'set\(EXTENSION_{variable} "([^"]+)"\)', text)
        assert match and match.group(1).strip(), f"EXTENSION_{variable} has no value"
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', text)
    assert re.search(r'set\(EXTENSION_CATEGORY "Segmentation"\)', text)
    fields = {}
    for line in (ROOT / "SAM2SSlicer.s4ext").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    for field in S4EXT_FIELDS:
        assert fields.get(field), f"SAM2SSlicer.s4ext has no value for '{field}'"
    assert fields["depends"] == "PyTorch" and fields["category"] == "Segmentation"
    assert fields["enabled"] in ("0", "1")
    assert fields["scmurl"].startswith("https://") and fields["iconurl"].endswith(".png")
    for url in (fields["homepage"], fields["iconurl"], fields["screenshoturls"]):
        assert url.startswith("https://")


def test_icons():
    from PIL import Image

    for path in (ROOT / "Resources" / "SAM2SSlicer.png", MODULE / "Resources" / "Icons" / "SAM2SSlicer.png"):
        with Image.open(path) as image:
            assert image.size == (128, 128)


def test_requirements_are_pinned_ranges():
    from SAM2SSlicerLib.dependencies import TORCH_REQUIREMENT, missingRequirements, readRequirements

    requirements = readRequirements()
    names = {re.split(r"[<>=!~]", r)[0] for r in requirements}
    assert names == {"numpy", "pillow", "av", "tqdm", "opencv-python-headless", "fastapi", "uvicorn"}
    for requirement in requirements:
        assert ">=" in requirement and "<" in requirement.split(">=")[1], f"{requirement} needs a lower and upper bound"
    assert "torch" not in names and TORCH_REQUIREMENT.startswith("torch>=")
    assert missingRequirements() == []  # this test environment has everything
    assert missingRequirements(["surely-not-installed-package>=1"]) == ["surely-not-installed-package>=1"]
    assert missingRequirements(["numpy<1"]) == ["numpy<1"]


def test_headless_logic_imports_with_slicer_core_alone():
    code = f"""
import sys, json
sys.path.insert(0, {str(MODULE)!r})
import SAM2SSlicerLib, SAM2SSlicerLib.logic, SAM2SSlicerLib.videoimport, SAM2SSlicerLib.prompts
import SAM2SSlicerLib.segments, SAM2SSlicerLib.export, SAM2SSlicerLib.settings, SAM2SSlicerLib.headless
import SAM2SSlicerLib.dependencies
from SAM2SSlicerLib import MAX_OBJECT_ID, NotEnoughMemoryError, availableMemoryBytes, readSegmentation
from SAM2SSlicerLib.videoimport import checkVideoMemory
assert issubclass(NotEnoughMemoryError, MemoryError) and MAX_OBJECT_ID == 254 and callable(readSegmentation)
availableMemoryBytes(), checkVideoMemory(64, 48, 10, availableBytes=2**31)  # the memory guard needs no torch
import slicer
print(json.dumps({{"modules": sorted(m for m in ("qt", "ctk", "torch", "av", "cv2", "sam2s.tracker") if m in sys.modules),
                  "app": hasattr(slicer, "app"), "scene": hasattr(slicer, "mrmlScene")}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout.strip().splitlines()[-1])
    assert state == {"modules": [], "app": False, "scene": False}


def test_checkpoint_download_progress_and_cancel(tmp_path):
    """``downloadCheckpoint`` reports progress and cancels cleanly (served from localhost)."""
    import functools
    import hashlib
    import http.server
    import threading

    import sam2s
    from SAM2SSlicerLib.settings import DownloadCancelled, downloadCheckpoint

    payload = bytes(range(256)) * 4096 * 3  # 3 MiB
    served = tmp_path / "served"
    served.mkdir()
    (served / "fake.pt").write_bytes(payload)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        info = sam2s.CheckpointInfo(
            name="fake",
            config="sam2.1_hiera_t",
            url=f"http://127.0.0.1:{server.server_address[1]}/fake.pt",
            filename="fake.pt",
            size_bytes=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
        )
        cancel = threading.Event()
        seen = []

        def progress(done, total):
            seen.append((done, total))
            if done >= 1 << 20:
                cancel.set()

        cache = tmp_path / "cache"
        with pytest.raises(DownloadCancelled):
            downloadCheckpoint("fake", progress, cancel, cacheDir=cache, info=info)
        assert seen and seen[0][1] == len(payload)
        assert not any(cache.iterdir())  # no partial file left
        seen.clear()
        path = downloadCheckpoint("fake", lambda d, t: seen.append(d), cacheDir=cache, info=info)
        assert path.read_bytes() == payload and seen[-1] == len(payload)
    finally:
        server.shutdown()


def test_model_settings_validation():
    from SAM2SSlicerLib.settings import ModelSettings, resolveDeviceName

    settings = ModelSettings()
    settings.validate()
    assert ModelSettings.fromDict({**settings.toDict(), "unknown": 1}) == settings
    for bad in ({"configName": "sam3"}, {"imageSize": 500}, {"memory": "lstm"}, {"checkpoint": "/no/such.pt"}):
        with pytest.raises(ValueError):
            ModelSettings(**bad).validate()
    assert resolveDeviceName("auto") in ("cpu", "cuda", "mps")
    import sam2s
    from SAM2SSlicerLib.settings import CONFIG_NAMES

    assert sorted(CONFIG_NAMES) == sorted(sam2s.CONFIGS)  # the torch-free copy matches the engine
