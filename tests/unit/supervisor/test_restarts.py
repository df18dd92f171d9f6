"""The restart rules of `ragmesh up`: capped doubling backoff, reset after a healthy run,
crash loop after N exits within a window."""

from __future__ import annotations

from ragmeshd.supervisor.restarts import RestartHistory, RestartPolicy, describe_exit, exit_fields

POLICY = RestartPolicy(
    first_delay_s=1, max_delay_s=30, reset_after_s=60, crash_loop_exits=5, crash_loop_window_s=120
)


def test_delay_doubles_per_consecutive_exit_up_to_the_cap() -> None:
    history = RestartHistory(POLICY)
    # Exits 200 s apart never make a crash loop; never healthy, so the delay keeps growing.
    delays = [history.record_exit(1, 200.0 * i, None).delay_s for i in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert history.last_exit == "exit code 1"


def test_a_healthy_run_of_the_reset_time_starts_again_from_the_first_delay() -> None:
    history = RestartHistory(POLICY)
    assert history.record_exit(1, 0.0, None).attempt == 1
    assert history.record_exit(1, 10.0, healthy_since=5.0).attempt == 2  # healthy 5 s only
    decision = history.record_exit(-9, 200.0, healthy_since=130.0)  # healthy 70 s
    assert (decision.attempt, decision.delay_s) == (1, 1)
    assert history.last_exit == "signal SIGKILL"


def test_five_exits_within_two_minutes_are_a_crash_loop() -> None:
    history = RestartHistory(POLICY)
    decisions = [history.record_exit(1, t, None) for t in (0.0, 10.0, 30.0, 60.0, 100.0)]
    assert [d.crash_loop for d in decisions] == [False] * 4 + [True]


def test_exits_spread_over_more_than_the_window_are_not_a_crash_loop() -> None:
    history = RestartHistory(POLICY)
    decisions = [history.record_exit(1, t, None) for t in (0.0, 40.0, 80.0, 121.0, 125.0)]
    assert not any(d.crash_loop for d in decisions)


def test_exits_are_described_by_code_or_signal() -> None:
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(-15) == "signal SIGTERM"
    assert exit_fields(-9) == {"signal": "SIGKILL"}
    assert exit_fields(3) == {"exit_code": 3}
