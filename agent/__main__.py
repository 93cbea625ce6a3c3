"""``python -m agent``: the same as ``fedqi-agent``."""

from agent.cli import main

raise SystemExit(main())
