"""fedqi protocol: the only package the agent and the aggregator share.

Pure: models, canonical bytes, signing and verification, disclosure control, Merkle proofs and
checkpoints. No network, files, database or clock reads (callers pass ``now`` in).
"""

__version__ = "0.1.0"
PROTOCOL_MAJOR = 1
