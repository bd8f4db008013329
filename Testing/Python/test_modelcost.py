"""The model choice shows its cost (issue 24, item 4): published accuracy and the speed measured on
this computer, cached per CPU (``sam2s.modelcost``), in ``sam2s models``, in the Slicer module's
model list (``SAM2SSlicerLib.settings.modelDescription``) and in the web app."""

from __future__ import annotations

import json

from sam2s import modelcost, speedcheck
from sam2sapp import cli
from SAM2SSlicerLib.settings import modelDescription


def test_a_short_timing_is_cached_per_cpu_and_shown(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAM2S_CACHE_DIR", str(tmp_path))
    assert modelcost.measured_seconds("edgetam", 256, "fp32") is None
    assert "not measured yet" in modelcost.cost_text("edgetam", 256, "fp32")
    seconds = speedcheck.measure("edgetam", 256, "fp32", frames=3)
    assert 0 < seconds < 60
    assert modelcost.measured_seconds("edgetam", 256, "fp32") == round(seconds, 4)
    assert modelcost.measured_seconds("edgetam", 512, "fp32") is None  # another size: its own figure
    assert f"{seconds:.2f} s/frame here at 256 px (fp32, cpu)" == modelcost.cost_text("edgetam", 256, "fp32")
    # A figure measured on another CPU is never shown for this one.
    data = json.loads(modelcost.speed_file().read_text())
    ((key, entry),) = data.items()
    assert key.startswith("edgetam@256/fp32/cpu/")
    modelcost.speed_file().write_text(json.dumps({key.replace("/cpu/", "/cpu/other "): entry}))
    assert modelcost.measured_seconds("edgetam", 256, "fp32") is None
    modelcost.record("edgetam", 256, "fp32", "cpu", seconds, 2)
    # sam2s models: each config's published accuracy and its speed here
    assert cli.main(["models", "--image-size", "256", "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    table = out.split("published accuracy", 1)[1].splitlines()  # the model table, after the checkpoints
    line = next(x for x in table if x.startswith("edgetam "))
    assert "SA-V test J&F 71.7" in line and "DAVIS 2017 87.7" in line and f"{seconds:.2f} s/frame here" in line
    tiny = next(x for x in table if x.startswith("sam2.1_hiera_t "))
    assert "SA-V test J&F 76.5" in tiny and "not measured yet" in tiny
    # the Slicer module's model list (tooltips) and the web app say the same
    text = modelDescription("edgetam", 256, "fp32", "auto")
    assert text.startswith("edgetam: SA-V test J&F 71.7") and f"{seconds:.2f} s/frame here" in text


def test_published_accuracy_covers_every_config():
    from sam2s.config import CONFIGS

    assert set(modelcost.PUBLISHED_ACCURACY) == set(CONFIGS)
    assert modelcost.accuracy_text("sam2.1_hiera_l") == "SA-V test J&F 79.5, MOSE 74.6"
    assert modelcost.accuracy_text("unknown") == "no published accuracy"


def test_a_models_first_use_is_its_timing(tmp_path, monkeypatch):
    """A propagation of 3 frames or more records the model's median seconds per tracked frame (the
    prompted frame excluded), under the precision it ran at; "auto" finds it."""
    import numpy as np
    import sam2s
    from sam2s.build import auto_precision

    monkeypatch.setenv("SAM2S_CACHE_DIR", str(tmp_path))
    precision = auto_precision("cpu")
    model = sam2s.build_model("edgetam", image_size=256, precision=precision)
    video = np.random.default_rng(0).integers(0, 256, (5, 96, 128, 3), dtype=np.uint8)
    tracker = sam2s.VideoTracker(model, video)
    tracker.add_points(0, 1, [[60.0, 40.0]], [1])
    assert len(list(tracker.propagate(0, 1))) == 2  # too short to time: nothing recorded
    assert modelcost.measured_seconds("edgetam", 256, "auto") is None
    assert len(list(tracker.propagate())) == 5
    seconds = modelcost.measured_seconds("edgetam", 256, "auto")
    assert seconds is not None and seconds > 0
    assert modelcost.measured_seconds("edgetam", 256, precision) == seconds
    assert modelcost.measured_seconds("edgetam", 512, "auto") is None
