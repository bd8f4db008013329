"""The options of ``sam2s web`` (:func:`addWebArguments`) and the settings they give the controller:
the model (:func:`modelSettings`), the tracking server (:func:`backendFactory`) and a settings store
that reads no file of the user's (:class:`MemorySettingsStore`)."""

from __future__ import annotations

import argparse
import sys

from sam2s.modelspec import ModelSpec, add_model_arguments, spec_error_for_options
from SAM2SSlicerLib.backends import LOCAL_SERVER_NICENESS

from .access import TOKEN_ENV

WEB_MODEL = ModelSpec()
"""``sam2s web``'s model defaults (``--device auto``: the GPU when there is one)."""


class MemorySettingsStore:
    """``controller.SettingsStore`` kept in memory: the web app takes its model and compute
    settings from the command line, never from a file of the user's."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def value(self, key: str) -> str | None:
        return self.values.get(key)

    def setValue(self, key: str, value: str) -> None:
        self.values[key] = value


def addWebArguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``sam2s web`` (used by ``sam2sapp.cli``)."""
    parser.add_argument("video", nargs="?", help="open this video file or image folder at start")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this computer)")
    parser.add_argument("--port", type=int, default=8080, help="port (default %(default)s; 0: a free port)")
    parser.add_argument(
        "--token",
        help=f"access token, needed on any address but loopback (default ${TOKEN_ENV}); open "
        "http://HOST:PORT/?token=TOKEN in the browser. Visible to other users in `ps`: prefer --token-file",
    )
    parser.add_argument(
        "--token-file", metavar="FILE", help="read the access token from this file (chmod 600), instead of --token"
    )
    parser.add_argument(
        "--allow-path",
        action="append",
        default=[],
        metavar="DIR",
        help="folders whose videos the page may open by path (repeatable; default: the current folder)",
    )
    add_model_arguments(parser, WEB_MODEL)  # sam2s.modelspec: one definition of the model options
    parser.add_argument("--server", help="track in this `sam2s serve` server (URL) instead of a local one")
    parser.add_argument(
        "--server-token", help="that server's token (default $SAM2S_SERVER_TOKEN; visible in `ps`: prefer the file)"
    )
    parser.add_argument("--server-token-file", metavar="FILE", help="read that server's token from this file")
    parser.add_argument(
        "--tracking-niceness",
        type=int,
        default=LOCAL_SERVER_NICENESS,
        help="CPU niceness added to the local tracking server (default %(default)s: the page answers first)",
    )
    parser.add_argument(
        "--max-upload-mb", type=int, default=2048, help="largest uploaded video (default %(default)s MB)"
    )


def modelSettings(args: argparse.Namespace):
    """The model settings of the options, checked (``sam2s.spec.ModelSpec.validate``: ValueError)
    before the engine is settled (``ModelSpec.settle``: a cached checkpoint, else the flow
    engine, which the terminal is told)."""

    from SAM2SSlicerLib.settings import ModelSettings

    try:
        spec = ModelSpec.from_arguments(args, WEB_MODEL).validate()
    except ValueError as err:
        raise ValueError(spec_error_for_options(err)) from None
    try:
        settled = spec.settle(auto_engine=args.engine is None)
    except FileNotFoundError as err:
        raise ValueError(str(err)) from None
    if settled.engine != spec.engine:
        print(f"No SAM 2 checkpoint for {spec.config}: tracking with the weight-free 'flow' engine.", file=sys.stderr)
    return ModelSettings(
        configName=settled.config,
        checkpoint=settled.checkpoint or "",
        device=settled.device,
        imageSize=settled.image_size,
        precision=settled.precision,
        memory=settled.memory,
        engine=settled.engine,
    )


def backendFactory(niceness: int):
    """The controller's ``backendFactory``: a ``ServerBackend`` of the server at ``url``, else of a
    local tracking server with ``niceness`` added."""

    def create(url: str | None, token: str):
        from SAM2SSlicerLib.backends import LocalServer, ServerBackend

        if url:
            return ServerBackend(url, token)
        return ServerBackend(localServer=LocalServer(niceness=niceness))

    return create
