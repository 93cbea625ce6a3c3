"""``fedqi-demo``: a whole network of practices on one machine, through the real path.

Not part of what a practice installs to run the agent: it drives ``fedqi-aggregator`` and
``fedqi-agent`` as a network would, and needs the ``demo`` extra (``pip install 'fedqi[demo]'``).
See demo/cli.py and docs/demo.md.
"""
