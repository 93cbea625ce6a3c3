"""fedqi agent."""
