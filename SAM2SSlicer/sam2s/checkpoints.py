"""Registry, cache and downloader of SAM 2 family checkpoints: Meta's SAM 2 / SAM 2.1, EdgeTAM,
SurgSAM-2 and MedSAM2 (the safe loader is in :mod:`sam2s.safeload`; :func:`load_state_dict` and
:class:`CheckpointError` are re-exported here).

Public API:

* :data:`REGISTRY` -- ``{name: CheckpointInfo}``: Meta's eight official checkpoints, keyed by the
  config names of :mod:`sam2s.config` (``sam2_hiera_t`` ... ``sam2.1_hiera_l``), then ``edgetam``
  (Meta's EdgeTAM), ``sam2_hiera_s_endo18`` (SurgSAM-2, bring your own file) and ``medsam2``
  (MedSAM2). Each entry names the config its state dict must match (``CheckpointInfo.config``),
  its licence and the image size it was trained at (``CheckpointInfo.image_size``, its default
  image size: :func:`default_image_size`, which ``sam2s.build_model`` uses when no size is given).
* :func:`cache_dir` -- where downloaded checkpoints live (``$SAM2S_CACHE_DIR`` or the platform cache).
* :func:`download` -- fetch a checkpoint into the cache, verifying its size and SHA-256; a
  progress callback and a cancel event let an application follow and stop it
  (:class:`DownloadCancelled`). A bring-your-own entry (no published SHA-256) is never
  downloaded: the error says where to get the file and where to put it.
* :func:`resolve_checkpoint` -- turn a local path or a registry name into a local file.
* :func:`load_state_dict` -- ``torch.load(..., weights_only=True)``: a checkpoint never runs code.
* :func:`cache_status` -- which registry checkpoints are in the cache (for ``sam2s models``).

Only :func:`load_state_dict` imports torch: the registry, the cache and the downloader work
without it.

Cache layout: ``<cache dir>/<official file name>`` (e.g. ``sam2.1_hiera_tiny.pt``), so a file
downloaded by hand (browser, ``wget``) can simply be dropped there. Next to each verified file
sits a small marker ``<file name>.sha256-ok`` (JSON: sha256, size, mtime_ns) written after the
SHA-256 was checked once; while the file's size and modification time are unchanged, later calls
trust it instead of re-hashing up to 900 MB. A cached file whose size or hash is wrong is ignored
(and replaced by the next download). Downloads stream into ``<file name>.part-<random>`` in the
same directory and are renamed with :func:`os.replace` only once complete and verified, so the
final name never holds a partial or corrupt file, even across crashes or concurrent downloads.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .safeload import CheckpointError, load_state_dict  # noqa: F401 - part of this module's API

__all__ = [
    "REGISTRY",
    "CheckpointError",
    "CheckpointInfo",
    "ChecksumError",
    "DownloadCancelled",
    "DownloadError",
    "ProgressCallback",
    "cache_dir",
    "cache_status",
    "default_image_size",
    "download",
    "get_info",
    "load_state_dict",
    "resolve_checkpoint",
]

ENV_CACHE_DIR = "SAM2S_CACHE_DIR"
"""Environment variable that overrides the cache directory."""

MARKER_SUFFIX = ".sha256-ok"
"""Suffix of the marker written next to a cached file whose SHA-256 has been verified."""

_CHUNK_BYTES = 1 << 20  # 1 MiB read / hash block
_USER_AGENT = "sam2s-checkpoint-downloader (Python urllib)"


class DownloadError(RuntimeError):
    """A download could not start or was interrupted (offline, unreachable, HTTP error, timeout)."""


class ChecksumError(RuntimeError):
    """A downloaded file's size or SHA-256 differs from the expected value."""


class DownloadCancelled(RuntimeError):
    """A download was stopped through its ``cancel`` event (see :func:`download`); the partial file
    was removed and nothing was added to the cache."""


ProgressCallback = Callable[[int, int | None], None]
"""``progress(received_bytes, total_bytes_or_None)`` of :func:`download`, called after each block."""


DEFAULT_IMAGE_SIZE = 1024
"""The image size Meta trained SAM 2 / SAM 2.1 and EdgeTAM at, and the default of entries that do
not say otherwise."""


