"""The Prometheus scrape configuration for a mesh as `ragmesh up` lays it out.

`ragmesh up` writes it to STATE_DIR/prometheus.yml for the mesh it started;
docs/observability/prometheus.yml is the same rendering for the default layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from ragmeshd.supervisor.plan import Replica

SCRAPE_INTERVAL_S = 5


def prometheus_config(
    replicas: Sequence[Replica], envoy_admin: str, scrape_interval_s: float = SCRAPE_INTERVAL_S
) -> str:
    """One job per service (each replica a target, labelled with its replica name), plus
    Envoy's admin /stats/prometheus."""
    jobs = []
    for service in dict.fromkeys(replica.service for replica in replicas):
        targets = [
            {"targets": [replica.metrics_listen], "labels": {"replica": replica.name}}
            for replica in replicas
            if replica.service == service and replica.metrics_listen
        ]
        if targets:
            jobs.append({"job_name": f"ragmesh-{service}", "static_configs": targets})
    jobs.append(
        {
            "job_name": "envoy",
            "metrics_path": "/stats/prometheus",
            "static_configs": [{"targets": [envoy_admin]}],
        }
    )
    config = {
        "global": {
            "scrape_interval": f"{scrape_interval_s}s",
            "evaluation_interval": f"{scrape_interval_s}s",
        },
        "scrape_configs": jobs,
    }
    header = "# Rendered by ragmeshd/supervisor/prometheus.py for the mesh `ragmesh up` starts.\n"
    return header + yaml.safe_dump(config, sort_keys=False)
