"""The collector settings a run uses: raised thresholds and frozen long-lived objects, undone at the end."""

from __future__ import annotations

import gc

import pytest

from toolace.garbage_collection import OLDER_THRESHOLD, YOUNG_THRESHOLD, CollectorPauses


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
    collector = CollectorPauses()
    with collector:
        assert gc.get_threshold() == (YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
        at_start = gc.get_freeze_count()
        assert at_start > 0  # what was alive when the run started
        built = [[i] for i in range(1000)]  # a stage's long-lived state
        assert any(o is built for o in gc.get_objects())  # tracked, not frozen yet
        collector.freeze()
        assert not any(o is built for o in gc.get_objects())  # frozen: in none of the collector's generations
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0  # a later full collection scans (and frees) them again


def test_freezing_outside_the_context_does_nothing(collector_state):
    CollectorPauses().freeze()
    assert gc.get_freeze_count() == 0
    collector = CollectorPauses()
    with collector:
        pass
    collector.freeze()  # closed again
    assert gc.get_freeze_count() == 0


def test_nested_contexts_and_a_host_that_froze_first_keep_their_frozen_objects(collector_state):
    outer, inner = CollectorPauses(), CollectorPauses()
    with outer:
        with inner:
            pass
        assert gc.get_freeze_count() > 0  # the inner exit left the outer run's objects frozen
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD  # and its settings
        with outer:  # reentrant: the inner exit of the same object restores nothing
            pass
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD and gc.get_freeze_count() > 0
        inner.freeze()  # closed: nothing
        outer.freeze()  # still open: freezes
    assert gc.get_freeze_count() == 0
    host_state = [[i] for i in range(100)]
    gc.freeze()  # e.g. a server that freezes before it forks workers
    with CollectorPauses():
        pass
    assert gc.get_freeze_count() > 0
    # not unfrozen behind the host's back (checked by membership: reference counting may free other frozen objects)
    assert not any(o is host_state for o in gc.get_objects())


def test_a_frozen_cycle_that_becomes_garbage_is_collected_after_the_context(collector_state):
    import weakref

    class Node:
        pass

    collector = CollectorPauses()
    with collector:
        node = Node()
        node.self = node  # a reference cycle
        alive = weakref.ref(node)
        collector.freeze()
        del node
        gc.collect()
        assert alive() is not None  # frozen: the collector does not see it
    gc.collect()
    assert alive() is None


def test_garbage_at_a_freeze_is_collected_not_frozen(collector_state):
    import weakref

    class Node:
        pass

    collector = CollectorPauses()
    with collector:
        node = Node()
        node.self = node
        dead = weakref.ref(node)
        del node  # garbage before the stage boundary
        collector.freeze()
        assert dead() is None  # collected first, so it is not kept frozen until the run ends
