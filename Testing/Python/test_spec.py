"""``sam2s.spec``: ``precision`` and ``image_size`` are checked in one place (issue 22, acceptance 4):
the same bad value given to the command line, the tracking server, a batch manifest, the web app's
options and the Slicer module's settings gets the same message."""

from __future__ import annotations

import json
import re

import pytest
from sam2s.spec import check_image_size, check_precision
from sam2sapp import cli
from sam2sapp.batch import BatchError, load_manifest
from SAM2SSlicerLib.settings import ModelSettings

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from sam2s.serving import protocol  # noqa: E402
from sam2s.serving.server import create_app  # noqa: E402

BAD = {"precision": "fp16", "image_size": 1000}


def _message(field: str) -> str:
    check = check_precision if field == "precision" else check_image_size
    with pytest.raises(ValueError) as caught:
        check(BAD[field])
    return str(caught.value)


@pytest.mark.parametrize("field", sorted(BAD))
def test_one_message_in_every_front_end(field, tmp_path, capsys):
    message = _message(field)
    option = "--" + field.replace("_", "-")
    (tmp_path / "v.mp4").write_bytes(b"")
    (tmp_path / "p.json").write_text("{}")

    for argv in (
        ["track", str(tmp_path / "v.mp4"), "--prompts", str(tmp_path / "p.json"), "--png-dir", str(tmp_path / "o")],
        ["batch", str(tmp_path / "m.csv")],
        ["web"],
    ):
        code = cli.main([*argv, option, str(BAD[field])])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], (argv, err)

    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps([{"video": "v.mp4", "prompts": "p.json", "output_dir": "out", field: BAD[field]}]))
    with pytest.raises(BatchError, match=re.escape(message)):
        load_manifest(manifest)

    settings = ModelSettings(**{"precision" if field == "precision" else "imageSize": BAD[field]})
    with pytest.raises(ValueError, match=re.escape(message)):
        settings.validate()

    client = TestClient(create_app(["t" * 32]))
    body = {"frames": {"shm": "x", "shape": [1, 8, 8, 3]}, "model": {"config": "sam2.1_hiera_t", field: BAD[field]}}
    headers = {"Authorization": "Bearer " + "t" * 32, protocol.PROTOCOL_HEADER: str(protocol.PROTOCOL_VERSION)}
    answer = client.post("/sessions", json=body, headers=headers)
    assert answer.status_code == 422 and message in answer.json()["detail"], answer.json()
