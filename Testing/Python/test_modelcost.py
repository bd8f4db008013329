"""The model choice shows its cost (issue 24, item 4): published accuracy and the speed measured on
this computer, cached per CPU (``sam2s.modelcost``), in ``sam2s models``, in the Slicer module's
model list (``SAM2SSlicerLib.settings.modelDescription``) and in the web app."""

from __future__ import annotations

import json

from sam2s import modelcost
from sam2sapp import cli
from SAM2SSlicerLib.settings import modelDescription


def test_a_short_timing_is_cached_per_cpu_and_shown(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAM2S_CACHE_DIR", str(tmp_path))
    assert modelcost.measured_seconds("edgetam", 256, "fp32") is None
    assert "not measured yet" in modelcost.cost_text("edgetam", 256, "fp32")
    seconds = modelcost.measure("edgetam", 256, "fp32", frames=3)
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
