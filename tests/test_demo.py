"""The README's run command: ``kpi dev --simulate --watch`` shows live KPIs within a minute."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from pathlib import Path

import pytest
import redis

from stream_app.devstack import free_port
from tests.test_devstack import _alive, _children, _start_dev

pytestmark = pytest.mark.integration


def test_demo_shows_live_kpis_within_a_minute_and_stops_cleanly(tmp_path: Path) -> None:
    broker_port, redis_port, web_port = free_port(), free_port(), free_port()
    started = time.monotonic()
    dev = _start_dev(tmp_path, broker_port, redis_port, web_port, "--simulate", "--watch")
    log = tmp_path / "dev.log"
    try:
        client = redis.Redis(port=redis_port)
        first: dict[bytes, bytes] = {}
        while time.monotonic() - started < 60 and not first:
            assert dev.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(redis.ConnectionError):
                first = client.hgetall("kpi:1h:all")
            time.sleep(0.5)
        assert first, "no snapshot of kpi:1h:all within 60 s:\n" + log.read_text()[-3000:]
        assert json.loads(first[b"new_customers"]) > 0

        # Live: the simulator keeps sending events stamped now, so the snapshot moves on.
        deadline = time.monotonic() + 30
        later = first
        while time.monotonic() < deadline and later[b"updated_at"] == first[b"updated_at"]:
            time.sleep(0.5)
            later = client.hgetall("kpi:1h:all")
        assert later[b"updated_at"] != first[b"updated_at"], "the snapshot stopped updating"
        client.close()

        children = _children(dev.pid)
        names = {Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children if _alive(pid)}
        assert any(b"simulate" in name for name in names), names
        assert any(b"watch" in name for name in names), names

        dev.send_signal(signal.SIGINT)
        dev.wait(60)
        assert dev.returncode == 0, log.read_text()[-3000:]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in children):
            time.sleep(0.3)
        assert not [pid for pid in children if _alive(pid)], "processes left behind"
        # The live view drew the KPIs into the terminal (here: the captured output).
        assert "new_customers" in log.read_text(errors="replace")
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
