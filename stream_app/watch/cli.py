"""The ``kpi watch`` subcommand: a live terminal view of one segment's KPIs (or, with
``--cohorts``, its cohort retention matrix), fed by Redis."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError, ResponseError
from rich.console import Console
from rich.measure import Measurement

from schemas.cohort import GRAINS, Grain
from stream_app.benchmarks.profile import ProfileError, profile_from_settings
from stream_app.published import is_cohort_segment
from stream_app.redaction import redacted, redis_url_option
from stream_app.redis_keys import ALERTS, segment_updates_pattern, snapshot_key
from stream_app.settings import Settings
from stream_app.watch.cohorts import CohortState, CohortWatcher, render_cohorts
from stream_app.watch.follow import Follower, S, client_factory
from stream_app.watch.view import ALERT_FEED, WatchState, render

logger = logging.getLogger("kpi.watch")

EXIT_OK = 0
EXIT_ERROR = 2

# --once on a pipe: wide enough for the frame's natural width, up to this.
_MAX_ONCE_WIDTH: Final = 400
_WINDOW_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
_BAD_SEGMENT = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
Render = Callable[[Any, datetime], Any]

_DESCRIPTION = """\
A live terminal view of the KPIs of one segment: one row per KPI, one column per window,
an arrow for the change since the previous snapshot of that window, the window bounds and
watermark, a 'stale' marker when a window has not been published for a while, and the
latest alerts. It reads the current snapshots (HGETALL kpi:<window>:<segment>) and the
last alerts (XREVRANGE kpi-alerts), then follows PSUBSCRIBE kpi-updates:*:<segment> and
the channel kpi-alerts. Redis is KPI_REDIS_URL (with KPI_REDIS_PASSWORD) unless
--redis-url is given. Ctrl-C quits.

With --cohorts it shows the cohort retention matrix of the segment instead: one row per
cohort (the customers whose first signup fell in that week or month, newest first) with
its size, one column per period k after it, each cell the percentage of the cohort still
active at the end of period k; '*' marks an incomplete period (the one holding the
watermark, as of the watermark). It reads HGETALL kpi-cohorts:<grain>:<segment>, then
follows SUBSCRIBE kpi-cohort-updates:<grain>:<segment>.
"""

_EPILOG = """\
values:
  ratios such as churn_rate are percentages (3.10%); money is the published decimal
  string (1204.50); nps and csat are scores from -100/0 to 100; counts are integers;
  a null KPI (a ratio with nothing to divide by) is shown as —. A field that is not what
  the contract says is skipped and counted under the table, never fatal.

examples:
  kpi watch                                   # segment all, every configured window
  kpi watch --segment region:EU --windows 1h,24h
  kpi watch --segment campaign:spring-sale --refresh 0.5
  kpi watch --once > kpis.txt                 # one frame on stdout, for scripts
  kpi watch --cohorts                         # weekly cohorts of all customers
  kpi watch --cohorts --grain month --segment campaign:spring-sale

exit status:
  0 stopped with Ctrl-C (or SIGTERM), or --once printed its frame;
  2 bad options, or with --once: Redis could not be read.
  Without --once an unreachable Redis is retried with backoff (up to 10s) until it answers.
"""


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return value


def _refresh(text: str) -> float:
    value = _positive_seconds(text)
    if value < 0.1:
        raise argparse.ArgumentTypeError(f"{text}: refresh at most 10 times a second (0.1)")
    return value


def _segment(text: str) -> str:
    if not text or _BAD_SEGMENT.search(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a segment: all, region:<REGION> or campaign:<campaign_id>"
        )
    return text


def _windows(text: str) -> tuple[str, ...]:
    names: list[str] = []
    for part in text.split(","):
        name = part.strip()
        if not _WINDOW_NAME.fullmatch(name):
            raise argparse.ArgumentTypeError(
                f"{name!r} is not a window name (letters, digits, '_' or '-'), e.g. 1h,24h"
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``watch`` to the ``kpi`` command's subparsers."""
    parser = subparsers.add_parser(
        "watch",
        help="live terminal view of one segment's KPIs and the latest alerts (from Redis)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--segment",
        type=_segment,
        default="all",
        help="all, region:<REGION> or campaign:<campaign_id> (default: all)",
    )
    parser.add_argument(
        "--windows",
        type=_windows,
        default=None,
        metavar="NAMES",
        help="comma-separated window names, one column each (default: the windows of "
        "KPI_WINDOWS, 1h,24h,7d,30d unless configured)",
    )
    parser.add_argument(
        "--cohorts",
        action="store_true",
        help="show the cohort retention matrix of the segment instead of its KPIs",
    )
    parser.add_argument(
        "--grain",
        choices=GRAINS,
        default="week",
        help="with --cohorts: cohorts by the week (Monday 00:00 UTC) or the calendar month "
        "of the first signup (default: week)",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="print one frame to stdout and exit (for scripts); exit 2 if Redis cannot be read",
    )
    parser.add_argument(
        "--refresh",
        type=_refresh,
        default=1.0,
        metavar="SECONDS",
        help="redraw at least this often, for ages and stale markers (default: 1)",
    )
    parser.add_argument(
        "--stale-after",
        type=_positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="mark a window stale when its snapshot is older than this (default: 60)",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        type=redis_url_option,
        metavar="URL",
        help="read this Redis instead of KPI_REDIS_URL",
    )
    parser.set_defaults(func=run)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Watcher(Follower[WatchState]):
    """Keeps a ``WatchState`` current: snapshots and alerts, then live messages."""

    async def subscribe(self, pubsub: PubSub) -> None:
        await pubsub.psubscribe(segment_updates_pattern(self.state.segment))
        await pubsub.subscribe(ALERTS)

    async def load(self, client: aioredis.Redis) -> bool:
        """Read the current snapshot of every window and the last alerts."""
        state = self.state
        changed = False
        for window in state.windows:
            key = snapshot_key(window, state.segment)
            try:
                fields = await client.hgetall(key)
            except ResponseError as exc:  # WRONGTYPE: something else took the name
                logger.warning("cannot read %s: %s", key, exc)
                continue
            changed = state.apply_hash(window, fields) or changed
        try:
            entries = await client.xrevrange(ALERTS, count=ALERT_FEED)
        except ResponseError as exc:  # e.g. WRONGTYPE: not a stream
            logger.warning("cannot read the alert stream %s: %s", ALERTS, exc)
            return changed
        alerts = [(fields or {}).get(b"data", b"") for _id, fields in entries or []]
        return state.apply_alerts(alerts) or changed

    def apply(self, channel: str, data: bytes | str) -> bool:
        if channel == ALERTS:
            return self.state.apply_alert(data)
        return self.state.apply_message(channel, data)


