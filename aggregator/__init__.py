"""fedqi aggregator."""
