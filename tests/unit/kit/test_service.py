"""The garbage collector settings every service process runs with."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from kizuna_kit.service import YOUNG_THRESHOLD, tune_garbage_collector


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    older = gc.get_threshold()[1:]
    survivor: list[list[str]] = [[]]  # a container the collector tracks

    tune_garbage_collector()

    assert gc.get_freeze_count() > 0
    assert not any(survivor is o for o in gc.get_objects())  # frozen: not walked
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *older)
