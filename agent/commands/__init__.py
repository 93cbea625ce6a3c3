"""CLI command modules (each registers on agent.cli.app)."""
