"""``kpi forget``: erase a customer from the processor (contract section 7)."""
