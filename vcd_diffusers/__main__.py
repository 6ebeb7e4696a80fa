"""``python -m vcd_diffusers``: the ``vcd`` command."""

from .cli import main

raise SystemExit(main())