@dataclass(frozen=True)
class CheckpointInfo:
    """Where to get one checkpoint and how to recognise it.

    Attributes:
        name: registry key: the model config name for Meta's checkpoints (e.g. ``"sam2.1_hiera_t"``),
            else the model's own name (``"edgetam"``, ``"sam2_hiera_s_endo18"``, ``"medsam2"``).
        config: config name passed to the model builder (:func:`sam2s.config.get_config`): the key
            layout and shapes its state dict must have (``sam2s.build.load_checkpoint`` is strict).
        url: download URL (HTTPS); for a bring-your-own entry, the page the file is published on.
        filename: file name in the cache directory (the publisher's name, e.g. ``sam2.1_hiera_tiny.pt``).
        size_bytes: exact file size in bytes, or ``None`` if unknown (then not checked).
        sha256: lowercase hex SHA-256 of the whole file, or ``None`` if unknown (then not checked,
            with a warning).
        image_size: the input size in pixels the model was trained at: its default image size
            wherever the registry name is used (:meth:`build`, :func:`default_image_size`).
        licence: the licence the weights are published under, as published (short).
        homepage: the project page (code, paper, licence).
        bring_your_own: True when no SHA-256 / size of the file has been published: sam2s never
            downloads it (:func:`download` raises ``DownloadError`` saying where to get it); a
            file the user puts in the cache as ``filename`` (or passes by path) is used as is.
        title: a human-readable name (``sam2s models``, messages).
    """

    name: str
    config: str
    url: str
    filename: str
    size_bytes: int | None
    sha256: str | None
    image_size: int = DEFAULT_IMAGE_SIZE
    licence: str = "Apache-2.0"
    homepage: str = ""
    bring_your_own: bool = False
    title: str = ""

    @property
    def summary(self) -> str:
        """One line for listings: title, licence, training size, and whether sam2s can download it."""
        how = "bring your own file (no published SHA-256)" if self.bring_your_own else "downloadable"
        return f"{self.title or self.name}; licence {self.licence}; trained at {self.image_size} px; {how}"


_SAM2_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"
_SAM21_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"

# Sizes and SHA-256 digests, as published in public sources (no checkpoint was downloaded to
# compute them). Every digest appears in at least two independent sources:
#  [M] computational-cell-analytics/micro-sam, micro_sam/v2/util.py (HASHES), all eight files,
#      fetched with pooch from exactly these dl.fbaipublicfiles.com URLs and checked by pooch.
#  [S] mazurowski-lab/SlicerSegmentWithSAM (3D Slicer extension), SegmentWithSAM.py: the four
#      SAM 2 (072824) digests, passed to SampleData.downloadFileIntoCache with these URLs.
#  [H] Hugging Face Git-LFS pointers ("oid sha256:<digest>" / "size <bytes>") of copies of the
#      same files: facebook/sam2-hiera-tiny (commit a8e4b46), facebook/sam2-hiera-small and
#      facebook/sam2.1-hiera-{tiny,small} (LFS details pages), merve/sam2-hiera-{tiny,base-plus,
#      large}, martintomov/comfy (commit 9a1fa80: all four SAM 2 files), camenduru/sam2-1-hiera
#      (commit cdd35a4: all four SAM 2.1 files), Promethe-us/sam2 (SAM 2.1 tiny, base_plus),
#      datasets/phenanthra/tmp (SAM 2.1 large).
# A byte size follows from the LFS pointer with the same SHA-256 (same digest => same bytes).
_REGISTRY_ROWS: tuple[tuple[str, str, str, int, str], ...] = (
    # name, base URL, file name, size in bytes, sha256
    (
        "sam2_hiera_t",
        _SAM2_BASE_URL,
        "sam2_hiera_tiny.pt",
        155_906_050,  # [H] facebook/sam2-hiera-tiny a8e4b46, merve, martintomov
        "65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125",  # [M] [S] [H]
    ),
    (
        "sam2_hiera_s",
        _SAM2_BASE_URL,
        "sam2_hiera_small.pt",
        184_309_650,  # [H] martintomov/comfy 9a1fa80 (only exact-size source found)
        "95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3",  # [M] [S] [H] facebook
    ),
    (
        "sam2_hiera_b+",
        _SAM2_BASE_URL,
        "sam2_hiera_base_plus.pt",
        323_493_298,  # [H] merve/sam2-hiera-base-plus 838f027, martintomov
        "d0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071",  # [M] [S] [H]
    ),
    (
        "sam2_hiera_l",
        _SAM2_BASE_URL,
        "sam2_hiera_large.pt",
        897_952_466,  # [H] merve/sam2-hiera-large 9551b5a, martintomov, several Spaces
        "7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b",  # [M] [S] [H]
    ),
    (
        "sam2.1_hiera_t",
        _SAM21_BASE_URL,
        "sam2.1_hiera_tiny.pt",
        156_008_466,  # [H] camenduru cdd35a4, Promethe-us
        "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",  # [M] [H] facebook
    ),
    (
        "sam2.1_hiera_s",
        _SAM21_BASE_URL,
        "sam2.1_hiera_small.pt",
        184_416_285,  # [H] camenduru cdd35a4
        "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",  # [M] [H] facebook
    ),
    (
        "sam2.1_hiera_b+",
        _SAM21_BASE_URL,
        "sam2.1_hiera_base_plus.pt",
        323_606_802,  # [H] camenduru cdd35a4, Promethe-us
        "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",  # [M] [H]
    ),
    (
        "sam2.1_hiera_l",
        _SAM21_BASE_URL,
        "sam2.1_hiera_large.pt",
        898_083_611,  # [H] camenduru cdd35a4, phenanthra
        "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",  # [M] [H]
    ),
)

