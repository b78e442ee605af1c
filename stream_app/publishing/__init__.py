"""Publishing: coalesced KPI snapshots to Redis and Kafka."""
