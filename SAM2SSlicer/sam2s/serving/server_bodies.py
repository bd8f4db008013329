"""The JSON request bodies of the tracking server, as strict pydantic models: unknown fields are
refused, and ints, bools and strings are not converted from other types. Part of
``sam2s.serving.server`` (which re-exports them; needs pydantic)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from ..session import MAX_OBJECT_ID
from ..spec import check_image_size, check_precision

__all__ = [
    "MAX_PROMPT_POINTS",
    "BoxRequest",
    "FramesSpec",
    "JobRequest",
    "ModelRequest",
    "PointsRequest",
    "SessionRequest",
    "UploadRequest",
]

MAX_PROMPT_POINTS = 1024
"""Most clicks in one points or box request."""


SInt = Annotated[int, Strict()]
SBool = Annotated[bool, Strict()]
SStr = Annotated[str, Strict()]
SFloat = Annotated[float, Strict()]  # strict floats accept JSON integers too


class _Body(BaseModel):
    """Request bodies: unknown fields refused; ints, bools and strings not converted from other types."""

    model_config = ConfigDict(extra="forbid")


class FramesSpec(_Body):
    """Where a session's frames come from: exactly one of ``path``, ``shm``, ``upload``.

    Attributes:
        path: a video file or image folder on the server (absolute, under an allowed root).
        frame_indices: with ``path``: the frames to use, as indices of the file's frames.
        size: with ``path``: ``[W, H]`` in pixels to resize the frames to (OpenCV INTER_AREA).
        shm: the name of a ``multiprocessing.shared_memory`` block of the client (same machine)
            holding a C-contiguous ``(T, H, W, 3)`` uint8 RGB array; used without copying, never
            unlinked by the server (closed with the session).
        shape: with ``shm``: ``[T, H, W, 3]``.
        upload: the id of a complete upload (``POST /uploads``); the session takes its frames.
    """

    path: Optional[SStr] = None  # noqa: UP045 (pydantic evaluates annotations, also on Python 3.9)
    frame_indices: Optional[list[SInt]] = None  # noqa: UP045
    size: Optional[tuple[SInt, SInt]] = None  # noqa: UP045
    shm: Optional[SStr] = None  # noqa: UP045
    shape: Optional[tuple[SInt, SInt, SInt, SInt]] = None  # noqa: UP045
    upload: Optional[SStr] = None  # noqa: UP045

    @model_validator(mode="after")
    def _one_source(self) -> FramesSpec:
        given = [k for k in ("path", "shm", "upload") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f'give exactly one of "path", "shm", "upload" (got {given or "none"})')
        if self.path is None and (self.frame_indices is not None or self.size is not None):
            raise ValueError('"frame_indices" and "size" go only with "path"')
        if self.size is not None and min(self.size) <= 0:
            raise ValueError(f'"size" must be two positive integers [W, H], got {list(self.size)}')
        if self.shm is not None:
            if self.shape is None or self.shape[3] != 3 or min(self.shape) <= 0:
                raise ValueError(f'"shm" needs "shape": [T, H, W, 3] with T, H, W >= 1 (got {self.shape})')
        elif self.shape is not None:
            raise ValueError('"shape" goes only with "shm"')
        return self


class ModelRequest(_Body):
    """The tracker of a session: the request form of ``sam2s.spec.ModelSpec`` (its checks; ``None``
    precision and ``params`` are protocol details).

    Attributes:
        engine: ``"sam2"`` (``sam2s.VideoTracker``) or ``"flow"`` (``sam2s.FlowTracker``, no model).
        config: SAM 2 config name (``sam2s.CONFIGS``), e.g. ``"sam2.1_hiera_t"``; needed for sam2.
        checkpoint: a checkpoint file on the server (absolute, under an allowed root), a registry
            name (``sam2s.checkpoints.REGISTRY``) in the engine's cache, or None: the official
            checkpoint of ``config`` from the cache (never downloaded by the server).
        image_size: model input side in pixels (``sam2s.spec.check_image_size``: a multiple of 32
            from 64 to 4096), and at most the server's ``max_image_size``; None (left out): the
            size the checkpoint was trained at (``input_size``; 1024 before issue 24 made it
            optional, and still for Meta's checkpoints and EdgeTAM).
        device: ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
        precision: ``"auto"`` (``sam2s.build.auto_precision`` of the device: bf16 on CUDA and on
            CPUs with native bf16, else fp32), ``"fp32"`` or ``"bf16"`` (``sam2s.build_model``),
            or None (left out): what protocol-1 servers did before the field existed, bf16
            (autocast) on CUDA and fp32 elsewhere. Added within protocol 1 as an optional field:
            servers that take it list ``"precisions"`` in ``GET /version``; clients send it only
            to those (older servers refuse unknown fields).
        params: keyword parameters of ``FlowTracker`` (flow engine only).
    """

    engine: Literal["sam2", "flow"] = "sam2"
    config: Optional[SStr] = None  # noqa: UP045
    checkpoint: Optional[SStr] = None  # noqa: UP045
    image_size: Optional[SInt] = None  # noqa: UP045
    device: SStr = "auto"
    precision: Optional[SStr] = None  # noqa: UP045
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, value: int | None) -> int | None:
        return None if value is None else check_image_size(value)  # sam2s.spec: the one rule of every front end

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str | None) -> str | None:
        return None if value is None else check_precision(value)

    @property
    def input_size(self) -> int:
        """The model input side in pixels: ``image_size``, else the checkpoint's training size
        (``sam2s.modelspec.ModelSpec.input_size``, the one rule)."""
        from ..modelspec import ModelSpec

        return ModelSpec(config=self.config or "", checkpoint=self.checkpoint, image_size=self.image_size).input_size

    @model_validator(mode="after")
    def _engine_fields(self) -> ModelRequest:
        if self.engine == "sam2" and not self.config:
            raise ValueError('the sam2 engine needs "config", a model config name such as "sam2.1_hiera_t"')
        if self.engine == "sam2" and self.params:
            raise ValueError('"params" are FlowTracker parameters (flow engine); for sam2 use "memory_params"')
        return self


class SessionRequest(_Body):
    """``POST /sessions``: ``{"frames": FramesSpec, "model": ModelRequest, "memory": "sam2" | "divemem",
    "memory_params": {...}}`` (memory: the SAM 2 memory policy and its ``DiveMem`` parameters)."""

    frames: FramesSpec
    model: ModelRequest
    memory: Literal["sam2", "divemem"] = "sam2"
    memory_params: dict[str, Any] = Field(default_factory=dict)


class UploadRequest(_Body):
    """``POST /uploads``: optionally the final ``shape`` ``[T, H, W, 3]`` (preallocated; chunks may
    then be re-sent)."""

    shape: Optional[tuple[SInt, SInt, SInt, SInt]] = None  # noqa: UP045


class PointsRequest(_Body):
    """Clicks: ``frame`` index, ``points`` ``[[x, y], ...]`` pixels (x right, y down), ``labels``
    1 / 0, ``clear_old_points``, and ``logits`` (answer float32 logits instead of a bool mask)."""

    frame: SInt
    points: list[list[SFloat]] = Field(max_length=MAX_PROMPT_POINTS)
    labels: list[SInt] = Field(max_length=MAX_PROMPT_POINTS)
    clear_old_points: SBool = True
    logits: SBool = False


class BoxRequest(_Body):
    """A box ``[x0, y0, x1, y1]`` pixels on ``frame``, optional clicks, and ``logits`` as above."""

    frame: SInt
    box: list[SFloat]
    points: Optional[list[list[SFloat]]] = Field(None, max_length=MAX_PROMPT_POINTS)  # noqa: UP045
    labels: Optional[list[SInt]] = Field(None, max_length=MAX_PROMPT_POINTS)  # noqa: UP045
    logits: SBool = False


class JobRequest(_Body):
    """``POST /sessions/{sid}/jobs``: ``passes`` ``[[start, end, reverse], ...]`` (start / end: frame
    indices, both included, or null for the engine's default), each one ``propagate`` call in
    order (at most ``max_passes``); ``obj_ids`` to track (null: all); ``logits``: keep float32
    logits instead of masks."""

    passes: list[tuple[Optional[SInt], Optional[SInt], SBool]] = Field(min_length=1)  # noqa: UP045
    obj_ids: Optional[list[SInt]] = Field(None, max_length=MAX_OBJECT_ID)  # noqa: UP045
    logits: SBool = False
