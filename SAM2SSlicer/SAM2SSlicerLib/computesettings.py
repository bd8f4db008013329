"""The controller's settings: the model settings and where tracking runs (this computer, or a
tracking server with its URL and token), saved in a ``controls.SettingsStore`` between sessions,
the token excepted (a password: kept in memory only). A part of ``controller.SAM2SController``.
"""

from __future__ import annotations

import json
import os

from sam2s.serving.options import ENV_TOKEN

from .controls import COMPUTE_LOCAL, COMPUTE_SERVER, SETTINGS_PREFIX
from .controls import tr as _
from .jobs import TrackingBusyError
from .settings import ModelSettings

__all__ = ["ComputeSettings"]


class ComputeSettings:
    """Settings methods of ``SAM2SController`` (which provides ``store``, ``logic``, ``runner``,
    ``backendFactory``, ``status``, ``serverToken`` and ``_computeKey``)."""

    def loadSettings(self) -> None:
        """Apply the saved model settings and compute choice to the logic (done on construction, so
        the effect used from the Segment Editor module in a new Slicer session gets them too).
        Invalid saved settings (e.g. a checkpoint file deleted since) leave the defaults and say so."""
        saved = self.store.value(SETTINGS_PREFIX + "ModelSettings")
        if saved:
            try:
                self.logic.setModelSettings(ModelSettings.fromDict(json.loads(saved)))
            except (ValueError, TypeError) as error:
                self.status(_("The saved model settings were not used: {error}").format(error=error))
        mode = self.computeMode()
        saved = self.store.value(SETTINGS_PREFIX + "ServerToken")
        if saved:  # written by an older version: used for this session, removed from the settings file
            self.store.setValue(SETTINGS_PREFIX + "ServerToken", "")
        if mode is not None:
            url = self.store.value(SETTINGS_PREFIX + "ServerUrl") or ""
            token = self.serverToken or saved or os.environ.get(ENV_TOKEN, "")
            if mode == COMPUTE_SERVER and not token.strip():
                self.status(
                    _("Enter the server's token (never saved, like a password) or set ${e}.").format(e=ENV_TOKEN)
                )
                return
            try:
                self._applyCompute(mode, url, token.strip())
                self.serverToken = token.strip() if mode == COMPUTE_SERVER else ""
            except ValueError as error:
                self.status(_("The saved server settings were not used: {error}").format(error=error))

    def setModelSettings(self, settings: ModelSettings) -> None:
        """Use and save ``settings``. Raises ``ValueError`` (invalid; nothing changes) or
        ``TrackingBusyError`` (tracking runs)."""
        if self.runner.isRunning():
            raise TrackingBusyError(_("Tracking is running; cancel it before changing the model."))
        self.logic.setModelSettings(settings)
        self.store.setValue(SETTINGS_PREFIX + "ModelSettings", json.dumps(settings.toDict()))

    def computeMode(self) -> str | None:
        """``COMPUTE_LOCAL``, ``COMPUTE_SERVER``, or None before the first-use question was answered."""
        mode = self.store.value(SETTINGS_PREFIX + "ComputeMode")
        return mode if mode in (COMPUTE_LOCAL, COMPUTE_SERVER) else None

    def needsComputeChoice(self) -> bool:
        """True until the user answered the first-use question (this computer, or a server)."""
        return self.computeMode() is None

    def setCompute(self, mode: str, url: str = "", token: str = "") -> None:
        """Track on this computer (a local tracking server with Slicer's Python and PyTorch) or on a
        server (``url`` ``http(s)://host:port`` of ``sam2s serve``, with its ``token``: Slicer then
        needs no PyTorch). The mode and URL are saved for the next sessions; the token is kept in
        memory only (``serverToken``), as a password: a new session asks for it again unless
        ``$SAM2S_SERVER_TOKEN`` holds it.

        Raises:
            ValueError: unknown mode, a URL that is not http(s)://host[:port], or no token.
            TrackingBusyError: tracking runs. Nothing changes then.
        """
        if self.runner.isRunning():
            raise TrackingBusyError(_("Tracking is running; cancel it before changing where it runs."))
        url, token = url.strip(), token.strip()
        self._applyCompute(mode, url, token)
        self.serverToken = token if mode == COMPUTE_SERVER else ""
        self.store.setValue(SETTINGS_PREFIX + "ComputeMode", mode)
        self.store.setValue(SETTINGS_PREFIX + "ServerUrl", url if mode == COMPUTE_SERVER else "")
        self.store.setValue(SETTINGS_PREFIX + "ServerToken", "")  # never saved (an older version's is removed)

    def serverFieldsEdited(self, url: str, token: str) -> None:
        """The server URL or token field was edited: no URL is this computer, a URL waits for its token
        (a message, not an error), both select that server; raises as :meth:`setCompute`."""
        url, token = url.strip(), token.strip()
        if not url:
            self.setCompute(COMPUTE_LOCAL)
        elif not token:
            self.status(_("Now enter the token of {url} (printed by `sam2s serve`).").format(url=url))
        else:
            self.setCompute(COMPUTE_SERVER, url, token)

    def _applyCompute(self, mode: str, url: str, token: str) -> None:
        from urllib.parse import urlsplit

        if mode == COMPUTE_LOCAL:
            url = token = ""
        elif mode == COMPUTE_SERVER:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    _("Server URL {url!r} is not http(s)://host:port; copy the URL printed by `sam2s serve`.").format(
                        url=url
                    )
                )
            if not token:
                raise ValueError(_("A tracking server needs its token: copy the token printed by `sam2s serve`."))
        else:
            raise ValueError(_("Compute mode must be 'local' or 'server'; got {mode!r}.").format(mode=mode))
        if self._computeKey == (mode, url, token):
            return
        current = self.logic.backend
        self.logic.setBackend(self.backendFactory(url or None, token))
        current.close()
        self._computeKey = (mode, url, token)

    def isRemote(self) -> bool:
        """True when tracking runs on a remote server (Slicer then needs no PyTorch)."""
        return self.computeMode() == COMPUTE_SERVER
