"""Free loopback ports for the meshes and servers that the benches and the tests start.

`bind(("127.0.0.1", 0))` hands out a port from the kernel's ephemeral range, the same range
it draws every outgoing connection's local port from. Between picking such a port and the
server binding it (the model processes load for seconds first) a client socket can take it,
and the server then fails to start: "Failed to bind to address". Ports below that range are
never given to outgoing connections, so one picked there stays free unless another server
binds it, and this process never hands the same one out twice.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Linux's default start of the ephemeral range, where the file above cannot be read.
DEFAULT_EPHEMERAL_START = 32768
# Below this are the well-known and commonly configured ports.
LOWEST_PORT = 10000
ATTEMPTS = 2000

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """A loopback TCP port that is free now, outside the ephemeral range."""
    return free_port_run(1, 1)


def free_port_run(count: int, step: int) -> int:
    """A base port whose `count` ports base + i * step are all free (a service's replicas)."""
    upper = _ephemeral_start() - 1 - (count - 1) * step
    if upper - LOWEST_PORT < ATTEMPTS:
        return _kernel_port()
    with _lock:
        for _ in range(ATTEMPTS):
            base = random.randint(LOWEST_PORT, upper)  # nosec B311 - not a secret
            run = [base + i * step for i in range(count)]
            if not _handed_out.intersection(run) and all(map(is_free, run)):
                _handed_out.update(run)
                return base
    raise RuntimeError(f"no {count} free loopback ports {step} apart below {upper}")


def _ephemeral_start() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_START


def _kernel_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind `port` on `host` now."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
