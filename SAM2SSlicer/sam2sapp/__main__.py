"""``python -m sam2sapp``: the ``sam2s`` command line (see ``sam2sapp.cli``)."""

from .cli import main

raise SystemExit(main())
