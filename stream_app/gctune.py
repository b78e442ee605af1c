"""Garbage collection for a worker that holds millions of long-lived, acyclic objects."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

# How often what was frozen goes back to the collector, so a cycle among once-live objects
# (a closed connection's futures, say) is still freed. The full collection after a thaw
# walks the whole heap once: about a second per million customers, once an hour.
THAW_EVERY_S = 3600.0


class GcTuner:
    """Freezes what survives each full collection, so the next one walks only newer objects.

    Customer state is plain data freed by reference counting, but CPython's full collection
    walks every container the process holds: with a million customers each one paused the
    worker for a second, found nothing, and set the p99 latency. Freezing right after a full
    collection moves only survivors out of its reach (the young generations are empty then),
    so no young cycle is frozen; frozen objects are still freed when their last reference
    goes.
    """

    def __init__(
        self,
        thaw_every_s: float = THAW_EVERY_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.thaw_every_s = thaw_every_s
        self.monotonic = monotonic
        self._thawed_at = monotonic()
        self.freezes = 0
        self.thaws = 0

    def install(self) -> None:
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def remove(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        gc.unfreeze()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info.get("generation") != 2:
            return
        now = self.monotonic()
        if now - self._thawed_at >= self.thaw_every_s:
            # The next full collection walks everything once more.
            gc.unfreeze()
            self._thawed_at = now
            self.thaws += 1
            logger.debug("garbage collector: frozen objects returned to the oldest generation")
        else:
            gc.freeze()
            self.freezes += 1


@contextmanager
def collection_paused() -> Iterator[None]:
    """No automatic collection inside: for a batch that builds state and drops its scaffolding.

    A young collection mid-batch walks every object still alive at that moment: the batch's
    buffered messages, parsed events and facts, nearly all freed by the end of it. Paused,
    the first collection after the batch walks only what the batch kept. Awaits inside
    must be short (a fetch, a batch's writes): other tasks run then too, and their cyclic
    garbage waits until collection resumes.
    """
    if not gc.isenabled():
        yield  # nested, or paused by the caller: they turn it back on
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
