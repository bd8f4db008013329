"""Who may read what: the ``--allow-path`` rule and token files, shared by the tracking server
(``sam2s serve``) and the web app (``sam2s web``). Standard library only (no FastAPI).

The rule (:func:`check_readable`): a path given by a client is read only when its real path
(``os.path.realpath``: symbolic links and ``..`` resolved) lies under one of the allowed roots,
and, for an image folder, when every frame image the folder would be read from
(``sam2s.frames.frame_image_names``: the very files ``ImageFolderFrames`` opens) does too. A folder
inside a root whose images are symbolic links to files elsewhere is refused, as is a link to a
folder outside. The check runs on the files the reader will open; a local user who can swap
files in an allowed folder between the check and the read could still redirect a read, so allow
only folders that other users cannot write to.

Who may connect: on a non-loopback address (:func:`is_loopback`) both need a token of at least
``MIN_REMOTE_TOKEN_LENGTH`` characters.

Tokens (:func:`read_token_file`): a token given on a command line is visible to every user of
the machine in ``ps``; ``--token-file`` reads it from a file that only its owner can read.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import sys
from collections.abc import Sequence

from .options import ENV_TOKEN

__all__ = [
    "MIN_REMOTE_TOKEN_LENGTH",
    "PathNotAllowedError",
    "TokenFileError",
    "check_readable",
    "is_loopback",
    "is_under",
    "read_token_file",
    "real_roots",
    "server_token",
]

MIN_REMOTE_TOKEN_LENGTH = 32
"""Shortest token the tracking server and the web app accept on a non-loopback address
(``secrets.token_urlsafe(32)`` gives 43 characters)."""


class PathNotAllowedError(PermissionError):
    """A path, or a frame image of a folder, whose real path lies outside the allowed roots; the
    message names the file and the fix."""


class TokenFileError(ValueError):
    """A token file that is missing, unreadable, empty, or readable by other users (POSIX)."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (``127.0.0.0/8``, ``::1``, with or without
    brackets); False for any other name or address (``0.0.0.0`` binds every interface)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def real_roots(paths: Sequence[str | os.PathLike]) -> list[str]:
    """``os.path.realpath`` of each root (``~`` expanded), in order, without repeats."""
    roots: list[str] = []
    for p in paths:
        real = os.path.realpath(os.path.expanduser(os.fspath(p)))
        if real not in roots:
            roots.append(real)
    return roots


def is_under(path: str | os.PathLike, roots: Sequence[str]) -> bool:
    """True when ``path``, with its symbolic links and ``..`` resolved (``os.path.realpath``), is one
    of ``roots`` or lies inside one. ``roots`` must be real paths already (:func:`real_roots`);
    ``/data`` does not contain ``/data2``. Compared with ``os.path.normcase`` (Windows paths are
    case-insensitive: ``D:\\Videos`` holds ``d:\\videos\\a.mp4``; unchanged on POSIX)."""
    real = os.path.normcase(os.path.realpath(path))
    for root in roots:
        root = os.path.normcase(root)
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return True
    return False


def check_readable(path: str | os.PathLike, roots: Sequence[str], what: str = "path") -> str:
    """The real path of ``path`` when it, and for a folder each of its frame images, lies under
    ``roots`` (see the module docstring).

    Args:
        path: a video file, an image folder or another file (e.g. a checkpoint), absolute or
            relative to the current folder.
        roots: allowed roots, real paths (:func:`real_roots`); empty: nothing is allowed.
        what: how messages name the path (e.g. ``"frames.path"``).

    Returns:
        ``os.path.realpath(path)``.

    Raises:
        PathNotAllowedError: the path or one of the folder's frame images lies outside the roots
            (the message names it and the roots). An unreadable folder is not an error here: the
            reader reports it.
    """
    from ..frames import frame_image_names

    shown = ", ".join(roots) if roots else "none"
    real = os.path.realpath(path)
    if not is_under(real, roots):
        raise PathNotAllowedError(
            f"{what} {os.fspath(path)!r} is outside the folders that may be read (symbolic links and '..' are "
            f"resolved; allowed: {shown}); move it there or allow its folder with --allow-path"
        )
    if os.path.isdir(real):
        try:
            names = frame_image_names(os.listdir(real))
        except OSError:
            return real
        for name in names:
            if not is_under(os.path.join(real, name), roots):
                target = os.path.realpath(os.path.join(real, name))
                raise PathNotAllowedError(
                    f"{what} {os.fspath(path)!r}: its image {name} is a link to {target}, outside the folders that "
                    f"may be read (allowed: {shown}); copy the frames into the folder instead of linking them"
                )
    return real


def read_token_file(path: str | os.PathLike, what: str = "--token-file") -> str:
    """The token stored in a file: its text with surrounding white space removed.

    On POSIX systems the file must not be readable or writable by the group or other users
    (``chmod 600 FILE``), as OpenSSH requires of private keys: a token others can read protects
    nothing.

    Raises:
        TokenFileError: the file does not exist or cannot be read, is empty, holds more than one
            line or a character outside printable ASCII, or (POSIX) is accessible to other users.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read(4097)
    except OSError as error:
        raise TokenFileError(f"{what} {path}: cannot read it ({error.strerror or error})") from None
    if not stat.S_ISREG(mode):
        raise TokenFileError(f"{what} {path}: not a regular file; store the token in a file")
    if sys.platform != "win32" and mode & 0o077:
        raise TokenFileError(
            f"{what} {path} can be read or changed by other users (mode {stat.S_IMODE(mode):03o}); "
            f"make it private with: chmod 600 {path}"
        )
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        token = None
    if not token or len(data) > 4096 or not all(33 <= ord(c) <= 126 for c in token):
        raise TokenFileError(
            f"{what} {path}: expected one token of printable ASCII characters without spaces (at most 4096 bytes), "
            "e.g. written by: python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE"
        )
    return token


def server_token(token_file: str | os.PathLike | None, token: str | None, what: str = "--token-file") -> str | None:
    """A client's token for a tracking server: the token file's (:func:`read_token_file`), else
    ``token`` (given on a command line), else ``$SAM2S_SERVER_TOKEN`` (``options.ENV_TOKEN``), else None.

    Raises:
        TokenFileError: the token file is refused (see :func:`read_token_file`; ``what`` names it).
    """
    if token_file:
        return read_token_file(token_file, what)
    return token or os.environ.get(ENV_TOKEN) or None
