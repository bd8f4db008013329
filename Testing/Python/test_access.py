"""``sam2s.serving.access``: the ``--allow-path`` rule on every frame file read (issue 21, item 4) and
token files (item 5), shared by the tracking server and the web app."""

from __future__ import annotations

import os

import pytest
from sam2s.serving.access import PathNotAllowedError, TokenFileError, check_readable, read_token_file, real_roots


def test_a_folder_is_readable_only_when_every_frame_image_is(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "00000.png").write_bytes(b"x")
    allowed = tmp_path / "allowed"
    clip = allowed / "clip"
    clip.mkdir(parents=True)
    (clip / "00000.png").write_bytes(b"x")
    roots = real_roots([allowed])
    assert check_readable(clip, roots) == os.path.realpath(clip)
    (clip / ".hidden.png").symlink_to(outside / "00000.png")  # never read as a frame
    (clip / "notes.txt").symlink_to(outside / "00000.png")  # not an image: never read
    assert check_readable(clip, roots) == os.path.realpath(clip)
    (clip / "00001.PNG").symlink_to(outside / "00000.png")
    with pytest.raises(PathNotAllowedError, match=r"its image 00001\.PNG is a link to .*outside"):
        check_readable(clip, roots, "frames.path")
    (allowed / "away").symlink_to(outside)
    with pytest.raises(PathNotAllowedError, match="outside the folders"):
        check_readable(allowed / "away", roots)
    with pytest.raises(PathNotAllowedError, match="allowed: none"):
        check_readable(clip, [])


def test_token_files(tmp_path):
    token = tmp_path / "token"
    token.write_text("  s3cr3t-T0ken_abc \n")
    token.chmod(0o600)
    assert read_token_file(token) == "s3cr3t-T0ken_abc"
    token.chmod(0o640)
    with pytest.raises(TokenFileError, match=f"mode 640.*chmod 600 {token}"):
        read_token_file(token)
    token.chmod(0o600)
    for text in ("", "two\nlines", "with space"):
        token.write_text(text)
        with pytest.raises(TokenFileError, match="one token of printable ASCII"):
            read_token_file(token)
    with pytest.raises(TokenFileError, match="cannot read it"):
        read_token_file(tmp_path / "missing", "--server-token-file")
