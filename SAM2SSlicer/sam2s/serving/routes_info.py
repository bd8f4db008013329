"""The tracking server's information endpoints: ``GET`` / ``HEAD /health`` (liveness, no token)
and ``GET /version`` (versions, capabilities and every limit). Part of ``sam2s.serving.server``."""

from __future__ import annotations

import dataclasses

from fastapi import FastAPI, Request

from .. import __version__
from ..spec import PRECISIONS
from . import protocol
from .options import JOB_FRAMES_PER_SESSION_FRAME
from .routes_common import server_state
from .server_bodies import MAX_PROMPT_POINTS
from .server_guard import request_body_limit

__all__ = ["add_routes"]


def add_routes(app: FastAPI) -> None:
    """Add the endpoints of this module to ``app`` (``create_app``)."""
    app.add_api_route("/health", health, methods=["GET", "HEAD"])
    app.add_api_route("/version", version, methods=["GET"])


async def health() -> dict:  # on the event loop: answers even while every worker thread is busy
    """Liveness, without a token: ``{"status": "ok"}``."""
    return {"status": "ok"}


def version(request: Request) -> dict:
    """Versions and capabilities; answered whatever the client's protocol version."""
    import torch

    state = server_state(request)
    return {
        "protocol": protocol.PROTOCOL_VERSION,
        "sam2s": __version__,
        "torch": torch.__version__,
        "devices": _devices(),
        "precisions": list(PRECISIONS),
        "engines": ["sam2", "flow"],
        **dataclasses.asdict(state.limits),
        "max_job_frames_per_session_frame": JOB_FRAMES_PER_SESSION_FRAME,
        "max_prompt_points": MAX_PROMPT_POINTS,
        "max_request_bytes": request_body_limit(state.limits),
        "server_paths": bool(state.roots),
    }


def _devices() -> list[str]:
    """The devices a session may name: ``cpu``, ``cuda:N`` of each GPU, ``mps`` when available."""
    import torch

    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        devices.append("mps")
    return devices
