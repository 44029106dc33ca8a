from contextlib import ExitStack

import pytest

from app.config import Priority, QueueConfig
from app.errors import RateLimited, ServiceUnavailable
from app.guards.admission import Admission

BOUNDS = QueueConfig(max_in_flight=2, realtime_max_in_flight=3)


def test_batch_is_shed_first_when_the_queue_is_full() -> None:
    admission = Admission()
    with admission.admit("m", Priority.REALTIME, BOUNDS), admission.admit("m", Priority.BATCH, BOUNDS):
        with pytest.raises(RateLimited) as err, admission.admit("m", Priority.BATCH, BOUNDS):
            pass
        assert err.value.status == 429 and err.value.code == "shed"
        with admission.admit("m", Priority.REALTIME, BOUNDS):  # realtime still gets in
            assert admission.depth("m", Priority.REALTIME) == 2
        with admission.admit("other", Priority.BATCH, BOUNDS):  # bounds are per model
            pass
    assert admission.depth("m", Priority.BATCH) == 0 and admission.shed[("m", Priority.BATCH)] == 1


def test_realtime_is_shed_only_over_its_own_bound() -> None:
    admission = Admission()
    with ExitStack() as held:
        for _ in range(3):
            held.enter_context(admission.admit("m", Priority.REALTIME, BOUNDS))
        with pytest.raises(ServiceUnavailable), admission.admit("m", Priority.REALTIME, BOUNDS):
            pass
    assert admission.depth("m", Priority.REALTIME) == 0


def test_a_failure_inside_still_releases() -> None:
    admission = Admission()
    with pytest.raises(KeyError), admission.admit("m", Priority.BATCH, BOUNDS):
        raise KeyError
    assert admission.depth("m", Priority.BATCH) == 0
