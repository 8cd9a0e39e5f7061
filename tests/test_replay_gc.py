"""A replay runs the garbage collector less often, and leaves its settings as they were."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from connector.dryrun.replay import _REPLAY_GC_THRESHOLD, _fewer_collections


@pytest.fixture
def threshold() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


@pytest.mark.usefixtures("threshold")
def test_thresholds_are_raised_for_the_run_and_restored_after() -> None:
    gc.set_threshold(700, 10, 10)
    with _fewer_collections():
        assert gc.get_threshold() == _REPLAY_GC_THRESHOLD
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.usefixtures("threshold")
def test_thresholds_are_restored_when_the_run_fails() -> None:
    gc.set_threshold(700, 10, 10)
    with pytest.raises(RuntimeError), _fewer_collections():
        raise RuntimeError("boom")
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.usefixtures("threshold")
def test_a_collector_set_to_collect_less_often_or_off_is_left_alone() -> None:
    gc.set_threshold(500_000, 10, 5000)
    with _fewer_collections():
        assert gc.get_threshold() == (500_000, 50, 5000)
    gc.set_threshold(0)
    with _fewer_collections():
        assert gc.get_threshold()[0] == 0
