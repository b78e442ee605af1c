"""Faust's aiokafka transport with the fetch wait as a setting (Faust hard-codes 1.5 s)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, ClassVar

import aiokafka
import faust
from aiohttp.web import AppRunner
from faust.transport.drivers import aiokafka as driver
from faust.types import ServiceT, TransportT
from faust.web.drivers import aiohttp as web_driver


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_consumer(self, loop: asyncio.AbstractEventLoop) -> aiokafka.AIOKafkaConsumer:
        consumer: aiokafka.AIOKafkaConsumer = super()._create_consumer(loop)
        # Read when the consumer starts its fetcher. A broker that answers a fetch only when
        # the wait runs out (Tansu does) would otherwise add up to 1.5 s to every update.
        app = self.transport.app
        assert isinstance(app, KpiApp)
        consumer._fetch_max_wait_ms = app.fetch_max_wait_ms
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer = _Consumer


class _Web(web_driver.Web):
    """Faust's aiohttp server without Faust's own views.

    They are debugging aids (table contents, the topology, monitor statistics and an index
    at ``/``, where the dashboard page lives), served without authentication: the worker
    serves only the routes of ``stream_app/web.py``.
    """

    default_blueprints: ClassVar[Any] = ()
    production_blueprints: ClassVar[Any] = ()
    debug_blueprints: ClassVar[Any] = ()
    optional_blueprints: ClassVar[Any] = ()

    def use_runner(self, runner: AppRunner) -> None:
        """Serve ``web_app`` with this runner (the dashboard's limits) instead of Faust's."""
        self._runner = runner


class KpiApp(faust.App):
    """A Faust app whose Kafka consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        # Started with Faust's own services, not after its table recovery like those of
        # ``app.service``: a service with a consumer group of its own then joins it while
        # Faust's consumer joins the app's group, instead of after it.
        self.early_services: list[ServiceT] = []
        super().__init__(*args, **kwargs)

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        return [*super().on_init_dependencies(), *self.early_services]

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)

    def _new_web(self) -> Any:
        return _Web(self)
