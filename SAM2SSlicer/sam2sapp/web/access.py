"""Who may use ``sam2s web`` and what its page may open (see :mod:`.app`'s docstring, "Access" and
"Open by path"): the token of a non-loopback address (:func:`checkAccess`, :func:`tokenMiddleware`),
the folders the page may open by path (:func:`allowedRoots`, :func:`checkOpenPath`: the tracking
server's rule, ``sam2s.serving.access``) and the HTTP routes of the app (:func:`bindRoutes`).
"""

from __future__ import annotations

import hmac
import os
import sys
from collections.abc import Callable, Sequence

from sam2s.serving.access import (
    MIN_REMOTE_TOKEN_LENGTH,
    PathNotAllowedError,
    check_readable,
    is_loopback,
    is_under,
    real_roots,
)

from .i18n import tr as _

TOKEN_COOKIE = "sam2s_web_token"
"""The HttpOnly cookie that keeps the token of a page opened with ``?token=TOKEN``."""
TOKEN_ENV = "SAM2S_WEB_TOKEN"
"""The environment variable of the token (when neither ``--token`` nor ``--token-file`` gives it)."""


def tokenMiddleware(token: str):
    """An aiohttp middleware refusing (401) requests without ``token`` (see the module docstring)."""
    from aiohttp import web

    expected = token.encode("utf-8")

    def matches(given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given.encode("utf-8"), expected)

    @web.middleware
    async def requireToken(request, handler):
        header = request.headers.get("Authorization", "")
        bearer = header[7:].strip() if header.lower().startswith("bearer ") else None
        query = request.query.get("token")
        if not (matches(bearer) or matches(query) or matches(request.cookies.get(TOKEN_COOKIE))):
            return web.Response(
                status=401,
                text="401: this SAM2S web app needs its token: open http://HOST:PORT/?token=TOKEN "
                "(the token given to `sam2s web --token` or $SAM2S_WEB_TOKEN).\n",
            )
        response = await handler(request)
        if matches(query) and not request.cookies.get(TOKEN_COOKIE):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return response

    return requireToken


def checkAccess(host: str, token: str | None) -> str | None:
    """The token the app requires: None on a loopback ``host``; on any other address the given
    ``token`` (or ``$SAM2S_WEB_TOKEN``).

    Raises:
        ValueError: a non-loopback ``host`` without a token of at least
            ``MIN_REMOTE_TOKEN_LENGTH`` characters (the message says how to make one).
    """
    token = token or os.environ.get(TOKEN_ENV) or None
    if is_loopback(host):
        return token
    if not token or len(token) < MIN_REMOTE_TOKEN_LENGTH:
        raise ValueError(
            f"--host {host} is reachable from other computers: pass --token (or set ${TOKEN_ENV}) with at least "
            f"{MIN_REMOTE_TOKEN_LENGTH} characters, e.g. from "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'."
        )
    return token


def checkOpenPath(text: str, roots: Sequence[str]) -> str:
    """The real path of a video file or image folder the page asks to open by path (the text the
    user typed), when the app may read it.

    Args:
        text: the typed path (``~`` expanded, surrounding white space ignored).
        roots: the allowed folders, real paths (``sam2s.serving.access.real_roots``).

    Returns:
        ``os.path.realpath`` of the path: it exists, and it and (for a folder) each of its frame
        images lie under ``roots`` (``sam2s.serving.access.check_readable``, the tracking server's rule).

    Raises:
        ValueError: an empty path, a NUL character, a path outside ``roots`` (the message names the
            file and the folders allowed), or a path that does not exist. Nothing is read.
    """
    path = os.path.expanduser(str(text).strip())
    if not path:
        raise ValueError(_("Type the path of a video file or image folder."))
    if "\x00" in path:
        raise ValueError(_("The path holds a NUL character; type the path of a video file or image folder."))
    try:
        real = check_readable(path, roots, _("The video"))
    except (PathNotAllowedError, OSError, ValueError) as error:
        raise ValueError(
            _("{error}. This app may open only files under {roots} (restart it with --allow-path).").format(
                error=error, roots=", ".join(roots) or _("no folder")
            )
        ) from None
    if not os.path.exists(real):
        raise ValueError(_("{path} does not exist.").format(path=path))
    return real


def allowedRoots(allowPath: Sequence[str], video: str | None) -> list[str]:
    """The real paths of the folders the page may open by path (``--allow-path``, default the current
    folder), plus the command line's ``video`` alone when it lies outside them (the terminal is told).

    Raises:
        ValueError: an ``--allow-path`` that is not a folder.
    """
    roots = real_roots(allowPath or [os.getcwd()])
    for root in roots:
        if not os.path.isdir(root):
            raise ValueError(f"--allow-path {root}: no such folder.")
    if video and not is_under(video, roots):
        roots.append(os.path.realpath(os.path.expanduser(video)))  # this video alone, not the other files of its folder
        print(
            f"sam2s web: note: {video} is outside the --allow-path folders ({', '.join(roots[:-1])}); the page "
            "may open this video, but not the other files of its folder (add --allow-path for those).",
            file=sys.stderr,
            flush=True,
        )
    return roots


def bindRoutes(wslinkServer, downloadPath: Callable[[str], str | None], requiredToken: str | None) -> None:
    """Add the app's routes to trame's aiohttp server: ``/sam2s/download/{key}/{name}`` sends the file
    ``downloadPath("key/name")`` names (404 when none); with ``requiredToken``, every request must
    carry it (:func:`tokenMiddleware`)."""
    from aiohttp import web

    async def download(request):
        path = downloadPath(f"{request.match_info['key']}/{request.match_info['name']}")
        if path is None or not os.path.isfile(path):
            raise web.HTTPNotFound(text="No such export: export it again.")
        return web.FileResponse(
            path, headers={"Content-Disposition": f'attachment; filename="{os.path.basename(path)}"'}
        )

    wslinkServer.app.router.add_get("/sam2s/download/{key}/{name}", download)
    if requiredToken:
        wslinkServer.app.middlewares.append(tokenMiddleware(requiredToken))
