from sync.retry import MAX_WAIT_SECONDS, backoff_delay, budget_spent, wait_delay


def test_backoff_grows_and_is_capped():
    top = lambda: 1.0  # noqa: E731 - the largest jitter draw
    assert [backoff_delay(a, 1.0, 10.0, top) for a in range(6)] == [1, 2, 4, 8, 10, 10]


def test_backoff_has_a_floor():
    assert backoff_delay(3, 1.0, 60.0, lambda: 0.0) == 0.5


def test_wait_uses_the_provider_reset():
    assert wait_delay(1030.0, 1000.0, 0, 60) == 30.0


def test_wait_without_reset_doubles_from_the_floor():
    assert [wait_delay(None, 0, w, 60) for w in range(3)] == [60, 120, 240]


def test_wait_is_clamped():
    assert wait_delay(999.0, 1000.0, 0, 60) == 1.0
    assert wait_delay(1e12, 0, 0, 60) == MAX_WAIT_SECONDS


def test_the_retry_budget_is_spent_once_its_seconds_have_passed():
    assert not budget_spent(100.0, 101.9, 2.0)
    assert budget_spent(100.0, 102.0, 2.0)
