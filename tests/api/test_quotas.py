"""QueueBounds: the count of queued jobs it checks submits against, at most a second old."""

from __future__ import annotations

import pytest

from tests.api.conftest import BACKENDS, DEAD_DATABASE_URL, StackFactory
from visionq.api.quotas import QueueBounds
from visionq.errors import DatabaseUnavailable, ErrorCode, QueueFull, Throttled
from visionq.store import ImageIn, JobStore, create_engine_for


class Ticks:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _queue(store: JobStore, client: str | None, data: bytes) -> None:
    image = ImageIn.of(data, content_type="image/jpeg", width=1280, height=720)
    store.create(image=image, model="yolov4-tiny", params={}, client=client)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jobs_other_processes_queued_are_seen_a_second_later_and_this_ones_at_once(
    make_stack: StackFactory, samples: dict[str, bytes], backend: str
) -> None:
    store = make_stack(backend).store
    ticks = Ticks()
    bounds = QueueBounds(store, total=3, per_client=2, clock=ticks)
    _queue(store, "a", samples["zidane.jpg"])
    bounds.admit("a")  # counts: a 1

    _queue(store, None, samples["zidane.jpg"])  # another API process
    _queue(store, None, samples["zidane.jpg"])
    bounds.admit("b")  # the count is younger than a second: 1 queued as far as it knows
    bounds.queued("a")  # this process queued one more for a: 2 of a's 2
    with pytest.raises(Throttled) as throttled:
        bounds.admit("a")
    assert throttled.value.code is ErrorCode.TOO_MANY_QUEUED

    ticks.now += 1.0
    with pytest.raises(QueueFull):  # counted again: 3 queued (a 1, others 2), as many as it takes
        bounds.admit("b")


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_count_groups_queued_jobs_by_client(
    make_stack: StackFactory, samples: dict[str, bytes], backend: str
) -> None:
    store = make_stack(backend).store
    for client in ("a", "a", "b", None):
        _queue(store, client, samples["zidane.jpg"])
    assert store.queued_by_client() == {"a": 2, "b": 1, None: 1}
    assert sum(store.queued_by_client().values()) == store.count_queued()


def test_without_a_bound_that_applies_the_database_is_never_asked() -> None:
    dead = JobStore(create_engine_for(DEAD_DATABASE_URL))  # any query would raise DatabaseUnavailable
    QueueBounds(dead, total=None, per_client=None).admit("a")
    QueueBounds(dead, total=None, per_client=5).admit(None)  # no key, no per-key bound
    with pytest.raises(DatabaseUnavailable):
        QueueBounds(dead, total=None, per_client=5).admit("a")
