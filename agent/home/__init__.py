"""The agent home: what the agent keeps between runs, in its own directory.

settings.py         the configuration (agent.toml, FEDQI_AGENT_* variables), declared once
keystore.py         the Ed25519 signing keys and the trust anchors pinned at enrolment
catalogue_cache.py  the network's signed catalogue, cached and verified again on every load
"""
