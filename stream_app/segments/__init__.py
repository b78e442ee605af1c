"""Segments: the stage keyed by segment that sums partials across customer partitions."""
