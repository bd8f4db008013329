"""The one-way layers (README "Developer notes"), checked with import-linter's contracts of
``pyproject.toml``: the applications ``sam2sapp`` use the Slicer library ``SAM2SSlicerLib``, which
uses the engine ``sam2s``, never the reverse; the engine imports nothing of Slicer; FastAPI /
uvicorn only in ``sam2s.serving.server`` (never in the web app, which uses the path-access rule of
``sam2s.serving.access``, nor in the Slicer library); no Qt outside the Qt shell; and no package has
import cycles."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


def test_import_linter_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "import-linter is not installed (pip install import-linter)"
    r = subprocess.run(
        [lint, str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT / "SAM2SSlicer",  # where sam2s and SAM2SSlicerLib are importable
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "Contracts: 6 kept, 0 broken." in r.stdout
    for contract in (
        "the applications use the Slicer library, which uses the engine, never the reverse",
        "HTTP serving (FastAPI, uvicorn) only in the tracking server",
        "never the FastAPI server module",
    ):
        assert contract in " ".join(r.stdout.split()), r.stdout  # the contract exists (and was kept)
    analyzed = int(re.search(r"Analyzed (\d+) files", r.stdout).group(1))
    assert analyzed >= 60, r.stdout  # the three packages were found, not an empty graph


@pytest.mark.slow  # imports every benchmark in a fresh interpreter (~7 s): make test, not make test-fast
def test_benchmarks_run_without_pytest():
    """Benchmarks are not tests: they import no pytest (nor the suite's conftest)."""
    for bench in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        code = (
            "import runpy, sys; sys.modules['pytest'] = None; sys.modules['conftest'] = None; "
            f"sys.argv = [{bench.name!r}, '--help']; runpy.run_path({str(bench)!r}, run_name='__main__')"
        )
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "usage:" in r.stdout, (bench.name, r.stderr[-2000:])