_META = {"licence": "Apache-2.0", "homepage": "https://github.com/facebookresearch/sam2"}

# Models trained from SAM 2 / EdgeTAM by others: each with the config its state dict must match
# and the image size it was trained at (its default image size). Sizes and digests only as
# published; where none is published the entry is "bring your own file" (never downloaded).
#
# EdgeTAM -- facebookresearch/EdgeTAM (Apache-2.0 for code and checkpoints: README "License",
#   LICENSE); the checkpoint is committed as checkpoints/edgetam.pt (README "Downloading the
#   model") and mirrored on Hugging Face, facebook/EdgeTAM. Config sam2/configs/edgetam.yaml,
#   image_size: 1024; loaded by sam2/build_sam.py as torch.load(..., weights_only=True)["model"].
#   SHA-256 [B] mikel-brostrom/boxmot, boxmot/segmentors/propagation/weights.py (commit 94e1cec),
#   _EDGETAM_SHA256, which BoxMOT checks every download of exactly this URL against; the same
#   digest with the size 56,116,523 bytes is recorded by several independent projects that pin the
#   file (at EdgeTAM commit 7711e012 and at Hugging Face revisions 14b1b751 and f3a09791 of
#   facebook/EdgeTAM); found in the public-code index by the digest.
# SurgSAM-2 -- jinlab-imvr/Surgical-SAM-2 (Liu et al., NeurIPS 2024 workshop AIM-FM): README at
#   commit 1b6ca9f links the weights "sam2_hiera_s_endo18" (Google Drive, saved as
#   model_weights/sam2_hiera_s_endo18.pth) and the config sam2_configs/sam2_hiera_s_512.yaml: Meta's
#   sam2_hiera_s.yaml with image_size: 512 (the only change). No SHA-256 or size is published and
#   the repository has no licence file: bring your own file. Its loader (sam2/build_sam.py) takes
#   the state dict at the top level or under "model". (The repository's later README instead links a
#   SAM 2.1 Hiera-S file, sam2.1_hiera_s_endo18.pth, trained at 512 px: config sam2.1_hiera_s.)
# MedSAM2 -- bowang-lab/MedSAM2 (Ma et al. 2025, arXiv:2504.03600): download.sh fetches
#   MedSAM2_latest.pt ("recommended") from huggingface.co/wanglab/MedSAM2; the inference scripts use
#   sam2/configs/sam2.1_hiera_t512.yaml: Meta's sam2.1_hiera_t.yaml with image_size: 512 (the only
#   change); sam2/build_sam.py loads torch.load(..., weights_only=True)["model"]. Licence: the
#   repository's LICENSE is Apache-2.0, as is the Azure AI catalogue entry of the model
#   (Azure/azureml-assets, assets/models/system/MedSAM2/spec.yaml: "license: apache-2.0"); the Hugging
#   Face model card is reported to restrict the weights to research and education: check it.
#   No SHA-256 or size is published by its authors (the model card and repository list none), and a
#   digest seen only in unnamed third-party code is not a citable source: bring your own file.
_OTHER_ENTRIES: tuple[CheckpointInfo, ...] = (
    CheckpointInfo(
        name="edgetam",
        config="edgetam",
        url="https://huggingface.co/facebook/EdgeTAM/resolve/main/edgetam.pt",
        filename="edgetam.pt",
        size_bytes=56_116_523,
        sha256="ed2d4850b8792c239689b043c47046ec239b6e808a3d9b6ae676c803fd8780df",
        image_size=1024,
        licence="Apache-2.0",
        homepage="https://github.com/facebookresearch/EdgeTAM",
        title="EdgeTAM (Meta, CVPR 2025)",
    ),
    CheckpointInfo(
        name="sam2_hiera_s_endo18",
        config="sam2_hiera_s",
        url="https://drive.google.com/file/d/102AsbwpntPfUV96ANO2AWe7L6feskYnM/view?usp=sharing",
        filename="sam2_hiera_s_endo18.pth",
        size_bytes=None,
        sha256=None,
        image_size=512,
        licence="none published",
        homepage="https://github.com/jinlab-imvr/Surgical-SAM-2",
        bring_your_own=True,
        title="SurgSAM-2 (SAM 2 Hiera-S, EndoVis18)",
    ),
    CheckpointInfo(
        name="medsam2",
        config="sam2.1_hiera_t",
        url="https://huggingface.co/wanglab/MedSAM2/resolve/e4a6f35edd7e091619cbc0750f462f1574e23955/MedSAM2_latest.pt",
        filename="MedSAM2_latest.pt",
        size_bytes=None,
        sha256=None,
        image_size=512,
        licence="Apache-2.0 (code; see HF card)",
        homepage="https://github.com/bowang-lab/MedSAM2",
        bring_your_own=True,
        title="MedSAM2 (SAM 2.1 tiny, medical)",
    ),
)

