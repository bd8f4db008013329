"""The extension's packaging: CMake lists, the Extensions Index catalog entry ``SAM2SSlicer.json``
(validated against the Index's JSON schema), URLs into this repository, licence files, icons,
requirements, and that the headless logic imports with ``slicer-core`` alone (no Qt, no Slicer
application, and no torch / PyAV / OpenCV until they are used). The GUI files (Qt shell) run only
inside Slicer: ruff checks their syntax, ``SAM2SSlicerTest`` their behaviour there, import-linter
that the library below them has no Qt."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "SAM2SSlicer"
CATALOG_ENTRY = ROOT / "SAM2SSlicer.json"
# The Extensions Index's schema of catalog entries, copied byte for byte from
# https://github.com/Slicer/ExtensionsIndex/blob/07f1d1b2781c7dd9f6e2a9f5521b3ed43631724c/schemas/slicer-extension-catalog-entry-schema-v1.0.2.json
# (ExtensionsIndex commit 07f1d1b2781c7dd9f6e2a9f5521b3ed43631724c; the file last changed in d3b05346c348c9fbb8aa6c4f026c3cbb27ef3d43,
# and is identical to Slicer/Slicer's Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json at a31a04c293a812eea9524c54dc9de786f131f31a).
# SCHEMA_BLOB is that file's git blob id there (`git rev-parse <commit>:schemas/<file>`).
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "slicer-extension-catalog-entry-schema-v1.0.2.json"
SCHEMA_URL = (
    "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"
)
SCHEMA_BLOB = "a62b14d596dacfc524b23406ab37c176dbaa26bf"
# The schema's "required" list (same file and commit as above).
SCHEMA_REQUIRED = ("$schema", "category", "scm_url")
# sha256 of the Apache License 2.0 text with surrounding blank lines and trailing spaces removed
# (see _normalisedText): the LICENSE of https://github.com/facebookresearch/sam2 at commit
# 2b90b9f5ceec907a1c18123530e92e794ad901a4, and https://www.apache.org/licenses/LICENSE-2.0.txt,
# which differs from it only by a leading blank line.
APACHE_2_0_SHA256 = "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4"
URL_PATTERN = re.compile(r"https?://[^\s\"'()<>]+")


def _cmakeList(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} is not set in the module CMakeLists.txt"
    return [line.strip().replace("${MODULE_NAME}", "SAM2SSlicer") for line in match.group(1).split() if line.strip()]


def test_module_cmakelists_lists_every_python_file_and_resource():
    text = (MODULE / "CMakeLists.txt").read_text()
    scripts = _cmakeList(text, "MODULE_PYTHON_SCRIPTS")
    resources = _cmakeList(text, "MODULE_PYTHON_RESOURCES")
    onDisk = sorted(p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*.py") if "__pycache__" not in p.parts)
    apps = [p for p in onDisk if p.startswith("sam2sapp/")]
    missing = [p for p in onDisk if p not in scripts and p not in apps]
    assert not missing, f"add these files to MODULE_PYTHON_SCRIPTS in SAM2SSlicer/CMakeLists.txt: {missing}"
    assert apps and not [p for p in scripts if p.startswith("sam2sapp/")]  # the applications are not installed
    stale = [p for p in scripts if not (MODULE / p).is_file()]
    assert not stale, f"MODULE_PYTHON_SCRIPTS lists files that do not exist: {stale}"
    assert len(scripts) == len(set(scripts))
    absent = [p for p in resources if not (MODULE / p).is_file()]
    assert not absent, f"MODULE_PYTHON_RESOURCES lists files that do not exist: {absent}"
    for needed in ("Resources/Icons/SAM2SSlicer.png", "Resources/UI/SAM2SSlicer.ui", "Resources/requirements.txt"):
        assert needed in resources
    assert "slicerMacroBuildScriptedModule" in text and "slicer_add_python_unittest" in text


def _extensionCMake(variable: str) -> str:
    """The value of ``set(EXTENSION_<variable> "...")`` in the top-level CMakeLists.txt (may be empty)."""
    match = re.search(rf'set\(EXTENSION_{variable}\s+"([^"]*)"\s*\)', (ROOT / "CMakeLists.txt").read_text())
    assert match, f"EXTENSION_{variable} is not set to a quoted value in CMakeLists.txt"
    return match.group(1).strip()


def _catalogEntry() -> dict:
    return json.loads(CATALOG_ENTRY.read_text(encoding="utf-8"))


def _githubRepository(url: str) -> tuple[str, str]:
    """``(owner, name)`` of a ``https://github.com/<owner>/<name>[.git]`` URL, lower case."""
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", url)
    assert match, f"{url} is not a GitHub repository URL"
    return match.group(1).lower(), match.group(2).lower()


