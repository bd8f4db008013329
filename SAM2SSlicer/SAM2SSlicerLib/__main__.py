"""``python -m SAM2SSlicerLib``: the ``sam2s`` command line (see ``SAM2SSlicerLib.cli``)."""

from .cli import main

raise SystemExit(main())