REGISTRY: dict[str, CheckpointInfo] = {
    **{
        name: CheckpointInfo(
            name=name, config=name, url=base + filename, filename=filename, size_bytes=size, sha256=sha, **_META
        )
        for name, base, filename, size, sha in _REGISTRY_ROWS
    },
    **{info.name: info for info in _OTHER_ENTRIES},
}
"""The checkpoints sam2s knows: Meta's SAM 2 (July 2024) and SAM 2.1 (Sept. 2024), keyed by config
name, then EdgeTAM, SurgSAM-2 and MedSAM2 (both bring your own file: no published SHA-256)."""


# --------------------------------------------------------------------------------------------
# Registry and cache location
# --------------------------------------------------------------------------------------------


def get_info(name: str) -> CheckpointInfo:
    """Return the registry entry for ``name``.

    Args:
        name: a registry key (``"sam2.1_hiera_t"``, ``"medsam2"``), also accepted as the published
            file name (``"sam2.1_hiera_tiny.pt"``, ``"MedSAM2_latest.pt"``, also as the last part of
            a path) or a config path (``"configs/sam2.1/sam2.1_hiera_t.yaml"``).

    Returns:
        The :class:`CheckpointInfo`.

    Raises:
        ValueError: unknown name; the message lists the known names.
    """
    key = str(name).strip()
    if key in REGISTRY:
        return REGISTRY[key]
    stem = key.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".yaml")
    if stem in REGISTRY:
        return REGISTRY[stem]
    for info in REGISTRY.values():
        if stem == info.filename:
            return info
    raise ValueError(f"Unknown checkpoint {name!r}; known checkpoints: {', '.join(REGISTRY)}.")


