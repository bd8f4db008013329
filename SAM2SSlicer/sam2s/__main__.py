"""``python -m sam2s``: the command line (see ``sam2s.cli``)."""

from .cli import main

raise SystemExit(main())
