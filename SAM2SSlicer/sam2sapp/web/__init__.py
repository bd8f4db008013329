"""``sam2s web``: the SAM2S tracker in a web browser, on Kitware's trame-slicer.

trame-slicer runs Slicer's own core (``slicer-core``: MRML, slice views, displayable managers) in
this process and streams its views to the page. The page drives the same
:class:`~SAM2SSlicerLib.controller.SAM2SController` and :class:`~SAM2SSlicerLib.logic.SAM2STrackingLogic`
as the Slicer module; tracking runs in a tracking server process (``backends.ServerBackend``),
never on trame's event loop. Only the view binding is new: :mod:`.app` (state and callbacks),
:mod:`.layout` (the page), :mod:`.access` (tokens, allowed folders, downloads), :mod:`.options`
(command-line options, model settings, the tracking server).

Needs ``pip install -e ".[web]"`` (trame-slicer 2.0.0, which runs on slicer-core 5.11).
"""