def default_image_size(name: str | Path) -> int:
    """The image size a model named ``name`` was trained at: the registry entry's
    :attr:`CheckpointInfo.image_size` (512 for ``medsam2`` and ``sam2_hiera_s_endo18``, 1024 for
    Meta's checkpoints and ``edgetam``), found as :func:`get_info` finds it (key, file name, also
    as the last part of a path, config path); :data:`DEFAULT_IMAGE_SIZE` (1024) for anything else."""
    try:
        return get_info(str(name)).image_size
    except ValueError:
        return DEFAULT_IMAGE_SIZE


def cache_dir() -> Path:
    """Return the directory for downloaded checkpoints (not created here).

    ``$SAM2S_CACHE_DIR`` when set and non-empty, else the platform cache directory:
    ``$XDG_CACHE_HOME/sam2s`` or ``~/.cache/sam2s`` on Linux and other POSIX systems,
    ``~/Library/Caches/sam2s`` on macOS, ``%LOCALAPPDATA%\\sam2s\\Cache`` on Windows.

    Returns:
        The cache directory as a :class:`~pathlib.Path` (``~`` expanded).
    """
    override = os.environ.get(ENV_CACHE_DIR, "").strip()
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA", "").strip()
        base = Path(local) if local else Path.home() / "AppData" / "Local"
        return base / "sam2s" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "sam2s"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    # The XDG spec says relative paths are invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "sam2s"


def _as_info(info: CheckpointInfo | str) -> CheckpointInfo:
    return info if isinstance(info, CheckpointInfo) else get_info(info)


def _directory(directory: str | Path | None) -> Path:
    return cache_dir() if directory is None else Path(directory).expanduser()


