"""What every bench hands back: the text people read and the same numbers as one JSON
document (`ragmesh bench ... --json`), with the machine and its load before and after."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any


def machine() -> dict[str, Any]:
    """The CPUs and the load average now (1, 5 and 15 minutes)."""
    return {"cpus": os.cpu_count(), "load_average": [round(v, 2) for v in os.getloadavg()]}


def plain(value: Any) -> Any:
    """Dataclasses (nested too) as dictionaries, for JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


@dataclass
class BenchReport:
    text: str
    numbers: dict[str, Any] = field(default_factory=dict)
    machine_before: dict[str, Any] = field(default_factory=machine)

    def document(self, bench: str) -> dict[str, Any]:
        return {
            "bench": bench,
            "machine_before": self.machine_before,
            "machine_after": machine(),
            **{key: plain(value) for key, value in self.numbers.items()},
        }
