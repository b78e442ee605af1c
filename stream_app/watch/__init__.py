"""``kpi watch``: a live terminal view of one segment's KPIs and the latest alerts.

It reads the current snapshots (``HGETALL kpi:<window>:<segment>``) and the last alerts
(``XREVRANGE kpi-alerts``), then follows ``PSUBSCRIBE kpi-updates:*:<segment>`` and the
``kpi-alerts`` channel. ``view`` is pure (state in, rich renderable out); ``cli`` does the
Redis I/O, reconnects with backoff, and draws with ``rich.live``.

```sh
kpi watch --segment region:EU --windows 1h,24h
kpi watch --once          # one frame on stdout, for scripts
```
"""

from stream_app.watch.cli import add_parser, run

__all__ = ["add_parser", "run"]
