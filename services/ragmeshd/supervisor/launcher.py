"""Bringing the whole mesh up and down: certificates, Envoy's config, processes in order."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shlex
from collections.abc import Awaitable, Callable

from ragmeshd.envoy.admin import clusters_healthy, stop_taking_calls
from ragmeshd.envoy.config import envoy_command, validate_config, write_config
from ragmeshd.envoy.security import admin_socket
from ragmeshd.envoy.topology import Topology
from ragmeshd.executables import grpcurl_path, ragmesh_argv
from ragmeshd.pki.certs import ensure_certificates
from ragmeshd.pki.crl import ensure_crl
from ragmeshd.pki.passphrase import forget_passphrase, protect_ca_key, use_settings_passphrase
from ragmeshd.postgres.embedded import EmbeddedPostgres, accepts_connections
from ragmeshd.progress import Progress
from ragmeshd.runtime.api import RATELIMIT_SERVICE
from ragmeshd.runtime.health_client import SERVING, check_health
from ragmeshd.runtime.keystore import DEFAULT_KEY_NAME, KeyStore
from ragmeshd.runtime.private_files import secure_state_dir
from ragmeshd.runtime.tls import channel_credentials
from ragmeshd.settings import Settings
from ragmeshd.state import MeshLayout
from ragmeshd.supervisor.http_adapter import OPENAI, adapter_env, https_probe
from ragmeshd.supervisor.plan import (
    SERVICE_ORDER,
    MeshState,
    Replica,
    plan_replicas,
    split_address,
)
from ragmeshd.supervisor.processes import (
    LogRotation,
    ManagedProcess,
    ProcessSpec,
    Supervisor,
)
from ragmeshd.supervisor.prometheus import prometheus_config
from ragmeshd.supervisor.restarts import RestartPolicy
from ragmeshd.supervisor.topology import mesh_topology, runs_openai

# The setting that points each service at the service it calls.
_DEPENDENCY_TARGET = {
    "search": "RAGMESH_SEARCH__EMBEDDINGS_TARGET",
    "coordinator": "RAGMESH_COORDINATOR__SEARCH_TARGET",
}
# The services that cannot start without the database.
_NEEDS_DATABASE = ("search", "coordinator")

_log = logging.getLogger("ragmesh.supervisor")


class MeshLauncher:
    """Owns every process `ragmesh up` starts."""

    def __init__(
        self,
        settings: Settings,
        layout: MeshLayout,
        counts: dict[str, int],
        *,
        llm_url: str = "",
        llm_api_key_file: str = "",
    ) -> None:
        self.settings = settings
        # `up --llm URL`: the coordinator's REMOTE route is this OpenAI-compatible API (with
        # the key in llm_api_key_file); `--llm local` runs the llm service (counts["llm"]).
        self.llm_url = llm_url
        self.llm_api_key_file = llm_api_key_file
        self.layout = layout
        # As root the embedded PostgreSQL runs as its own user and must pass through.
        secure_state_dir(layout.state_dir, traversable=os.geteuid() == 0)
        # Only `up` (and `ragmesh certs`) may use the CA key, and only here: every certificate
        # is issued, the CA key encrypted and the revocation list made before any service
        # starts; then the passphrase is dropped, so no child inherits it.
        use_settings_passphrase(settings)
        self.certs = ensure_certificates(layout.certs_dir)
        protect_ca_key(settings, layout.certs_dir)
        # The revocation list Envoy checks client certificates against (`certs revoke`).
        ensure_crl(layout.certs_dir)
        forget_passphrase(settings)
        # The user's key and each service's own, made before any server starts.
        keys = KeyStore(layout.keys_dir)
        self.admin_key_file = keys.ensure_named_key(DEFAULT_KEY_NAME)
        for service in SERVICE_ORDER:
            keys.ensure_named_key(f"service-{service}")
        self.replicas = plan_replicas(settings, counts)
        mesh = settings.mesh
        self.supervisor = Supervisor(
            RestartPolicy(
                first_delay_s=mesh.restart_first_delay_s,
                max_delay_s=mesh.restart_max_delay_s,
                reset_after_s=mesh.restart_reset_after_s,
                crash_loop_exits=mesh.crash_loop_exits,
                crash_loop_window_s=mesh.crash_loop_window_s,
            ),
            # `ragmesh status` reads the new pids, restart counts and last exits.
            on_change=self.write_state,
            rotation=LogRotation(layout.logs_dir, mesh.log_max_bytes, mesh.log_keep),
        )
        # Health probes go straight to each replica, as Envoy's own would.
        self._probe_credentials = channel_credentials(
            self.certs.ca, self.certs.envoy_upstream.cert, self.certs.envoy_upstream.key
        )

    @property
    def services(self) -> list[str]:
        return list(dict.fromkeys(replica.service for replica in self.replicas))

    def topology(self) -> Topology:
        return mesh_topology(self.settings, self.replicas, self.certs, self.layout)

    @property
    def _runs_openai(self) -> bool:
        return runs_openai(self.services)

    def _openai_spec(self) -> ProcessSpec:
        listen = self.settings.openai.listen
        return ProcessSpec(
            name=f"{OPENAI}-0",
            argv=ragmesh_argv("serve", OPENAI),
            log_path=self.layout.log_path(f"{OPENAI}-0"),
            is_ready=functools.partial(https_probe, listen, self.certs),
            env=adapter_env(self.settings),
        )

    def child_env(self, replica: Replica) -> dict[str, str]:
        """Settings a server process gets from `up`, as RAGMESH_* variables."""
        env = {
            "RAGMESH_STATE_DIR": str(self.settings.state_dir),
            "RAGMESH_MESH__TLS": "true",
            "RAGMESH_SERVER__REQUIRE_API_KEY": "true",
            "RAGMESH_SERVER__SHUTDOWN_DRAIN_S": str(self.settings.mesh.drain_s),
            f"RAGMESH_{replica.service.upper()}__LISTEN": replica.target,
            f"RAGMESH_{replica.service.upper()}__METRICS_LISTEN": replica.metrics_listen,
        }
        # Service-to-service calls go through Envoy's internal listener.
        dependency_target = _DEPENDENCY_TARGET.get(replica.service)
        if dependency_target:
            env[dependency_target] = self.settings.mesh.internal_listen
        if replica.service == "coordinator":
            # The LOCAL route: the llm service, through Envoy like every call between services.
            if "llm" in self.services:
                env["RAGMESH_COORDINATOR__LLM_TARGET"] = self.settings.mesh.internal_listen
            if self.llm_url:
                env["RAGMESH_COORDINATOR__REMOTE_URL"] = self.llm_url
                env["RAGMESH_COORDINATOR__REMOTE_API_KEY_FILE"] = self.llm_api_key_file
        return env

    def _health_probe(self, replica: Replica) -> Callable[[], Awaitable[bool]]:
        async def is_serving() -> bool:
            status = await check_health(
                replica.target,
                replica.grpc_service,
                credentials=self._probe_credentials,
                server_name_of=replica.service,
            )
            return status == SERVING

        return is_serving

    def _postgres_spec(self) -> ProcessSpec | None:
        """The embedded PostgreSQL, when a service needs it and no external DSN is set."""
        search = self.settings.search
        needs_database = set(_NEEDS_DATABASE) & set(self.services)
        if not needs_database or search.pg.dsn or search.backend != "pgvector":
            return None
        dsn = EmbeddedPostgres(self.settings.state_dir).dsn()
        return ProcessSpec(
            name="postgres",
            argv=ragmesh_argv("serve", "postgres"),
            log_path=self.layout.log_path("postgres"),
            is_ready=functools.partial(accepts_connections, dsn),
            env={"RAGMESH_STATE_DIR": str(self.settings.state_dir)},
        )

    def _ratelimit_spec(self) -> ProcessSpec:
        """Envoy's rate-limit service (per-key limits, ragmeshd/ratelimit/), before Envoy."""
        target = f"unix:{self.layout.ratelimit_socket}"

        async def is_serving() -> bool:
            return await check_health(target, RATELIMIT_SERVICE) == SERVING

        return ProcessSpec(
            name="ratelimit",
            argv=ragmesh_argv("serve", "ratelimit"),
            log_path=self.layout.log_path("ratelimit"),
            is_ready=is_serving,
            env={"RAGMESH_STATE_DIR": str(self.settings.state_dir)},
        )

    def specs(self) -> list[ProcessSpec]:
        """Every process, in start order: each waits for the previous to be healthy."""
        postgres = self._postgres_spec()
        specs = [] if postgres is None else [postgres]
        specs += [
            ProcessSpec(
                name=replica.name,
                argv=ragmesh_argv("serve", replica.service),
                log_path=self.layout.log_path(replica.name),
                is_ready=self._health_probe(replica),
                env=self.child_env(replica),
                # Search and the coordinator give up starting when the database stays away;
                # restarted, they wait for it instead of counting towards a crash loop.
                depends_on=(
                    [postgres.name]
                    if postgres is not None and replica.service in _NEEDS_DATABASE
                    else []
                ),
            )
            for replica in self.replicas
        ]
        if self._runs_openai:
            specs.append(self._openai_spec())
        specs.append(self._ratelimit_spec())
        admin = self.settings.mesh.admin_listen
        services = self.services + ([OPENAI] if self._runs_openai else [])

        async def envoy_ready() -> bool:
            return await clusters_healthy(admin, services)

        specs.append(
            ProcessSpec(
                name="envoy",
                argv=envoy_command(self.layout.envoy_config),
                log_path=self.layout.log_path("envoy"),
                is_ready=envoy_ready,
            )
        )
        return specs

    async def start(self, timeout_s: float) -> None:
        config = write_config(self.topology(), self.layout.envoy_config)
        await asyncio.to_thread(validate_config, config)
        specs = self.specs()
        with Progress("starting the mesh", total=len(specs), unit="processes") as progress:
            await self.supervisor.start_in_order(specs, timeout_s, progress)
        self.layout.prometheus_config.write_text(
            prometheus_config(self.replicas, self.settings.mesh.admin_listen)
        )
        self.write_state()

    def write_state(self) -> None:
        """mesh.json for `ragmesh status`: rewritten whenever a child restarts."""
        processes = self.supervisor.processes
        MeshState(
            replicas=self.replicas,
            client_listen=self.settings.mesh.client_listen,
            admin_listen=self.settings.mesh.admin_listen,
            pids={process.spec.name: process.pid for process in processes},
            restarts={process.spec.name: process.history.restarts for process in processes},
            last_exit={process.spec.name: process.history.last_exit for process in processes},
            admin_socket=str(admin_socket(self.settings.state_dir)),
        ).write(self.layout.mesh_state)

    async def stop(self) -> None:
        """Envoy's client listener first: it takes no new connection, and the calls it had
        taken finish while every server is still up (up to server.shutdown_grace_s); then the
        servers, all at once (each drains: NOT_SERVING, in-flight calls finish); then Envoy;
        then the database. Stopping the servers first lost calls on a loaded machine: Envoy
        still sent calls (or a retry after a per-try timeout) to a replica that had already
        closed its port, and with one replica there is no other to send them to."""
        self.layout.mesh_state.unlink(missing_ok=True)
        by_name = {process.spec.name: process for process in self.supervisor.processes}
        envoy = by_name.get("envoy")
        if envoy is not None and envoy.popen.poll() is None:
            try:
                left = await stop_taking_calls(
                    str(admin_socket(self.settings.state_dir)),
                    self.settings.server.shutdown_grace_s,
                )
                _log.info("client listener stopped", extra={"calls_in_flight": left})
            except OSError as exc:  # Envoy going away on its own: the servers still drain
                _log.warning("could not stop Envoy's client listener: %s", exc)
        servers = [by_name[r.name] for r in self.replicas if r.name in by_name]
        rest: list[ManagedProcess] = [
            p for p in reversed(self.supervisor.processes) if p not in servers
        ]
        await self.supervisor.stop(servers)
        for process in rest:
            await self.supervisor.stop([process])

    def banner(self) -> str:
        certs = self.certs
        host, port = split_address(self.settings.mesh.client_listen)
        # A wildcard listen address is reached from this host as 127.0.0.1 (no bind here).
        wildcard = host in ("0.0.0.0", "::")  # nosec B104
        endpoint = f"{'127.0.0.1' if wildcard else host}:{port}"
        # The banner names the key's file, never the key: banners end up in terminals' scroll
        # back, CI logs and journals. The shell reads the file when the command runs.
        key_file = shlex.quote(str(self.admin_key_file))
        tls_flags = (
            f"-cacert {certs.ca} -cert {certs.client.cert} -key {certs.client.key}"
            f' -H "authorization: Bearer $(cat {key_file})"'
        )
        grpcurl = grpcurl_path()
        lines = [
            "",
            "ragmesh is up.",
            f"  endpoint     {endpoint}  (Envoy, mutual TLS; listening on {host}:{port})",
            f"  CA           {certs.ca}",
            f"  client cert  {certs.client.cert}",
            f"  client key   {certs.client.key}",
            f"  API key      {self.admin_key_file}  (`ragmesh keys` manages keys)",
            f"  HTTP/JSON    https://{endpoint}/v1/...  (every RPC; docs/api/)",
            *(
                [f"  OpenAI API   https://{endpoint}/v1  (embeddings, models, chat/completions)"]
                if self._runs_openai
                else []
            ),
            f"  Envoy admin  {admin_socket(self.settings.state_dir)} (unix socket, owner only);"
            f" read-only stats on http://{self.settings.mesh.admin_listen}/stats",
            f"  Prometheus   {self.layout.prometheus_config}  (scrape config for this mesh)",
            f"  logs         {self.layout.logs_dir}/",
            "",
            "  replicas:",
            *(f"    {r.name:<16} {r.target}  {r.grpc_service}" for r in self.replicas),
            "",
            "Try it:",
            f"  {grpcurl} {tls_flags} {endpoint} list",
            f'  {grpcurl} {tls_flags} -d \'{{"inputs": ["hello mesh"]}}\' {endpoint}'
            f" ragmesh.embeddings.v1.EmbeddingsService/Embed",
            "",
            "`ragmesh status` shows health and Envoy's counters. Ctrl-C stops everything.",
            "",
        ]
        return "\n".join(lines)
