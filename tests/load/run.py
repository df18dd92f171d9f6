"""`make load`: run the Locust users headless against a mesh, for a fixed time, and keep
Locust's CSV and HTML reports plus what the mesh's processes were doing meanwhile.

    python -m tests.load.run [--users 100] [--spawn-rate 20] [--duration 60s]
                             [--cache-hit-ratio 0] [CLASS ...]

Uses the mesh running under the state folder (`make up`), or starts one for the run and stops
it afterwards. Everything goes to STATE_DIR/load/<UTC time>/: locust_stats.csv,
locust_stats_history.csv, locust_failures.csv, report.html, resources.csv (once a second:
the load average, each process's CPU %, each Envoy cluster's active and pending requests, the
embeddings queue depth of each replica) and summary.json, with a summary printed at the end:
the load average before and after, each process's CPU, the queues, Envoy's retries (every
failure the callers saw is in Locust's counts; retries inside the mesh are counted here), and
whether the run loaded the model (the embeddings queue held texts in most samples).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO_ROOT / "tests" / "load" / "locustfile.py"
MESH_START_TIMEOUT_S = 300.0
SAMPLE_INTERVAL_S = 1.0
# When the time is up, calls in flight may finish (and count) for this long: the calls' own
# timeout, so that every call started is reported.
STOP_TIMEOUT_S = 60
CLUSTER_GAUGES = ("upstream_rq_active", "upstream_rq_pending_active")
# Queues inside the services, from each replica's /metrics.
SERVICE_GAUGES = ("ragmesh_embeddings_queue_depth", "ragmesh_search_pool_connections_in_use")
SERVICE_GAUGES_SUFFIXES = tuple(name.removeprefix("ragmesh_") for name in SERVICE_GAUGES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--spawn-rate", type=float, default=20.0)
    parser.add_argument("--duration", default="60s", help="Locust's --run-time, e.g. 60s, 5m")
    parser.add_argument("--state-dir", type=Path, default=None, help="default: the settings'")
    parser.add_argument("--out", type=Path, default=None, help="default: STATE_DIR/load/<time>")
    parser.add_argument(
        "--cache-hit-ratio",
        type=float,
        default=0.0,
        help="share of calls with a repeated text (default 0: every text unique, so the model"
        " works for each call)",
    )
    parser.add_argument("classes", nargs="*", help="user classes (default: all)")
    args = parser.parse_args(argv)
    state_dir = (args.state_dir or _default_state_dir()).resolve()
    out = args.out or state_dir / "load" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    mesh = None if (state_dir / "mesh.json").exists() else _start_mesh(state_dir, out)
    try:
        return _run(args, state_dir, out)
    finally:
        if mesh is not None:
            mesh.send_signal(signal.SIGINT)
            mesh.wait(120)


def _default_state_dir() -> Path:
    from ragmeshd.settings import load_settings

    return load_settings().state_dir


def _start_mesh(state_dir: Path, out: Path) -> subprocess.Popen[bytes]:
    print(f"no mesh under {state_dir}: starting one for this run", flush=True)
    log = (out / "up.log").open("wb")
    env = {**os.environ, "RAGMESH_STATE_DIR": str(state_dir)}
    popen = subprocess.Popen(
        [sys.executable, "-m", "ragmeshd.cli", "up"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=REPO_ROOT,
        env=env,
    )
    deadline = time.monotonic() + MESH_START_TIMEOUT_S
    while not (state_dir / "mesh.json").exists():
        if popen.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the mesh did not start: see {out / 'up.log'}")
        time.sleep(0.5)
    return popen


def _fill(state_dir: Path) -> None:
    import grpc

    from tests.load.corpus import fill_collection

    state = json.loads((state_dir / "mesh.json").read_text())
    port = state["client_listen"].rpartition(":")[2]
    certs = state_dir / "certs"
    credentials = grpc.ssl_channel_credentials(
        (certs / "ca.pem").read_bytes(),
        (certs / "clients" / "client-key.pem").read_bytes(),
        (certs / "clients" / "client.pem").read_bytes(),
    )
    key = (state_dir / "keys" / "admin.key").read_text().strip()
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        if fill_collection(channel, (("authorization", f"Bearer {key}"),)):
            print("filled the load-test collection", flush=True)


def _run(args: argparse.Namespace, state_dir: Path, out: Path) -> int:
    _fill(state_dir)
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
        "--run-time", args.duration, "--stop-timeout", str(STOP_TIMEOUT_S),
        "--csv", str(out / "locust"), "--csv-full-history", "--html", str(out / "report.html"),
        "--state-dir", str(state_dir), "--cache-hit-ratio", str(args.cache_hit_ratio),
        "--only-summary", *args.classes,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    state = json.loads((state_dir / "mesh.json").read_text())
    load_before = os.getloadavg()
    retries_before = _envoy_retries(state["admin_listen"])
    locust = subprocess.Popen(command, cwd=REPO_ROOT, env=env)
    processes = {name: psutil.Process(pid) for name, pid in state["pids"].items()}
    processes["locust"] = psutil.Process(locust.pid)
    metrics = {r["service"] + f"-{r['index']}": r["metrics_listen"] for r in state["replicas"]}
    rows = _sample_until_done(locust, processes, state["admin_listen"], metrics)
    _write_resources(out / "resources.csv", rows)
    retries = {
        cluster: count - retries_before.get(cluster, 0)
        for cluster, count in _envoy_retries(state["admin_listen"]).items()
    }
    summary = _summary_numbers(rows, load_before, os.getloadavg(), retries, args)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(_summary(rows))
    print(_verdict(summary))
    print(f"reports: {out}/ (report.html, locust_stats.csv, resources.csv)")
    return int(locust.returncode)


# psutil measures CPU between two calls on the same Process object: keep one per pid.
_known: dict[int, psutil.Process] = {}


def _cpu(process: psutil.Process) -> float:
    """CPU % of a process and its children (the embeddings model runs in a child)."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        for member in [process, *process.children(recursive=True)]:
            known = _known.setdefault(member.pid, member)
            with contextlib.suppress(psutil.Error):
                total += known.cpu_percent(None)
    return total


