"""Shared test set-up: ``import sam2s`` from the source tree, the shared data path, and a model
with random (but informative) weights that needs no reference package."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from randomweights import ROOT, SHARED_DATA, perturb_, random_model  # noqa: E402, F401 - re-exported for tests


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data/endoscapes_v4`` (licensed data read in place, never copied into the repo)."""
    if not (SHARED_DATA / "frames").is_dir():
        pytest.skip("../shared/data/endoscapes_v4 is not available")
    return SHARED_DATA
