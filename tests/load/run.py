"""`make load`: run the Locust users headless against a mesh, for a fixed time, and keep
Locust's CSV and HTML reports plus what the mesh's processes were doing meanwhile.

    python -m tests.load.run [--users 100] [--spawn-rate 20] [--duration 60s] [CLASS ...]

Uses the mesh running under the state folder (`make up`), or starts one for the run and stops
it afterwards. Everything goes to STATE_DIR/load/<UTC time>/: locust_stats.csv,
locust_stats_history.csv, locust_failures.csv, report.html, and resources.csv (once a second:
each process's CPU %, and each Envoy cluster's active and pending requests), with a summary
printed at the end to name the bottleneck from measurements.
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
        "--state-dir", str(state_dir), "--only-summary", *args.classes,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    state = json.loads((state_dir / "mesh.json").read_text())
    locust = subprocess.Popen(command, cwd=REPO_ROOT, env=env)
    processes = {name: psutil.Process(pid) for name, pid in state["pids"].items()}
    processes["locust"] = psutil.Process(locust.pid)
    metrics = {r["service"] + f"-{r['index']}": r["metrics_listen"] for r in state["replicas"]}
    rows = _sample_until_done(locust, processes, state["admin_listen"], metrics)
    _write_resources(out / "resources.csv", rows)
    print(_summary(rows))
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
        row = {"t_s": round(time.monotonic() - started, 1)}
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


def _summary(rows: list[dict[str, float]]) -> str:
    """Mean CPU per process (100 = one core) and the peak queue per Envoy cluster."""
    if not rows:
        return "no samples"
    steady = rows[len(rows) // 5 :] or rows  # leave the ramp-up out
    lines = ["", "process            mean CPU %   (100 = one core; the machine has "
             f"{psutil.cpu_count()} cores)"]  # fmt: skip
    cpu = {k: sum(r.get(k, 0) for r in steady) / len(steady) for k in steady[0] if "cpu_" in k}
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