def _envoy_retries(admin: str) -> dict[str, float]:
    """Envoy's retries per cluster so far (upstream_rq_retry)."""
    url = f"http://{admin}/stats?format=json&filter=upstream_rq_retry$"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            stats = json.loads(response.read())["stats"]
    except OSError:
        return {}
    return {
        entry["name"].removeprefix("cluster.").removesuffix(".upstream_rq_retry"): float(
            entry["value"]
        )
        for entry in stats
        if "value" in entry and entry["name"].startswith("cluster.")
    }


def _envoy_gauges(admin: str) -> dict[str, float]:
    url = f"http://{admin}/stats?format=json&filter=upstream_rq_(pending_)?active$"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            stats = json.loads(response.read())["stats"]
    except OSError:
        return {}
    return {
        entry["name"].removeprefix("cluster."): float(entry["value"])
        for entry in stats
        if "value" in entry and entry["name"].startswith("cluster.")
    }


def _service_gauges(metrics: dict[str, str]) -> dict[str, float]:
    values = {}
    for replica, listen in metrics.items():
        if not listen:
            continue
        try:
            with urllib.request.urlopen(f"http://{listen}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in SERVICE_GAUGES:
                values[f"{replica}.{name.removeprefix('ragmesh_')}"] = float(value)
    return values


def _sample_until_done(
    locust: subprocess.Popen[bytes],
    processes: dict[str, psutil.Process],
    admin: str,
    metrics: dict[str, str],
) -> list[dict[str, float]]:
    for process in processes.values():
        _cpu(process)  # the first reading starts psutil's interval
    rows = []
    started = time.monotonic()
    while locust.poll() is None:
        time.sleep(SAMPLE_INTERVAL_S)
        row = {"t_s": round(time.monotonic() - started, 1), "load_1m": os.getloadavg()[0]}
        row.update({f"cpu_{name}": round(_cpu(p), 1) for name, p in processes.items()})
        row.update(_envoy_gauges(admin))
        row.update(_service_gauges(metrics))
        rows.append(row)
    return rows


def _write_resources(path: Path, rows: list[dict[str, float]]) -> None:
    columns = sorted({key for row in rows for key in row}, key=lambda k: (k != "t_s", k))
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


QUEUE_SUFFIX = ".embeddings_queue_depth"


def _summary_numbers(
    rows: list[dict[str, float]],
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    retries: dict[str, float],
    args: argparse.Namespace,
) -> dict[str, Any]:
    steady = rows[len(rows) // 5 :] or rows
    queue_keys = sorted({k for r in rows for k in r if k.endswith(QUEUE_SUFFIX)})
    # A sample loads the model when some replica's queue holds texts.
    loaded = [any(r.get(k, 0) > 0 for k in queue_keys) for r in steady]
    cpu_keys = sorted({k for r in steady for k in r if k.startswith("cpu_")})
    return {
        "users": args.users,
        "duration": args.duration,
        "cache_hit_ratio": args.cache_hit_ratio,
        "cpus": psutil.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in load_after],
        "samples": len(steady),
        "queue_depth_metrics": queue_keys,
        "samples_with_embeddings_queue": sum(loaded),
        "share_with_embeddings_queue": (sum(loaded) / len(loaded)) if loaded else 0.0,
        "mean_cpu_percent": {
            k.removeprefix("cpu_"): round(sum(r.get(k, 0) for r in steady) / len(steady), 1)
            for k in cpu_keys
        },
        "envoy_retries": retries,
    }


def _verdict(summary: dict[str, Any]) -> str:
    before = " ".join(f"{v:.2f}" for v in summary["load_average_before"])
    after = " ".join(f"{v:.2f}" for v in summary["load_average_after"])
    lines = [
        f"load average before: {before}; after: {after} ({summary['cpus']} CPUs)",
        f"Envoy retries during the run: {summary['envoy_retries'] or 'none'}",
    ]
    share = float(summary["share_with_embeddings_queue"])
    if not summary["queue_depth_metrics"]:
        lines.append("embeddings queue depth: not measured (no replica serves /metrics)")
    elif share > 0.5:
        lines.append(f"the run loaded the model: embeddings queue > 0 in {share:.0%} of samples")
    else:
        lines.append(
            f"the run did NOT load the model: embeddings queue > 0 in only {share:.0%} of"
            " samples (more users, or a lower --cache-hit-ratio)"
        )
    return "\n".join(lines)


def _summary(rows: list[dict[str, float]]) -> str:
    """Mean CPU per process (100 = one core) and the peak queue per Envoy cluster."""
    if not rows:
        return "no samples"
    steady = rows[len(rows) // 5 :] or rows  # leave the ramp-up out
    lines = ["", "process            mean CPU %   (100 = one core; the machine has "
             f"{psutil.cpu_count()} cores)"]  # fmt: skip
    cpu = {k: sum(r.get(k, 0) for r in steady) / len(steady) for k in steady[0] if "cpu_" in k}
    load = [r.get("load_1m", 0) for r in steady]
    lines.append(f"  (load average, 1 min: mean {sum(load) / len(load):.2f}, peak {max(load):.2f})")
    for key, value in sorted(cpu.items(), key=lambda item: -item[1]):
        lines.append(f"  {key.removeprefix('cpu_'):<18} {value:7.1f}")
    queues = sorted({k for r in rows for k in r if k.endswith(SERVICE_GAUGES_SUFFIXES)})
    for key in queues:
        values = [r.get(key, 0) for r in steady]
        lines.append(f"  {key:<44} mean {sum(values) / len(values):7.1f}  peak {max(values):6.0f}")
    lines.append("envoy cluster      peak active  peak pending")
    clusters = sorted({k.rsplit(".", 1)[0] for r in rows for k in r if "upstream_rq" in k})
    for cluster in clusters:
        active = max(r.get(f"{cluster}.upstream_rq_active", 0) for r in rows)
        pending = max(r.get(f"{cluster}.upstream_rq_pending_active", 0) for r in rows)
        lines.append(f"  {cluster:<18} {active:11.0f}  {pending:12.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
