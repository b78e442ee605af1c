"""Benchmark profiles: reference bands per KPI (contract section 8), and KPIs read against them."""
