"""The module test's run on Slicer's extension factory, modelled outside Slicer (issue 23, acceptance 6).

Slicer's extension build machines run the module test (``py_SAM2SSlicer``) inside a Slicer that has
only what Slicer bundles in its Python (numpy, pillow, packaging, ...) and none of what the
extension installs on first use (PyAV, OpenCV, tqdm, h11, FastAPI, uvicorn) nor PyTorch (the
PyTorch extension is not installed there). ``make factory-test`` models that machine with a
virtual environment holding slicer-core (Slicer's real MRML core, standing for the application),
numpy and pillow only, and runs in it what ``SAM2SSlicerTest.runTest`` runs outside Qt:

* the imports of the module file (``SAM2SSlicer.py``'s library imports);
* ``moduletest.panelFlow`` (import a generated clip, New segmentation, keys) on a headless logic;
* the tracking part's skip decision (``moduletest.trackingAvailable`` is False here).

It fails when torch, PyAV or any package the extension installs on first use is importable in this
environment (then it models nothing), and prints what it ran.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

MODULE = Path(__file__).resolve().parents[2] / "SAM2SSlicer"
INSTALLED_ON_FIRST_USE = ("torch", "av", "cv2", "tqdm", "h11", "fastapi", "uvicorn")


def main() -> int:
    present = [name for name in INSTALLED_ON_FIRST_USE if importlib.util.find_spec(name) is not None]
    if present:
        print(f"this environment has {present}: it does not model Slicer's extension factory", file=sys.stderr)
        return 2
    sys.path.insert(0, str(MODULE))
    # SAM2SSlicer.py's own library imports (the rest of that file is the Qt shell)
    from SAM2SSlicerLib import ModelSettings  # noqa: F401
    from SAM2SSlicerLib.backends import InProcessBackend
    from SAM2SSlicerLib.controller import DOCUMENTATION_URL, SCOPES, SHORTCUTS, JsonSettingsStore, SAM2SController  # noqa: F401
    from SAM2SSlicerLib.headless import createTrackingLogic
    from SAM2SSlicerLib.logic import SAM2STrackingLogic, TrackingBusyError  # noqa: F401
    from SAM2SSlicerLib.moduletest import panelFlow, trackingAvailable
    from SAM2SSlicerLib.videoimport import SOURCE, frameRate  # noqa: F401

    checks = []

    def check(condition: bool, what: str) -> None:
        if not condition:
            raise AssertionError(what)
        checks.append(what)

    store = JsonSettingsStore(Path(tempfile.mkdtemp()) / "settings.json")
    controller = SAM2SController(createTrackingLogic(), store, backendFactory=lambda url, token: InProcessBackend())
    panelFlow(controller, controller.logic.scene, check, step=lambda text: None)
    skipped = not trackingAvailable()
    loaded = sorted(name for name in INSTALLED_ON_FIRST_USE if name in sys.modules)
    print(json.dumps({"checks": len(checks), "trackingSkipped": skipped, "loadedInstalledOnFirstUse": loaded}))
    return 0 if skipped and not loaded else 1


if __name__ == "__main__":
    sys.exit(main())
