"""The collector settings a run uses: raised thresholds and frozen long-lived objects, undone at the end."""

from __future__ import annotations

import gc

import pytest

from toolace.garbage_collection import (
    OLDER_THRESHOLD,
    YOUNG_THRESHOLD,
    fewer_collector_pauses,
    freeze_long_lived,
)


@pytest.fixture
def collector_state():
    """Leaves the process's collector as the test found it."""
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    gc.unfreeze()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()
    if frozen:
        gc.freeze()


def test_the_context_raises_the_thresholds_freezes_and_undoes_both(collector_state):
    gc.set_threshold(700, 10, 10)
    with fewer_collector_pauses():
        assert gc.get_threshold() == (YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
        at_start = gc.get_freeze_count()
        assert at_start > 0  # what was alive when the run started
        built = [[i] for i in range(1000)]  # a stage's long-lived state
        assert any(o is built for o in gc.get_objects())  # tracked, not frozen yet
        freeze_long_lived()
        assert not any(o is built for o in gc.get_objects())  # frozen: in none of the collector's generations
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0  # a later full collection scans (and frees) them again


def test_freezing_outside_the_context_does_nothing(collector_state):
    freeze_long_lived()
    assert gc.get_freeze_count() == 0


def test_nested_contexts_and_a_host_that_froze_first_keep_their_frozen_objects(collector_state):
    with fewer_collector_pauses():
        with fewer_collector_pauses():
            pass
        assert gc.get_freeze_count() > 0  # the inner exit left the outer run's objects frozen
        freeze_long_lived()  # still inside the outer context: freezes
    assert gc.get_freeze_count() == 0
    host_state = [[i] for i in range(100)]
    gc.freeze()  # e.g. a server that freezes before it forks workers
    with fewer_collector_pauses():
        pass
    assert gc.get_freeze_count() > 0
    # not unfrozen behind the host's back (checked by membership: reference counting may free other frozen objects)
    assert not any(o is host_state for o in gc.get_objects())


def test_a_frozen_cycle_that_becomes_garbage_is_collected_after_the_context(collector_state):
    import weakref

    class Node:
        pass

    with fewer_collector_pauses():
        node = Node()
        node.self = node  # a reference cycle
        alive = weakref.ref(node)
        freeze_long_lived()
        del node
        gc.collect()
        assert alive() is not None  # frozen: the collector does not see it
    gc.collect()
    assert alive() is None


def test_garbage_at_a_freeze_is_collected_not_frozen(collector_state):
    import weakref

    class Node:
        pass

    with fewer_collector_pauses():
        node = Node()
        node.self = node
        dead = weakref.ref(node)
        del node  # garbage before the stage boundary
        freeze_long_lived()
        assert dead() is None  # collected first, so it is not kept frozen until the run ends
