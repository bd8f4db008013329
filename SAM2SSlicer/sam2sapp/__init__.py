"""sam2sapp: the applications around the engine and the Slicer logic, outside 3D Slicer (PEP 8 naming).

* ``cli`` -- the ``sam2s`` command line (``python -m sam2sapp``); ``track`` -- ``sam2s track``'s
  work (``run_tracking(TrackRequest)``); ``streaming`` -- its sinks, one per output format, fed by
  the engine's one stream (``sam2s.Tracker.run``); ``batch`` -- many videos on Ray; ``demo``.
* ``promptsfile`` -- the prompts JSON format. ``metrics`` -- DAVIS J&F, Dice, HD95, NSD.
  ``visualize`` -- overlays, overlay videos, contact sheets.
* ``web`` -- ``sam2s web``, the tracker in a web browser (trame-slicer).

It uses ``SAM2SSlicerLib`` (the MRML logic, formats, provenance, safe outputs) and ``sam2s``; neither
imports it, and the Slicer extension does not install it (``CMakeLists.txt``).
"""
