"""Alerts: churn-spike detection and threshold rules, delivered once (docs/alerts.md).

``detector`` is the pure math, ``rules`` the rules file, ``service`` the evaluation on the
worker, ``delivery`` Redis, Kafka and webhooks, ``fprate`` the offline false-positive
measurement (``python -m stream_app.alerts``). Where hourly counts come from is
``stream_app.kpis.specs``, since the customer stage computes them too.
"""