# --------------------------------------------------------------------------------------------
# Verification of cached files
# --------------------------------------------------------------------------------------------


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _marker_path(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


def _write_marker(path: Path, sha256: str) -> None:
    """Record that ``path`` (as it is now) has SHA-256 ``sha256``; best effort."""
    try:
        st = path.stat()
        _marker_path(path).write_text(
            json.dumps({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}) + "\n",
            encoding="utf-8",
        )
    except OSError:
        pass  # read-only cache: we will simply hash again next time


def _marker_confirms(path: Path, sha256: str, st: os.stat_result) -> bool:
    try:
        data = json.loads(_marker_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(data, dict)
        and data.get("sha256") == sha256
        and data.get("size") == st.st_size
        and data.get("mtime_ns") == st.st_mtime_ns
    )


def _verified_cached(info: CheckpointInfo, directory: Path, hash_check: bool = True, warn: bool = True) -> Path | None:
    """Return the cached file of ``info`` in ``directory`` if it is present and valid, else None.

    Valid: right size (when known) and, if ``hash_check``, a SHA-256 equal to the registry's,
    confirmed by a fresh ``.sha256-ok`` marker or by hashing (which then writes the marker).
    An invalid file is reported with a warning when ``warn``.
    """
    path = directory / info.filename
    try:
        st = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    if info.size_bytes is not None and st.st_size != info.size_bytes:
        if warn:
            warnings.warn(
                f"Ignoring cached {path}: {st.st_size} bytes instead of {info.size_bytes} "
                "(incomplete or a different file).",
                stacklevel=3,
            )
        return None
    if not hash_check or info.sha256 is None:
        return path
    expected = info.sha256.lower()
    if _marker_confirms(path, expected, st):
        return path
    actual = _sha256_of(path)
    if actual != expected:
        if warn:
            warnings.warn(
                f"Ignoring cached {path}: SHA256 {actual} instead of {expected} (corrupt or a different file).",
                stacklevel=3,
            )
        return None
    _write_marker(path, expected)
    return path


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------


def _manual_hint(info: CheckpointInfo, url: str, directory: Path) -> str:
    return (
        f"download {url} by other means (browser, wget, curl, another machine) and either pass the "
        f"local path of the file instead of the name {info.name!r}, or copy it into the sam2s cache as "
        f"{directory / info.filename} (set ${ENV_CACHE_DIR} to use another cache folder)."
    )


def _bring_your_own_hint(info: CheckpointInfo, directory: Path) -> str:
    return (
        f"{info.title or info.name} is a bring-your-own checkpoint: sam2s does not download it, because no "
        f"SHA-256 or size of the file has been published to check a download against (its hash is unknown). "
        f"Download {info.filename} yourself from {info.url} (project: {info.homepage or '-'}; licence: "
        f"{info.licence}), then pass its local path, or copy it into the sam2s cache as "
        f"{directory / info.filename} (set ${ENV_CACHE_DIR} to use another cache folder). Its state dict "
        f"(at the top level or under 'model') must have the keys and shapes of config {info.config!r}; "
        f"the model was trained at {info.image_size} px."
    )


def _offline_hint(info: CheckpointInfo, url: str, directory: Path) -> str:
    return "The machine may be offline, or a proxy/firewall may block the server. To work offline, " + _manual_hint(
        info, url, directory
    )


def _remove(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def download(
    info: CheckpointInfo | str,
    cache_dir: str | Path | None = None,
    progress: bool | ProgressCallback = True,
    url: str | None = None,
    timeout: float = 30,
    cancel: threading.Event | None = None,
) -> Path:
    """Download a checkpoint into the cache (if needed) and return its local path.

    A cached file of the right size whose SHA-256 was verified (``.sha256-ok`` marker, or hashed
    now when the marker is missing or stale) is returned without any network access. Otherwise
    the file is streamed with :mod:`urllib.request` in 1 MiB chunks into
    ``<filename>.part-<random>`` in the cache directory while its SHA-256 is computed, progress is
    reported (a tqdm bar on stderr, or a callback; bytes, total from ``Content-Length`` or the
    registry size), size and SHA-256 are checked, and the file is atomically renamed
    (:func:`os.replace`) to ``<cache>/<filename>``. The partial file is removed on any failure,
    also when the callback raises or the download is cancelled.

    Args:
        info: a registry name (see :func:`get_info`) or a :class:`CheckpointInfo`, e.g. for a
            checkpoint that is not in :data:`REGISTRY`.
        cache_dir: target directory (created if missing); default :func:`sam2s.checkpoints.cache_dir`.
        progress: True: a tqdm progress bar on stderr; False: nothing; a callable
            ``progress(received_bytes, total_bytes_or_None)``: called from the calling thread
            after each block of at most 1 MiB (``received_bytes`` increases, reaching the file's
            size when complete; ``total`` is ``Content-Length``, else ``info.size_bytes``, else
            None), instead of a bar. Not called for a cache hit.
        url: download from this URL instead of ``info.url`` (a mirror); size and SHA-256 are
            still checked against ``info``.
        timeout: socket timeout in seconds for connecting and for each read.
        cancel: a :class:`threading.Event` another thread may set to stop the download; it is
            checked before connecting and before each block is read (so a stop takes effect
            within one block, or one ``timeout`` on a stalled connection).

    Returns:
        Path of the verified file in the cache directory.

    Raises:
        ValueError: unknown registry name.
        DownloadError: the URL could not be reached (offline, DNS, refused, HTTP error, timeout)
            or the transfer was interrupted; the message explains how to work offline. Also for a
            bring-your-own entry that is not in the cache (nothing is requested; the message says
            where to get the file and where to put it).
        ChecksumError: the downloaded size or SHA-256 differs from ``info``; nothing is kept.
        DownloadCancelled: ``cancel`` was set; the partial file was removed (set before the
            start: nothing was requested nor created).
        OSError: the cache directory cannot be created or written.
    """
    info = _as_info(info)
    directory = _directory(cache_dir)
    cached = _verified_cached(info, directory)
    if cached is not None:
        return cached
    if info.bring_your_own:
        raise DownloadError(_bring_your_own_hint(info, directory))
    transfer = _Transfer(info, url or info.url, directory, cancel)
    transfer.check_cancelled(info.size_bytes)  # before anything is created or requested
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / info.filename
    if info.sha256 is None:
        warnings.warn(
            f"No SHA256 is known for {info.filename}; it will be downloaded without integrity check.",
            stacklevel=2,
        )
    response = transfer.open(timeout)
    try:
        with response:
            content_length = transfer.content_length(response)
            actual = transfer.stream(response, progress, content_length)
        transfer.verify(content_length, actual)
        with contextlib.suppress(OSError):
            os.chmod(transfer.partial, 0o644)  # mkstemp creates 0600; a cache file is not secret
        os.replace(transfer.partial, final)
        transfer.partial = None
    except BaseException:
        _remove(transfer.partial)
        raise
    if info.sha256 is not None:
        _write_marker(final, info.sha256.lower())
    else:
        _remove(_marker_path(final))
    return final


@dataclass
class _Transfer:
    """One download of ``info`` from ``source`` into ``directory`` (the steps of :func:`download`):
    ``received`` bytes so far into the temporary file ``partial`` (None until created, and again
    once renamed)."""

    info: CheckpointInfo
    source: str
    directory: Path
    cancel: threading.Event | None
    received: int = 0
    partial: Path | None = None

    @property
    def hint(self) -> str:
        return _offline_hint(self.info, self.source, self.directory)

    @property
    def manual(self) -> str:
        return _manual_hint(self.info, self.source, self.directory)

    def check_cancelled(self, total: int | None) -> None:
        """Raise ``DownloadCancelled`` when ``cancel`` is set."""
        if self.cancel is not None and self.cancel.is_set():
            raise DownloadCancelled(
                f"The download of {self.info.filename} from {self.source} was cancelled after {self.received} of "
                f"{total if total is not None else '?'} bytes; nothing was kept."
            )

    def open(self, timeout: float):
        """The HTTP response of ``source``; ``DownloadError`` (with the offline hint) when unreachable."""
        request = urllib.request.Request(self.source, headers={"User-Agent": _USER_AGENT})
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise DownloadError(
                f"Could not download {self.info.filename}: {self.source} answered HTTP {exc.code} {exc.reason}. "
                f"Retry later. {self.hint}"
            ) from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(
                f"Could not reach {self.source} to download {self.info.filename} ({reason}). {self.hint}"
            ) from exc

    def content_length(self, response) -> int | None:
        """``Content-Length`` in bytes, or None; ``ChecksumError`` when it is not the registry's size."""
        header = response.headers.get("Content-Length")
        length = int(header) if header and header.isdigit() else None
        size = self.info.size_bytes
        if length is not None and size is not None and length != size:
            raise ChecksumError(
                f"{self.source} offers {length} bytes for {self.info.filename}, expected {size} bytes: not the "
                f"expected file. Retry later, or install it manually: {self.manual}"
            )
        return length

    def stream(self, response, progress: bool | ProgressCallback, content_length: int | None) -> str:
        """Copy the body in 1 MiB blocks into a new temporary file ``partial`` (fsynced), with
        progress and cancel checks; returns its SHA-256 (hex). ``DownloadError`` when interrupted."""
        total = content_length if content_length is not None else self.info.size_bytes
        fd, name = tempfile.mkstemp(prefix=self.info.filename + ".part-", dir=self.directory)
        self.partial = Path(name)
        digest = hashlib.sha256()
        callback = progress if callable(progress) else None
        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=self.info.filename,
                   disable=callback is not None or not progress, file=sys.stderr)  # fmt: skip
        with os.fdopen(fd, "wb") as out, bar:
            while True:
                self.check_cancelled(total)
                try:
                    block = response.read(_CHUNK_BYTES)
                except (http.client.HTTPException, OSError) as exc:
                    raise DownloadError(
                        f"The download of {self.info.filename} from {self.source} was interrupted after "
                        f"{self.received} of {total if total is not None else '?'} bytes ({exc}). {self.hint}"
                    ) from exc
                if not block:
                    break
                out.write(block)
                digest.update(block)
                self.received += len(block)
                bar.update(len(block))
                if callback is not None:
                    callback(self.received, total)
            out.flush()
            os.fsync(out.fileno())
        return digest.hexdigest()

    def verify(self, content_length: int | None, actual: str) -> None:
        """``DownloadError`` for a body shorter than announced; ``ChecksumError`` for a size or
        SHA-256 other than the registry's."""
        info, received = self.info, self.received
        expected_total = content_length if content_length is not None else info.size_bytes
        if expected_total is not None and received < expected_total:
            raise DownloadError(
                f"The download of {info.filename} from {self.source} was interrupted: the connection "
                f"closed after {received} of {expected_total} bytes. {self.hint}"
            )
        if info.size_bytes is not None and received != info.size_bytes:
            raise ChecksumError(
                f"Size mismatch for {info.filename} from {self.source}: expected {info.size_bytes} bytes, "
                f"got {received}. The file was deleted. Retry, or install it manually: {self.manual}"
            )
        if info.sha256 is not None and actual != info.sha256.lower():
            raise ChecksumError(
                f"SHA256 mismatch for {info.filename} downloaded from {self.source}: expected "
                f"{info.sha256.lower()}, got {actual}. The file was deleted. Retry the download (the "
                f"transfer may have been corrupted); if it fails again, install it manually (and check "
                f"that its SHA256 is {info.sha256.lower()}): {self.manual}"
            )


# --------------------------------------------------------------------------------------------
# Resolution, status, loading
# --------------------------------------------------------------------------------------------


def resolve_checkpoint(
    name_or_path: str | Path | CheckpointInfo,
    cache_dir: str | Path | None = None,
    allow_download: bool = False,
    progress: bool | ProgressCallback = True,
    timeout: float = 30,
    cancel: threading.Event | None = None,
) -> Path:
    """Turn a local checkpoint path or a registry name into an existing local file.

    Args:
        name_or_path: an existing file (returned as is, no registry entry needed), a registry
            name (see :func:`get_info`), or a :class:`CheckpointInfo`.
        cache_dir: cache directory; default :func:`sam2s.checkpoints.cache_dir`.
        allow_download: download a registry checkpoint that is not cached (see :func:`download`).
        progress: progress of a download: a bar (True), nothing (False) or a callback
            ``(received_bytes, total_bytes_or_None)`` (see :func:`download`).
        timeout: socket timeout in seconds for a download.
        cancel: a :class:`threading.Event` that stops a download when set (see :func:`download`).

    Returns:
        Path of the checkpoint file.

    Raises:
        FileNotFoundError: not an existing file and either not a registry name, or a registry
            checkpoint that is not cached while ``allow_download`` is false (the message says
            how to download it), or a bring-your-own entry that is not cached (the message says
            where to get it and where to put it).
        DownloadError, ChecksumError, DownloadCancelled: see :func:`download`.
    """
    if not isinstance(name_or_path, CheckpointInfo):
        candidate = Path(name_or_path).expanduser()
        if candidate.is_file():
            return candidate
        try:
            info = get_info(str(name_or_path))
        except ValueError:
            raise FileNotFoundError(
                f"Checkpoint {str(name_or_path)!r} is neither an existing file nor a known checkpoint "
                f"name ({', '.join(REGISTRY)})."
            ) from None
    else:
        info = name_or_path
    directory = _directory(cache_dir)
    cached = _verified_cached(info, directory)
    if cached is not None:
        return cached
    if info.bring_your_own:
        raise FileNotFoundError(
            f"Checkpoint {info.name!r} is not in the cache. " + _bring_your_own_hint(info, directory)
        )
    if allow_download:
        return download(info, cache_dir=directory, progress=progress, timeout=timeout, cancel=cancel)
    raise FileNotFoundError(
        f"Checkpoint {info.name!r} is not in the cache ({directory / info.filename}). Download it "
        f"with `sam2s download {info.name}` or, in Python, `sam2s.download({info.name!r})`; or get "
        f"{info.url} yourself and pass its local path."
    )


def cache_status(cache_dir: str | Path | None = None) -> list[tuple[CheckpointInfo, Path | None]]:
    """List every registry checkpoint with its cached path, or None when not cached.

    To stay fast this checks existence and size only (the SHA-256 is verified by
    :func:`download` / :func:`resolve_checkpoint` before use).

    Args:
        cache_dir: cache directory; default :func:`sam2s.checkpoints.cache_dir`.

    Returns:
        ``[(info, path or None), ...]`` in registry order.
    """
    directory = _directory(cache_dir)
    return [(info, _verified_cached(info, directory, hash_check=False, warn=False)) for info in REGISTRY.values()]
