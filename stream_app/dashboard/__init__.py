"""The live dashboard, the read-only HTTP API, ``/health`` and ``/metrics`` (docs/api.md).

- ``params``: query parameters, checked (400 with a message, never 500);
- ``reader``: what the API reads from Redis (snapshots, history, segments, alerts);
- ``live``: one Redis subscription per process, fanned out to the page's event streams;
- ``health``: the checks behind ``/health`` and the consumer lag;
- ``security``: token, CORS and response headers;
- ``api``: the aiohttp handlers, ``install(web_app, api)`` for any aiohttp application;
- ``server``: ``kpi dashboard``, the same routes without a worker;
- ``static/``: the page (plain JavaScript, the vendored uPlot chart library), ``openapi.json``.

The worker mounts the routes on its Faust web server (``stream_app/web.py``).
"""
