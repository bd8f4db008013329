"""The tracking server's options and limits (``sam2s serve`` = ``python -m sam2s.serving.server``), standard
library only: ``sam2s serve --help`` works where FastAPI is missing.

Each option is defined once, here: :func:`add_server_arguments` adds them to an ``argparse``
parser (both entry points use it) and :func:`limits_from_args` turns the parsed limits into a
:class:`ServerLimits`, the object ``sam2s.serving.server.create_app`` and ``sam2s.serving.server.serve`` take.

Limits (defaults; ``GET /version`` lists them):

==========================  ====================  =================================================================
``max_upload_bytes``        ``--max-upload-gb``   8 GiB: largest upload (and upload request body)
``max_token_bytes``         ``--max-token-gb``    16 GiB: one token's uploads and its sessions' frames from uploads
``max_sessions_per_token``  ``--max-sessions``    8 open sessions (and, separately, 8 uploads) per token
``idle_timeout_s``          ``--idle-timeout``    3600 s without a request closes a session or upload
``model_cache_size``        ``--model-cache``     2 SAM 2 models kept built
``max_frame_side``          ``--max-frame-side``  8192 px: widest / tallest frame of any source (8K video)
``max_image_size``          ``--max-image-size``  2048 px: largest ``model.image_size`` (Meta trained at 1024)
``max_frames``              ``--max-frames``      100,000 frames per session (and ``frame_indices`` entries)
``max_objects``             ``--max-objects``     64 objects per session (ids are 1..254 in any case)
``max_passes``              ``--max-passes``      16 passes per tracking job
==========================  ====================  =================================================================

A job tracks at most ``JOB_FRAMES_PER_SESSION_FRAME`` (2) times the session's frames in all its
passes (a forward and a backward pass over the whole video).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any

from ..extras import install_hint

__all__ = [
    "ENV_TOKEN",
    "INSTALL_SERVER",
    "JOB_FRAMES_PER_SESSION_FRAME",
    "ServerLimits",
    "add_server_arguments",
    "limits_from_args",
]

ENV_TOKEN = "SAM2S_SERVER_TOKEN"
"""Environment variable holding the server's token when no ``--token`` / ``--token-file`` is given."""

INSTALL_SERVER = install_hint("server", '"fastapi>=0.110" "uvicorn>=0.29"')
"""How to install the server's packages (FastAPI, uvicorn), for error messages."""

JOB_FRAMES_PER_SESSION_FRAME = 2
"""A job tracks at most this many times the session's frame count, over all its passes."""

_GIB = 2**30
_MAX_OBJECT_ID = 254  # sam2s.session.MAX_OBJECT_ID (not imported: that module imports numpy)


def _limit(default: Any, option: str, unit: str, help: str) -> Any:  # noqa: A002 - argparse's name
    return dataclasses.field(default=default, metadata={"option": option, "unit": unit, "help": help})


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """Every limit of a tracking server (defaults and options: the module docstring).

    Attributes:
        max_upload_bytes: largest upload (frames in all) and largest upload request body, bytes.
        max_token_bytes: most bytes one token's uploads and sessions made from uploads hold together.
        max_sessions_per_token: most open sessions per token (uploads are counted separately).
        idle_timeout_s: seconds without a request after which a session or upload is closed.
        model_cache_size: SAM 2 models kept built (least recently used dropped).
        max_frame_side: largest frame width or height of any frame source, in pixels.
        max_image_size: largest ``model.image_size`` (the model input side), in pixels.
        max_frames: most frames per session (and entries of ``frames.frame_indices``).
        max_objects: most objects per session.
        max_passes: most passes per tracking job.

    Raises:
        ValueError: a limit that is not a positive number (integers for counts and sizes),
            ``max_objects`` over 254, or ``max_token_bytes`` below ``max_upload_bytes``; the
            message names the command-line option.
    """

    max_upload_bytes: int = _limit(8 * _GIB, "--max-upload-gb", "GiB", "largest upload and upload request body")
    max_token_bytes: int = _limit(
        16 * _GIB,
        "--max-token-gb",
        "GiB",
        "quota of one token: its uploads and the frames of its sessions from uploads",
    )
    max_sessions_per_token: int = _limit(8, "--max-sessions", "", "open sessions (and uploads) per token")
    idle_timeout_s: float = _limit(3600.0, "--idle-timeout", "s", "idle time after which a session or upload closes")
    model_cache_size: int = _limit(2, "--model-cache", "", "SAM 2 models kept built")
    max_frame_side: int = _limit(8192, "--max-frame-side", "px", "widest or tallest frame of any frame source")
    max_image_size: int = _limit(2048, "--max-image-size", "px", "largest model.image_size")
    max_frames: int = _limit(100_000, "--max-frames", "", "frames per session and frame_indices entries")
    max_objects: int = _limit(64, "--max-objects", "", f"objects per session, at most {_MAX_OBJECT_ID}")
    max_passes: int = _limit(16, "--max-passes", "", "passes per tracking job")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, option = getattr(self, f.name), f.metadata["option"]
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or (f.type == "int" and not isinstance(value, int)) or not value > 0:
                shown = f"{value / _GIB:g} GiB" if f.metadata["unit"] == "GiB" and number else repr(value)
                kind = "number" if f.type == "float" else "integer"
                raise ValueError(f"{option} ({f.name}) must be a positive {kind}, got {shown} (default {_shown(f)})")
        if math.isinf(self.idle_timeout_s):
            raise ValueError("--idle-timeout (idle_timeout_s) must be finite; give a number of seconds, e.g. 3600")
        if self.max_objects > _MAX_OBJECT_ID:
            raise ValueError(
                f"--max-objects (max_objects) is {self.max_objects} but object ids are 1..{_MAX_OBJECT_ID}: give at "
                f"most {_MAX_OBJECT_ID}"
            )
        if self.max_token_bytes < self.max_upload_bytes:
            raise ValueError(
                f"--max-token-gb ({self.max_token_bytes / _GIB:g} GiB) is below --max-upload-gb "
                f"({self.max_upload_bytes / _GIB:g} GiB), so the largest upload could never fit: raise --max-token-gb"
            )


