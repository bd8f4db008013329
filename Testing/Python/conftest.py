"""Shared test set-up: ``import sam2s`` from the source tree, the shared data path, and a model
with random (but informative) weights that needs no reference package."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from randomweights import ROOT, SHARED_DATA, perturb_, random_model  # noqa: E402, F401 - re-exported for tests

# Outputs record the date of their run (SAM2SSlicerLib.provenance.runDate); tests that compare a
# rerun's files byte for byte (kills at every step, reruns with --overwrite, concurrent runs) fix it
# as reproducible builds do. test_provenance checks the date without it.
os.environ.setdefault("SOURCE_DATE_EPOCH", "1798761600")  # 2027-01-01T00:00:00+00:00


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data/endoscapes_v4`` (licensed data read in place, never copied into the repo)."""
    if not (SHARED_DATA / "frames").is_dir():
        pytest.skip("../shared/data/endoscapes_v4 is not available")
    return SHARED_DATA


# ------------------------------------------------------------------------------------------ fuzzing
from fuzzing import EXAMPLES, FUZZ_EXAMPLES, register_profiles  # noqa: E402

register_profiles()  # before the hypothesis plugin applies --hypothesis-profile


def _short_properties(config) -> list[str]:
    """Under ``--hypothesis-profile=fuzz``: the properties that ran fewer than ``FUZZ_EXAMPLES``."""
    profile = config.getoption("hypothesis_profile", None) or "default"
    return [k for k, n in sorted(EXAMPLES.items()) if n < FUZZ_EXAMPLES] if profile == "fuzz" else []


def pytest_sessionfinish(session, exitstatus) -> None:
    """``make fuzz`` fails when a property ran fewer than ``FUZZ_EXAMPLES`` examples."""
    if _short_properties(session.config) and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """The examples each fuzz property ran (``fuzzing.counted``)."""
    if not EXAMPLES:
        return
    profile = config.getoption("hypothesis_profile", None) or "default"
    terminalreporter.section(f"fuzz examples (hypothesis profile {profile})")
    for key, count in sorted(EXAMPLES.items()):
        terminalreporter.write_line(f"{count:>8,}  {key}")
    terminalreporter.write_line(f"{sum(EXAMPLES.values()):>8,}  in all, {len(EXAMPLES)} properties")
    short = _short_properties(config)
    if short:
        terminalreporter.write_line(f"FAILED: fewer than {FUZZ_EXAMPLES:,} examples: {', '.join(short)}", red=True)