def build_state(settings: Settings, args: argparse.Namespace, source: str) -> WatchState:
    """The KPI view's state (not for ``--cohorts``: that is a ``CohortState``)."""
    windows = args.windows or tuple(window.name for window in settings.windows)
    state = WatchState(
        segment=args.segment,
        windows=windows,
        stale_after_s=args.stale_after,
        source=source,
        profile=profile_from_settings(settings),
    )
    state.status = "connecting"
    return state


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``kpi watch``; see the exit status in ``kpi watch --help``."""
    url = args.redis_url or settings.redis_url
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    try:
        state = build_state(settings, args, redacted(url))
    except ProfileError as exc:
        sys.stderr.write(f"kpi watch: {exc}\n")
        return EXIT_ERROR
    connect = client_factory(url, password)
    if args.cohorts:
        if not is_cohort_segment(args.segment):
            sys.stderr.write(
                f"kpi watch: {args.segment!r} is not a cohort segment: all, region:<REGION> "
                "(2 to 8 of A-Z, 0-9, '_', '-', or unknown) or campaign:<campaign_id>\n"
            )
            return EXIT_ERROR
        grain: Grain = args.grain
        cohorts = CohortState(grain, args.segment, source=redacted(url), status="connecting")
        return _follow(CohortWatcher(cohorts, connect), render_cohorts, args)
    return _follow(Watcher(state, connect), render, args)


def _follow(follower: Follower[S], draw: Render, args: argparse.Namespace) -> int:
    if args.once:
        return _once(follower, draw)
    try:
        return asyncio.run(_live(follower, draw, args.refresh))
    except KeyboardInterrupt:  # before the signal handlers were in place
        return EXIT_OK


def _once(follower: Follower[S], draw: Render) -> int:
    state = follower.state

    async def read() -> None:
        client = follower.connect()
        try:
            await follower.load(client)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    try:
        asyncio.run(read())
    except (RedisError, OSError) as exc:
        logger.error(
            "watch: cannot read Redis at %s (%s: %s)", state.source, exc.__class__.__name__, exc
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
    state.status = None
    frame = draw(state, utc_now())
    console = Console(file=sys.stdout)
    if not console.is_terminal:
        # Scripts get every value whole: as wide as the frame wants, not 80 columns.
        wide = console.options.update(max_width=_MAX_ONCE_WIDTH)
        width = Measurement.get(console, wide, frame).maximum
        console = Console(file=sys.stdout, width=max(width, console.width))
    console.print(frame)
    return EXIT_OK


async def _live(follower: Follower[S], draw: Render, refresh_s: float) -> int:
    from rich.live import Live

    stop = asyncio.Event()
    console = Console()
    state = follower.state
    follower.poll_s = min(refresh_s, 1.0)
    with (
        _signals_set(stop),
        Live(draw(state, utc_now()), console=console, auto_refresh=False, transient=False) as live,
        _log_through(console),
    ):
        last_draw = 0.0

        def on_change(changed: bool) -> None:
            nonlocal last_draw
            now = time.monotonic()
            if changed or now - last_draw >= refresh_s:
                live.update(draw(state, utc_now()), refresh=True)
                last_draw = now

        await follower.run(stop, on_change)
        live.update(draw(state, utc_now()), refresh=True)
    return EXIT_OK


@contextlib.contextmanager
def _signals_set(stop: asyncio.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (a clean exit) instead of raising mid-draw."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def _log_through(console: Console) -> Iterator[None]:
    """Log records go through the live console, above the frame, instead of tearing it."""
    from rich.logging import RichHandler

    root = logging.getLogger()
    saved = root.handlers[:]
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    handler.setLevel(root.level)
    root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = saved