def _shown(f: dataclasses.Field) -> str:
    """A limit's default as the command line gives it, e.g. ``8 GiB`` or ``8192 px``."""
    value, unit = f.default, f.metadata["unit"]
    if unit == "GiB":
        return f"{value / _GIB:g} GiB"
    return f"{value:,g} {unit}".strip() if isinstance(value, float) else f"{value:,} {unit}".strip()


def _finite(text: str) -> float:
    """argparse type: a finite number (positivity is checked by ``ServerLimits``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _port(text: str) -> int:
    """argparse type: a TCP port number 0..65535."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535 (0: a free one), got {text!r}")
    return value


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the tracking server's options to ``parser`` (``python -m sam2s.serving.server`` and ``sam2s serve``).

    Options: ``--host``, ``--port``, ``--token`` and ``--token-file`` (repeatable), ``--allow-path``
    (repeatable), ``--ssl-certfile``, ``--ssl-keyfile``, ``--ready-file``, ``--parent-pid``, ``--log-level`` and one
    option per :class:`ServerLimits` field (default None: the field's default). The description
    says where the token comes from.
    """
    parser.description = (
        "Run the sam2s tracking server (FastAPI + uvicorn; install with " + INSTALL_SERVER + "). The tokens come "
        f"from --token / --token-file, else ${ENV_TOKEN}, else (loopback only) one is generated and printed on the "
        "ready line. SIGTERM or Ctrl+C stops it gracefully (exit status 0)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=0, help="TCP port; 0 (default) picks a free one")
    parser.add_argument(
        "--token",
        action="append",
        default=None,
        help="an accepted token (repeatable); visible to other users in `ps`: prefer --token-file or $" + ENV_TOKEN,
    )
    parser.add_argument(
        "--token-file",
        action="append",
        default=None,
        metavar="FILE",
        help="a file holding an accepted token, readable only by its owner (chmod 600; repeatable)",
    )
    parser.add_argument(
        "--allow-path", action="append", default=[], help="a folder clients may read files under (repeatable)"
    )
    parser.add_argument("--ssl-certfile", default=None, help="PEM certificate for HTTPS")
    parser.add_argument("--ssl-keyfile", default=None, help="PEM private key for HTTPS")
    parser.add_argument("--ready-file", default=None, help="a new file to write the ready line to")
    parser.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="stop (gracefully) once this process has ended, whatever ended it: the application that started "
        "the server (sam2s.serving.supervise)",
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (warning)")
    limits = parser.add_argument_group("limits", "requests beyond them are refused before anything is allocated")
    for f in dataclasses.fields(ServerLimits):
        option, unit = f.metadata["option"], f.metadata["unit"]
        kind = _finite if f.type == "float" or unit == "GiB" else int
        limits.add_argument(
            option,
            dest=f.name,
            type=kind,
            default=None,
            metavar={"GiB": "GIB", "s": "SECONDS", "px": "PX"}.get(unit, "N"),
            help=f"{f.metadata['help']} (default {_shown(f)})",
        )


def limits_from_args(args: argparse.Namespace) -> ServerLimits:
    """The :class:`ServerLimits` of parsed :func:`add_server_arguments` options (GiB turned into
    bytes; options not given keep their defaults).

    Raises:
        ValueError: a limit that ``ServerLimits`` refuses (the message names the option).
    """
    given: dict[str, Any] = {}
    for f in dataclasses.fields(ServerLimits):
        value = getattr(args, f.name, None)
        if value is not None:
            given[f.name] = int(value * _GIB) if f.metadata["unit"] == "GiB" else value
    return ServerLimits(**given)
