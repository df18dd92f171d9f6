"""When a child of `ragmesh up` that exited is started again, and when to give up.

Pure bookkeeping (no processes, no clock of its own) so the rules are tested exactly:
the delay doubles with each consecutive exit from `first_delay_s` up to `max_delay_s`; a
child that was healthy for `reset_after_s` before it exited starts again from the first
delay; `crash_loop_exits` exits within `crash_loop_window_s` are a crash loop.
"""

from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass, field

from ragmeshd import defaults


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float = defaults.RESTART_FIRST_DELAY_S
    max_delay_s: float = defaults.RESTART_MAX_DELAY_S
    reset_after_s: float = defaults.RESTART_RESET_AFTER_S
    crash_loop_exits: int = defaults.CRASH_LOOP_EXITS
    crash_loop_window_s: float = defaults.CRASH_LOOP_WINDOW_S


@dataclass(frozen=True)
class RestartDecision:
    """What to do after one exit."""

    # The how-manieth consecutive restart this is (1 after a healthy run).
    attempt: int
    # Seconds to wait before starting the child again.
    delay_s: float
    # True when this exit completes a crash loop: stop the mesh instead.
    crash_loop: bool


@dataclass
class RestartHistory:
    """One child's exits, as `ragmesh status` shows them and the policy needs them."""

    policy: RestartPolicy
    restarts: int = 0
    last_exit: str = ""
    _attempt: int = 0
    _exits: deque[float] = field(default_factory=deque)

    def record_exit(
        self, returncode: int, now: float, healthy_since: float | None
    ) -> RestartDecision:
        """Note an exit at `now` (time.monotonic()) of a child that had been healthy since
        `healthy_since` (None: never healthy since its last start)."""
        policy = self.policy
        self.last_exit = describe_exit(returncode)
        if healthy_since is not None and now - healthy_since >= policy.reset_after_s:
            self._attempt = 0
        self._attempt += 1
        self._exits.append(now)
        while self._exits and now - self._exits[0] > policy.crash_loop_window_s:
            self._exits.popleft()
        delay = min(policy.first_delay_s * 2 ** (self._attempt - 1), policy.max_delay_s)
        return RestartDecision(
            attempt=self._attempt,
            delay_s=delay,
            crash_loop=len(self._exits) >= policy.crash_loop_exits,
        )


def describe_exit(returncode: int) -> str:
    """`exit code 1` or `signal SIGKILL`, from a Popen returncode."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def exit_fields(returncode: int) -> dict[str, object]:
    """The exit as log fields: {"exit_code": N} or {"signal": "SIGKILL"}."""
    if returncode < 0:
        return {"signal": describe_exit(returncode).removeprefix("signal ")}
    return {"exit_code": returncode}
