"""Random but informative weights for tests and benchmarks, and the paths they use (no pytest here,
so that benchmarks can import it)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "SAM2SSlicer"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "benchmarks"))  # meta_reference: the random-weight recipe (no pytest)

# one recipe for tests and benchmarks; SHARED_DATA = ../shared/data/endoscapes_v4
from meta_reference import SHARED_DATA, perturb_, random_model  # noqa: E402, F401
