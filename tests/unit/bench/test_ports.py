"""Ports for test and bench servers come from below the ephemeral range, never twice."""

from __future__ import annotations

import socket

from ragmeshd.bench import ports


def test_ports_are_below_the_ephemeral_range_and_never_handed_out_twice() -> None:
    picked = [ports.free_port() for _ in range(200)]
    assert len(set(picked)) == len(picked)
    assert all(ports.LOWEST_PORT <= port < ports._ephemeral_start() for port in picked)


def test_a_run_of_replica_ports_is_free_and_spaced_by_the_step() -> None:
    base = ports.free_port_run(3, 7)
    for port in (base, base + 7, base + 14):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_a_server_holds_is_not_handed_out() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        assert not ports.is_free(held.getsockname()[1])