def _pathInRepository(url: str, repository: tuple[str, str]) -> tuple[str, str] | None:
    """``(ref, path)`` when ``url`` names a file of ``repository`` (raw.githubusercontent.com or
    github.com/.../blob|raw|tree/...), else None."""
    owner, name = (re.escape(part) for part in repository)
    for pattern in (
        rf"https://raw\.githubusercontent\.com/{owner}/{name}/([^/]+)/(.+)",
        rf"https://github\.com/{owner}/{name}/(?:blob|raw|tree)/([^/]+)/(.+)",
    ):
        match = re.fullmatch(pattern, url, re.I)
        if match:
            return match.group(1), match.group(2)
    return None


def _normalisedText(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()) + "\n"


def test_catalog_entry_validates_against_the_index_schema():
    """SAM2SSlicer.json is a valid Extensions Index catalog entry (schema v1.0.2, draft-07)."""
    import jsonschema

    data = SCHEMA_FILE.read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert blob == SCHEMA_BLOB, "the schema copy differs from the Extensions Index's file"
    schema = json.loads(data)
    jsonschema.Draft7Validator.check_schema(schema)
    assert tuple(schema["required"]) == SCHEMA_REQUIRED
    validator = jsonschema.Draft7Validator(schema)

    raw = CATALOG_ENTRY.read_bytes()
    assert b"\r" not in raw, "the Index requires LF line endings (check_json_file_format)"
    entry = json.loads(raw)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(entry)]
    assert not errors, errors
    for field in SCHEMA_REQUIRED:
        assert entry.get(field), f"SAM2SSlicer.json has no value for the required '{field}'"
    assert entry["$schema"] == SCHEMA_URL  # the schema the Index downloads is the one checked here

    # The validator does reject what the Index rejects: a missing required field, an unknown field
    # (there is no licence field: additionalProperties is false), a wrong type, a tier out of range.
    for field in SCHEMA_REQUIRED:
        assert not validator.is_valid({k: v for k, v in entry.items() if k != field})
    for bad in ({"license": "Apache-2.0"}, {"build_dependencies": "PyTorch"}, {"tier": 6}, {"scm_type": "svn"}):
        assert not validator.is_valid({**entry, **bad}), bad


def test_catalog_entry_matches_the_cmakelists():
    """The catalog entry and the CMake meta-information describe the same extension (the Index
    builds from the entry; the Extensions Manager shows and installs from the CMake values)."""
    entry = _catalogEntry()
    text = (ROOT / "CMakeLists.txt").read_text()
    project = re.search(r"project\s*\(\s*([^\s)]+)", text)
    # ExtensionsIndex scripts/check_description_files.py: check_cmakelists_content (project() name
    # equals the .json file name) and check_extension_name (no "Slicer" prefix).
    assert project and project.group(1) == CATALOG_ENTRY.stem == "SAM2SSlicer"
    assert not CATALOG_ENTRY.stem.lower().startswith("slicer")
    assert "add_subdirectory(SAM2SSlicer)" in text
    for variable in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "DEPENDS"):
        assert _extensionCMake(variable), f"EXTENSION_{variable} has no value"
    assert entry["category"] == _extensionCMake("CATEGORY") == "Segmentation"
    # Every extension of EXTENSION_DEPENDS must be built before this one (the factory passes
    # <dep>_DIR to it only for build_dependencies), and PyTorch is what dependencies.py installs torch with.
    depends = [d for d in _extensionCMake("DEPENDS").split() if d != "NA"]
    assert entry.get("build_dependencies", []) == depends == ["PyTorch"]
    assert entry.get("build_subdirectory", ".") == _extensionCMake("BUILD_SUBDIRECTORY")
    assert _githubRepository(entry["scm_url"]) == _githubRepository(_extensionCMake("HOMEPAGE"))
    assert not (ROOT / "SAM2SSlicer.s4ext").exists(), "the .s4ext is generated by the build, not committed"


