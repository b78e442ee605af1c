"""The worker's garbage-collection tuning: freeze after full collections, thaw on schedule."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from stream_app.gctune import GcTuner


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    # Only the tests' own collections: an automatic full one (the allocations below can set
    # one off) would freeze before a test looks.
    enabled = gc.isenabled()
    gc.disable()
    gc.unfreeze()
    yield FakeClock()
    gc.unfreeze()
    if enabled:
        gc.enable()


def test_a_full_collection_freezes_its_survivors(clock: FakeClock) -> None:
    tuner = GcTuner(thaw_every_s=60, monotonic=clock)
    tuner.install()
    try:
        survivor = [[index] for index in range(1000)]
        gc.collect(1)  # a young collection freezes nothing
        assert gc.get_freeze_count() == 0
        gc.collect()
        frozen = gc.get_freeze_count()
        assert frozen >= len(survivor)
        assert tuner.freezes == 1
    finally:
        tuner.remove()
    assert gc.get_freeze_count() == 0


def test_frozen_objects_are_still_freed_by_reference_counting(clock: FakeClock) -> None:
    tuner = GcTuner(thaw_every_s=60, monotonic=clock)
    tuner.install()
    try:
        state = {f"customer-{index}": [index, [index]] for index in range(5000)}
        gc.collect()
        frozen = gc.get_freeze_count()
        del state
        assert gc.get_freeze_count() <= frozen - 5000
    finally:
        tuner.remove()


def test_frozen_objects_go_back_to_the_collector_on_schedule(clock: FakeClock) -> None:
    tuner = GcTuner(thaw_every_s=60, monotonic=clock)
    tuner.install()
    try:
        gc.collect()
        assert gc.get_freeze_count() > 0
        clock.now = 59.0
        gc.collect()
        assert tuner.thaws == 0
        assert gc.get_freeze_count() > 0
        clock.now = 61.0
        gc.collect()
        # Thawed: a cycle among once-live objects is collectable again.
        assert tuner.thaws == 1
        assert gc.get_freeze_count() == 0
        clock.now = 62.0
        gc.collect()
        assert tuner.freezes == 3
        assert gc.get_freeze_count() > 0
    finally:
        tuner.remove()


def test_a_cycle_frozen_while_alive_is_freed_after_a_thaw(clock: FakeClock) -> None:
    class Node:
        peer: Node | None = None

    tuner = GcTuner(thaw_every_s=60, monotonic=clock)
    tuner.install()
    try:
        first, second = Node(), Node()
        first.peer, second.peer = second, first
        gc.collect()  # the pair is alive: frozen
        probe = weakref.ref(first)
        del first, second
        gc.collect()
        assert probe() is not None  # frozen cycles wait for the thaw
        clock.now = 61.0
        gc.collect()  # thaws
        gc.collect()  # walks the thawed objects
        assert probe() is None
    finally:
        tuner.remove()


def test_install_is_idempotent_and_remove_undoes_it(clock: FakeClock) -> None:
    tuner = GcTuner(monotonic=clock)
    tuner.install()
    tuner.install()
    assert gc.callbacks.count(tuner._on_gc) == 1
    tuner.remove()
    assert tuner._on_gc not in gc.callbacks


def test_collection_paused_turns_automatic_collection_off_inside_and_back_on_after() -> None:
    from stream_app.gctune import collection_paused

    assert gc.isenabled()
    with collection_paused():
        assert not gc.isenabled()
        with collection_paused():  # nested: the outer one turns it back on
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collection_paused():
        raise RuntimeError("a failed batch")
    assert gc.isenabled()


def test_collection_paused_leaves_a_collector_the_caller_disabled_disabled() -> None:
    from stream_app.gctune import collection_paused

    gc.disable()
    try:
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
