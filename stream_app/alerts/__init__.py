"""Alerts: churn-spike detection and threshold rules, delivered once (docs/alerts.md).

``detector`` is the pure math, ``rules`` the rules file, ``buckets`` where hourly counts come
from, ``service`` the evaluation on the worker, ``delivery`` Redis, Kafka and webhooks,
``fprate`` the offline false-positive measurement (``python -m stream_app.alerts``).
"""