def test_urls_into_this_repository_name_existing_files():
    """Every URL of CMakeLists.txt and SAM2SSlicer.json that points into this repository names a
    file that exists here, at the revision the entry builds; the icon and screenshots are images."""
    entry = _catalogEntry()
    repository = _githubRepository(entry["scm_url"])
    assert _pathInRepository(f"https://raw.githubusercontent.com/{'/'.join(repository)}/main/no/such.png", repository)
    urls = URL_PATTERN.findall((ROOT / "CMakeLists.txt").read_text() + CATALOG_ENTRY.read_text())
    inRepository = {url: _pathInRepository(url, repository) for url in urls}
    missing = [url for url, found in inRepository.items() if found and not (ROOT / found[1]).is_file()]
    assert not missing, f"these URLs name files that are not in the repository: {missing}"
    assert {ref for ref, _ in filter(None, inRepository.values())} <= {entry["scm_revision"]}

    from PIL import Image

    icon = _pathInRepository(_extensionCMake("ICONURL"), repository)
    assert icon, "EXTENSION_ICONURL must be a raw GitHub URL of a file of this repository"
    with Image.open(ROOT / icon[1]) as image:
        assert image.format == "PNG" and image.size == (128, 128)
    for url in _extensionCMake("SCREENSHOTURLS").split():
        screenshot = _pathInRepository(url, repository)
        assert screenshot, f"{url}: screenshots must be files of this repository"
        with Image.open(ROOT / screenshot[1]) as image:
            assert image.format in ("PNG", "JPEG", "GIF")


def test_contributors_are_name_and_organisation():
    """EXTENSION_CONTRIBUTORS follows the Slicer form "Name (Organisation)", comma separated
    (https://github.com/Slicer/Slicer/blob/main/Extensions/CMake/SlicerExtensionDescriptionSpec.cmake)."""
    match = re.search(r"set\(EXTENSION_CONTRIBUTORS\s+(.*?)\)\s*$", (ROOT / "CMakeLists.txt").read_text(), re.S | re.M)
    assert match
    contributors = [
        item.strip()
        for quoted in re.findall(r'"([^"]*)"', match.group(1))
        for item in re.split(r",(?![^()]*\))", quoted)
        if item.strip()
    ]
    assert contributors
    for contributor in contributors:
        assert re.fullmatch(r"[^(),]+ \([^()]+\)", contributor), f"'{contributor}' is not 'Name (Organisation)'"
        assert contributor != "John Doe (AnyWare Corp.)"  # the Extension Wizard's placeholder


def test_licence_files():
    """LICENSE is the full Apache License 2.0, the extension package uses it, NOTICE names the parts
    derived from Meta's SAM 2 (paths that exist), and pyproject's licence is the same SPDX id."""
    license = ROOT / "LICENSE"
    digest = hashlib.sha256(_normalisedText(license.read_text(encoding="utf-8")).encode()).hexdigest()
    assert digest == APACHE_2_0_SHA256, "LICENSE is not the unmodified Apache License 2.0 text"
    # EXTENSION_LICENSE_FILE (default: Slicer's License.txt) must exist, or SlicerExtensionCPack.cmake stops.
    licenseFile = _extensionCMake("LICENSE_FILE").replace("${CMAKE_CURRENT_SOURCE_DIR}", str(ROOT))
    assert Path(licenseFile).resolve() == license.resolve()

    notice = (ROOT / "NOTICE").read_text(encoding="utf-8")
    paths = re.findall(r"SAM2SSlicer/[\w./-]*\w/?", notice)
    assert "SAM2SSlicer/sam2s/" in paths
    absent = [p for p in paths if not (ROOT / p).exists()]
    assert not absent, f"NOTICE names paths that do not exist: {absent}"

    from packaging.licenses import canonicalize_license_expression
    from setuptools.config.pyprojecttoml import read_configuration

    project = read_configuration(ROOT / "pyproject.toml")["project"]  # validates pyproject.toml too
    assert canonicalize_license_expression(project["license"]) == "Apache-2.0"


