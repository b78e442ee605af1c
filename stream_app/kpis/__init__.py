"""KPI math: base counts, formulas, and the windowed bookkeeping the engine shares."""
