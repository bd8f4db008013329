"""``ModelSpec``: what model tracks and how, frozen and torch-free; the one place a model and its
tracker are built.

Every front end derives its model options from it: ``sam2s track`` / ``batch`` / ``demo``
(:func:`add_model_arguments`, :meth:`ModelSpec.from_arguments`), the tracking server's request
model (``sam2s.serving.server.ModelRequest``, which builds through :meth:`ModelSpec.build`), the
batch manifest's columns, the Slicer module's settings (``SAM2SSlicerLib.settings.ModelSettings
.toSpec``) and the web app. Each field's rule is in ``sam2s.spec``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .spec import (
    DEFAULT_CONFIG,
    ENGINES,
    IMAGE_SIZE_STEP,
    MAX_IMAGE_SIZE,
    MEMORY_POLICIES,
    MIN_IMAGE_SIZE,
    check_device,
    check_image_size,
    check_precision,
)

__all__ = ["OPTION_OF_FIELD", "ModelSpec", "add_model_arguments", "spec_error_for_options"]


def _check_choice(value: Any, choices: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {what} {value!r:.40}: use {' or '.join(choices)}")
    return value


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What model tracks and how: the one description every front end derives its options from.

    Attributes:
        engine: :data:`ENGINES` (``flow`` needs no weights; the model fields are then unused).
        config: a config name of ``sam2s.CONFIGS`` (Meta's config stems, ``sam2.1_hiera_t`` ...).
        checkpoint: a ``.pt`` path, a registry name already downloaded, or None: the registry
            checkpoint of ``config`` from the cache (``sam2s.checkpoints.resolve_checkpoint``).
        image_size: model input side in pixels (:func:`check_image_size`), or None: the size
            its checkpoint was trained at (:attr:`input_size`; :meth:`settle` fills it in).
        precision: :data:`PRECISIONS` (:func:`check_precision`). device: :func:`check_device`.
        memory: :data:`MEMORY_POLICIES`; memory_params: its keyword parameters as sorted
            ``(name, value)`` pairs (frozen; ``dict(spec.memory_params)`` gives them back).
    """

    engine: str = "sam2"
    config: str = DEFAULT_CONFIG
    checkpoint: str | None = None
    image_size: int | None = None
    precision: str = "auto"
    device: str = "auto"
    memory: str = "sam2"
    memory_params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        params = self.memory_params
        if isinstance(params, dict):
            object.__setattr__(self, "memory_params", tuple(sorted(params.items())))

    def validate(self) -> ModelSpec:
        """This spec, when every field holds an accepted value (nothing is read or built).

        Raises:
            ValueError: the first bad field; the message starts with its name and gives the rule.
        """
        from .config import CONFIGS, get_config

        def check_config(value: Any) -> None:
            if not isinstance(value, str):
                raise ValueError(f"give a config name such as {DEFAULT_CONFIG}; choose one of {', '.join(CONFIGS)}")
            get_config(value)

        checks = (
            ("engine", lambda v: _check_choice(v, ENGINES, "engine")),
            ("config", check_config),
            ("image_size", lambda v: v is None or check_image_size(v)),
            ("precision", check_precision),
            ("device", check_device),
            ("memory", lambda v: _check_choice(v, MEMORY_POLICIES, "memory policy")),
        )
        for name, check in checks:
            try:
                check(getattr(self, name))
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
        if self.checkpoint is not None and not isinstance(self.checkpoint, str):
            raise ValueError(f"checkpoint: give a file path or a registry name, not {self.checkpoint!r:.40}")
        return self

    @classmethod
    def from_arguments(cls, args: Any, base: ModelSpec | None = None) -> ModelSpec:
        """The spec of parsed :func:`add_model_arguments` options: ``base`` (default ``ModelSpec()``)
        with every option that is not None; ``--engine`` None keeps ``base.engine``."""
        base = base or cls()
        changes = {f: getattr(args, f) for f in OPTION_OF_FIELD if getattr(args, f, None) is not None}
        return base.replace(**changes)

    @property
    def input_size(self) -> int:
        """The model input side in pixels: ``image_size``, or when it is None the size the
        checkpoint was trained at (issue 24: ``sam2s.checkpoints.default_image_size`` of
        ``checkpoint``, else of ``config``: 512 for ``medsam2`` and ``sam2_hiera_s_endo18``,
        found by registry name or file name; 1024 for Meta's checkpoints, ``edgetam`` and any
        other file). Torch-free."""
        if self.image_size is not None:
            return self.image_size
        from .checkpoints import default_image_size

        return default_image_size(self.checkpoint or self.config)

    def replace(self, **changes: Any) -> ModelSpec:
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``memory_params`` as a dict)."""
        values = dataclasses.asdict(self)
        values["memory_params"] = dict(self.memory_params)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelSpec:
        """A spec from :meth:`to_dict`'s output; unknown keys raise ``ValueError`` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown model settings {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**values)

    def settle(self, auto_engine: bool = False) -> ModelSpec:
        """This spec ready to build without the network: a ``sam2`` spec gets its checkpoint as a
        local file (the file given; the cached file of a registry name such as ``medsam2``; or
        the registry checkpoint of ``config`` from the cache, ``sam2s.checkpoints.resolve_checkpoint``)
        and its :attr:`input_size` as ``image_size``; without a checkpoint, ``auto_engine`` gives
        the weight-free ``flow`` spec instead (the caller says so: ``engine`` changed).

        Raises:
            FileNotFoundError: the checkpoint given is neither a file nor a cached registry
                checkpoint, or (without ``auto_engine``) no checkpoint of ``config`` is cached;
                the message says how to get one.
        """
        if self.engine == "flow":
            return self
        from .checkpoints import resolve_checkpoint

        size = self.input_size
        if self.checkpoint:
            try:
                path = resolve_checkpoint(self.checkpoint, allow_download=False)
            except FileNotFoundError as error:  # the message says what was looked for and how to get it
                raise FileNotFoundError(f"--checkpoint {self.checkpoint}: no such file. {error}") from None
            return self.replace(checkpoint=str(path), image_size=size)
        try:
            return self.replace(checkpoint=str(resolve_checkpoint(self.config, allow_download=False)), image_size=size)
        except FileNotFoundError:
            if auto_engine:
                return self.replace(engine="flow")
            raise FileNotFoundError(
                f"No checkpoint for {self.config}: pass --checkpoint PATH or run `sam2s download {self.config}` first."
            ) from None

    def build(self, allow_download: bool = False, **download_options: Any) -> Any:
        """The SAM 2 model of this spec in eval mode (``sam2s.build.build_model``): the one place a
        model is built. ``allow_download``: fetch the registry checkpoint when it is not cached
        (``sam2s.download`` with ``download_options``).

        Raises:
            ValueError: a bad field (:meth:`validate`), or ``engine`` is ``flow`` (no model).
            FileNotFoundError: no such checkpoint file, or the registry one is not downloaded
                (the message says how). RuntimeError: the device is missing.
            sam2s.CheckpointError: the file is not a checkpoint of ``config``.
        """
        self.validate()
        if self.engine != "sam2":
            raise ValueError("engine: the flow engine has no model to build")
        from .build import auto_device, build_model
        from .checkpoints import resolve_checkpoint

        checkpoint = resolve_checkpoint(
            self.checkpoint or self.config, allow_download=allow_download and not self.checkpoint, **download_options
        )
        return build_model(
            self.config, checkpoint, auto_device(self.device), image_size=self.input_size, precision=self.precision
        )

    def tracker(self, frames: Any, model: Any = None) -> Any:
        """A tracking session (``sam2s.Tracker``) over ``frames`` (what ``sam2s.open_frames`` takes):
        ``sam2s.VideoTracker`` of ``model`` (default: :meth:`build`) with this memory policy, or
        ``sam2s.FlowTracker`` for the flow engine. Raises as :meth:`build` and ``open_frames``."""
        self.validate()
        if self.engine == "flow":
            from .flow import FlowTracker

            return FlowTracker(frames)
        from .tracker import VideoTracker

        return VideoTracker(
            model if model is not None else self.build(), frames, memory=self.memory, **dict(self.memory_params)
        )


