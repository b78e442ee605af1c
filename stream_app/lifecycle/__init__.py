"""Customer lifecycle: per-customer RFM profiles (``profile``) and the churn-risk model (``risk``).

Pure logic with event time passed in; the customer stage feeds it and persists it.
"""
