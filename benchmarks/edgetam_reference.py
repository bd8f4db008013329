"""EdgeTAM's reference code (PyPI ``edgetam-dimos`` 1.0.1, Meta's code, Apache-2.0) for parity tests and benchmarks.

The reference's import package is also named ``sam2``, like Meta's SAM 2 reference that the other
parity tests use, so it is installed apart (``make env``: ``pip install --no-deps --target
.venv/edgetam-ref edgetam-dimos==1.0.1 timm==1.0.31 huggingface_hub==0.26.5 safetensors==0.4.5``)
and run in a subprocess whose ``sys.path`` starts with that folder (:func:`run_in_reference`).

Three test-only measures make it build and track on a CPU machine without torchvision (issue 24):

* **A torchvision stand-in** (:func:`install_torchvision_standin`): timm imports torchvision, and
  PyPI's torchvision does not import with the local CPU build of torch. The stand-in is a package
  in which every name exists; calling any of them raises and is recorded in :data:`STANDIN_CALLS`,
  which the reference scripts print, so a test proves it was never called.
* **No hub download** (:func:`no_pretrained_download`): the reference's ``TimmBackbone`` calls
  ``timm.create_model(..., pretrained=True)``; the test forces ``pretrained=False`` (the weights are
  loaded from the test's state dict afterwards anyway).
* **One object at a time**: with 2 objects the reference fails in ``perceiver.py`` ``forward_2d``
  (``.view`` after ``.expand``); parity is compared per object.

It also has the CPU bug of Meta's reference that ``meta_reference.patch_reference_bf16_bug``
works around (memory stored in bf16 meets float32 weights): :func:`patch_reference_bf16_bug`
upcasts the memory to the queries' dtype, which equals the promotion the reference's own
``torch.cat`` performs when object pointers are present (exact).
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import json
import os
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("SAM2S_EDGETAM_REFERENCE", ROOT / ".venv" / "edgetam-ref"))
"""Where ``make env`` installs the reference (override with ``SAM2S_EDGETAM_REFERENCE``)."""

STANDIN_CALLS: list[str] = []
"""Names of torchvision stand-in objects that were called (each call also raises)."""

__all__ = [
    "REFERENCE_DIR",
    "STANDIN_CALLS",
    "install_torchvision_standin",
    "patch_reference_bf16_bug",
    "no_pretrained_download",
    "reference_available",
    "run_in_reference",
]


class _Stub:
    """Any torchvision name: attribute access gives more stubs, a call raises (and is recorded)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *args, **kwargs):
        STANDIN_CALLS.append(self._name)
        raise RuntimeError(f"the torchvision stand-in was called: {self._name}")

    def __getattr__(self, item: str):
        if item.startswith("__"):
            raise AttributeError(item)
        return _Stub(f"{self._name}.{item}")

    def __mro_entries__(self, bases):  # a stub used as a base class (class X(torchvision.Y))
        return (object,)


class _StandinModule(types.ModuleType):
    def __getattr__(self, item: str):
        if item.startswith("__"):
            raise AttributeError(item)
        return _Stub(f"{self.__name__}.{item}")


class _StandinFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandinModule(spec.name)
        module.__path__ = []
        module.__version__ = "0.0.0+standin"
        return module

    def exec_module(self, module) -> None:
        pass


def install_torchvision_standin() -> None:
    """Make ``import torchvision`` (and any submodule) give the stand-in in this process."""
    if not any(isinstance(finder, _StandinFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _StandinFinder())


def no_pretrained_download() -> None:
    """Make the reference's ``TimmBackbone`` build timm models with ``pretrained=False``."""
    import sam2.modeling.backbones.timm as timm_backbone

    create = timm_backbone.create_model
    timm_backbone.create_model = lambda *args, **kwargs: create(*args, **{**kwargs, "pretrained": False})


def patch_reference_bf16_bug() -> None:
    """Upcast ``memory`` / ``memory_pos`` to the query dtype in the reference ``MemoryAttention``
    (EdgeTAM's ``forward`` has the extra ``num_spatial_mem`` argument, passed through)."""
    from sam2.modeling.memory_attention import MemoryAttention

    if getattr(MemoryAttention.forward, "_sam2s_patched", False):
        return
    original = MemoryAttention.forward

    @functools.wraps(original)
    def forward(self, curr, memory, curr_pos=None, memory_pos=None, *args, **kwargs):
        dtype = curr[0].dtype if isinstance(curr, list) else curr.dtype
        return original(self, curr, memory.to(dtype), curr_pos, memory_pos.to(dtype), *args, **kwargs)

    forward._sam2s_patched = True
    MemoryAttention.forward = forward


def reference_available() -> bool:
    """True when the reference is installed in :data:`REFERENCE_DIR`."""
    return (REFERENCE_DIR / "sam2" / "configs" / "edgetam.yaml").is_file() and (REFERENCE_DIR / "timm").is_dir()


def run_in_reference(script: str, *args: str, timeout: float = 900.0) -> dict:
    """Run ``script`` (Python source) in a subprocess that imports the EdgeTAM reference as ``sam2``
    (``sys.path`` starts with :data:`REFERENCE_DIR`), with the torchvision stand-in installed and
    ``pretrained=False`` forced. ``args`` become ``sys.argv[1:]``. The script prints one JSON
    object as its last line; it is returned with ``"standin_calls"`` (must be empty) added.

    Raises:
        RuntimeError: the reference is not installed (``make env`` installs it), or the script
            failed (its standard error is in the message).
    """
    if not reference_available():
        raise RuntimeError(f"EdgeTAM's reference is not installed in {REFERENCE_DIR}: run `make env`.")
    preamble = (
        "import sys, json\n"
        f"sys.path[:0] = [{str(REFERENCE_DIR)!r}, {str(Path(__file__).parent)!r}]\n"
        "import edgetam_reference as _ref\n"
        "_ref.install_torchvision_standin()\n"
        "_ref.no_pretrained_download()\n"
        "_ref.patch_reference_bf16_bug()\n"
        "import atexit\n"
        "_results = {}\n"
        "def _emit():\n"
        "    print(json.dumps({**_results, 'standin_calls': _ref.STANDIN_CALLS}))\n"
        "atexit.register(_emit)\n"
    )
    env = dict(os.environ, PYTHONPATH="")  # no editable path to Meta's sam2 ahead of the reference
    process = subprocess.run(
        [sys.executable, "-c", preamble + script, *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    if process.returncode != 0:
        raise RuntimeError(f"the EdgeTAM reference script failed:\n{process.stderr[-4000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])
