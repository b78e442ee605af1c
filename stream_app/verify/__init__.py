"""Independent batch reference for the KPIs and the ``kpi verify`` check of Redis against it."""
