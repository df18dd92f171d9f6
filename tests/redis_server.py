"""A real redis-server (Debian's package) for the cache tests, on a free loopback port,
without persistence, stopped by its own PID."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.helpers import ServerProcess, free_port, running_process


@contextmanager
def running_redis(directory: Path) -> Iterator[tuple[str, ServerProcess]]:
    """Start redis-server; yields its URL and process."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise AssertionError("redis-server is not installed (make test-tools installs it)")
    port = free_port()
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    args += ["--dir", str(directory)]
    with running_process(args, directory / f"redis-{port}.log", target=f"127.0.0.1:{port}") as p:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if p.popen.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"redis-server did not start:\n{p.log()}") from None
                time.sleep(0.05)
        client.close()
        yield url, p
