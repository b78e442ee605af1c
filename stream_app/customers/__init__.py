"""Customers: per-customer state, dedupe and attribution, the stage keyed by customer."""