OPTION_OF_FIELD = {
    "engine": "--engine",
    "config": "--model",
    "checkpoint": "--checkpoint",
    "image_size": "--image-size",
    "precision": "--precision",
    "device": "--device",
    "memory": "--memory",
}
"""The command-line option of each :class:`ModelSpec` field (``sam2s track``, ``batch``, ``demo``);
the batch manifest's columns are the field names, with ``model`` for ``config``."""


def spec_error_for_options(error: ValueError) -> str:
    """``ModelSpec.validate``'s message with the field named as its command-line option
    (``image_size: ...`` -> ``--image-size: ...``)."""
    field, _, rest = str(error).partition(": ")
    return f"{OPTION_OF_FIELD[field]}: {rest}" if field in OPTION_OF_FIELD and rest else str(error)


def add_model_arguments(parser: Any, defaults: ModelSpec | None = None) -> None:
    """Add the :class:`ModelSpec` options (:data:`OPTION_OF_FIELD`) to an ``argparse`` parser, with
    the choices of this module (values are checked by :meth:`ModelSpec.validate`, whose message
    the caller shows with the option's name: ``spec_error_for_options``); ``defaults`` None leaves every default None (the batch:
    the manifest's cell, then its own defaults). ``--engine`` defaults to None (sam2 when a
    checkpoint is available, else flow). Read them back with :meth:`ModelSpec.from_arguments`."""
    d = defaults
    shown = "" if d is None else " (default %(default)s)"
    parser.add_argument("--engine", choices=ENGINES, help="default: sam2 when a checkpoint is available, else flow")
    parser.add_argument("--model", dest="config", default=d and d.config, help=f"model config{shown}")
    parser.add_argument("--checkpoint", default=d and d.checkpoint, help="SAM 2 / 2.1 checkpoint (.pt)")
    parser.add_argument(
        "--image-size",
        type=int,
        default=d and d.image_size,
        help=f"model input size in pixels, a multiple of {IMAGE_SIZE_STEP} from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} "
        "(default: the size the checkpoint was trained at, 1024; 512 for medsam2 and sam2_hiera_s_endo18)",
    )
    parser.add_argument(
        "--precision",
        default=d and d.precision,
        help="auto: bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16 / AMX), else fp32; fp32: Meta's "
        f"reference numerics; or bf16{shown}",
    )
    parser.add_argument("--device", default=d and d.device, help=f"auto, cpu, cuda, cuda:N or mps{shown}")
    parser.add_argument("--memory", choices=MEMORY_POLICIES, default=d and d.memory, help=f"memory policy{shown}")
