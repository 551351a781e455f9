"""``python -m modelflags``: the ``modelflags`` command."""

from modelflags.cli import main

raise SystemExit(main())
