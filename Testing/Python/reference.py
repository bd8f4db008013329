"""Meta's reference SAM 2 (PyPI ``sam2==1.1.0``) for parity tests: build it, give it random
weights, and patch its known CPU bug. Tests import this only after ``pytest.importorskip("sam2")``.

The code lives in ``benchmarks/meta_reference.py`` (benchmarks must not import the test suite;
tests may import benchmarks); this module re-exports it under its historical names.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from meta_reference import (  # noqa: E402
    SHARED_DATA,
    build_reference,
    build_reference_uninitialised,
    config_path,
    patch_reference_bf16_bug,
    perturb_,
)

__all__ = [
    "SHARED_DATA",
    "build_reference",
    "build_reference_uninitialised",
    "config_path",
    "patch_reference_bf16_bug",
    "perturb_",
]