def test_icons():
    from PIL import Image

    for path in (ROOT / "Resources" / "SAM2SSlicer.png", MODULE / "Resources" / "Icons" / "SAM2SSlicer.png"):
        with Image.open(path) as image:
            assert image.size == (128, 128)


def test_requirements_are_pinned_ranges():
    from SAM2SSlicerLib.dependencies import TORCH_REQUIREMENT, missingRequirements, readRequirements

    requirements = readRequirements()
    names = {re.split(r"[<>=!~]", r)[0] for r in requirements}
    assert names == {"av", "tqdm", "opencv-python-headless", "h11", "fastapi", "uvicorn"}
    # Slicer bundles numpy and pillow; a range here could make pip_ensure downgrade them.
    assert not names & {"numpy", "pillow"}
    from setuptools.config.pyprojecttoml import read_configuration

    pipDependencies = read_configuration(ROOT / "pyproject.toml")["project"]["dependencies"]
    assert {"numpy", "pillow"} <= {re.split(r"[<>=!~ ;\[]", r)[0].lower() for r in pipDependencies}
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


def test_what_the_extension_installs_imports_without_the_applications(tmp_path):
    """A copy of exactly the files CMake installs (the module's Python files, the Slicer library and
    the engine, not ``sam2sapp``) imports every module of the Slicer library, the controller and the
    logic with their jobs and exports, as Slicer would, and none of them needs the applications."""
    scripts = _cmakeList((MODULE / "CMakeLists.txt").read_text(), "MODULE_PYTHON_SCRIPTS")
    for rel in scripts:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(MODULE / rel, tmp_path / rel)
    library = sorted(p.stem for p in (tmp_path / "SAM2SSlicerLib").glob("*.py") if p.stem != "__init__")
    code = f"""
import importlib, sys
sys.path = [{str(tmp_path)!r}] + [p for p in sys.path if "SAM2SSlicer" not in p]
sys.modules["sam2sapp"] = None  # an import of it raises ImportError
for name in {library!r}:
    importlib.import_module("SAM2SSlicerLib." + name)
import sam2s.modelspec, sam2s.serving.client, SAM2SSlicerLib
assert SAM2SSlicerLib.__file__.startswith({str(tmp_path)!r}) and sam2s.__file__.startswith({str(tmp_path)!r})
print(sorted(m for m in sys.modules if m.startswith(("SAM2SSlicerLib", "sam2s"))).__len__())
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) >= len(library)
    assert "controller" in library and "logic" in library and "provenance" in library


def test_the_module_tests_clip_needs_neither_torch_nor_pyav():
    """Slicer's extension factory runs the module's test without torch and without PyAV (N14 of
    issue 23): the generated clip (``synthetic``) and frame sources of arrays and folders import
    and work with both made unimportable (``sys.modules[name] = None``)."""
    code = f"""
import sys
sys.modules["av"] = None
sys.modules["torch"] = None
sys.path.insert(0, {str(MODULE)!r})
import numpy as np
from SAM2SSlicerLib.synthetic import SyntheticClip
from sam2s.frames import open_frames
clip = SyntheticClip(3, 24, 32, 1)
frames = np.stack([clip.get(t) for t in range(3)])
source = open_frames(frames)
print(len(source), source.height, source.width)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["3", "24", "32"]


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
