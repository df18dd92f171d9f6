"""Reading the YAML templates in envoy/ and filling them in (durations in Envoy's spelling)."""

from __future__ import annotations

import ipaddress
import json
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

import yaml

# envoy/ at the top of the repository, through the symlink that also ships it in the wheel.
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def render(template_name: str, /, **values: Any) -> Any:
    """Fill a template's ${placeholders} with JSON values and parse the YAML."""
    text = Template(template(template_name)).substitute(
        {key: json.dumps(value) for key, value in values.items()}
    )
    return yaml.safe_load(text)


@cache
def template(name: str) -> str:
    return (TEMPLATES_DIR / name).read_text()


def duration(seconds: float) -> str:
    """A protobuf Duration in its JSON form: 1.0 -> "1s", 0.025 -> "0.025s"."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text or '0'}s"


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
