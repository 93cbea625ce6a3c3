"""``python -m agent``: the same as ``fedqi-agent``."""

from agent.entry import main

raise SystemExit(main())
