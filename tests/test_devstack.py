"""``kpi dev``: starts broker, Redis and worker; SIGINT, SIGTERM or its own death stop them all."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from stream_app.devstack import free_port, redis_answers

pytestmark = pytest.mark.integration


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid``, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents[int(entry.name)] = ppid
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        nxt = {child for child, parent in parents.items() if parent in frontier}
        nxt -= found
        found |= nxt
        frontier = nxt
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _start_dev(
    tmp_path: Path,
    broker_port: int,
    redis_port: int,
    web_port: int,
    *extra: str,
    redis_url: str | None = "",
) -> subprocess.Popen[bytes]:
    """``kpi dev`` with its own ports; ``redis_url`` None leaves KPI_REDIS_URL unset."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
    env.update(
        {
            "KPI_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker_port}",
            "KPI_WEB_PORT": str(web_port),
            "KPI_DATA_DIR": str(tmp_path / "data"),
        }
    )
    if redis_url is not None:
        # Nothing listens there: kpi dev must start a private redis-server.
        env["KPI_REDIS_URL"] = redis_url or f"redis://127.0.0.1:{redis_port}/0"
    log = (tmp_path / "dev.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "stream_app", "dev", "--log-dir", str(tmp_path / "logs"), *extra],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )


def _wait_healthy(
    web_port: int, dev: subprocess.Popen[bytes], log: Path, timeout_s: float = 120
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert dev.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/health", timeout=2) as r:
                if json.load(r)["customer_partitions"]:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("kpi dev never became healthy:\n" + log.read_text()[-3000:])


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_kpi_dev_starts_everything_and_leaves_nothing_behind(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    broker_port, redis_port, web_port = free_port(), free_port(), free_port()
    dev = _start_dev(tmp_path, broker_port, redis_port, web_port)
    try:
        _wait_healthy(web_port, dev, tmp_path / "dev.log")
        assert redis_answers(f"redis://127.0.0.1:{redis_port}/0"), "private redis-server not up"
        children = _children(dev.pid)
        assert len(children) >= 3, f"expected broker, redis and worker, got {children}"

        dev.send_signal(stop_signal)
        dev.wait(60)
        if stop_signal != signal.SIGKILL:
            assert dev.returncode == 0, (tmp_path / "dev.log").read_text()[-3000:]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in children):
            time.sleep(0.3)
        assert not [pid for pid in children if _alive(pid)], "processes left behind"
        for port in (broker_port, redis_port, web_port):
            with socket.socket() as sock:
                assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()


def test_kpi_dev_explains_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        dev = _start_dev(tmp_path, port, free_port(), free_port())
        dev.wait(60)
    text = (tmp_path / "dev.log").read_text()
    assert dev.returncode == 2, text
    assert f"port {port} is taken" in text


def test_kpi_dev_writes_only_to_a_redis_it_started_unless_told_otherwise(tmp_path: Path) -> None:
    """Without KPI_REDIS_URL the dev stack starts its own Redis, even when the machine's one
    answers at the default address, and says so first thing."""
    broker_port, web_port = free_port(), free_port()
    dev = _start_dev(tmp_path, broker_port, 0, web_port, redis_url=None)
    log = tmp_path / "dev.log"
    try:
        _wait_healthy(web_port, dev, log)
        text = log.read_text()
        private = re.search(r"private redis-server on redis://127\.0\.0\.1:(\d+)/0", text)
        assert private, text[-3000:]
        port = int(private.group(1))
        assert port != 6379
        assert f"redis redis://127.0.0.1:{port}/0" in text  # what the worker was given
        assert redis_answers(f"redis://127.0.0.1:{port}/0")
        dev.send_signal(signal.SIGINT)
        dev.wait(60)
        assert dev.returncode == 0, text[-3000:]
        assert not redis_answers(f"redis://127.0.0.1:{port}/0"), "private redis-server left up"
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
