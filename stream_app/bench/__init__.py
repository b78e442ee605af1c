"""``kpi bench``: the processor measured against a plain consumer in one run."""
