"""Envoy's own refusals go to an audit file of their own (ragmeshd/envoy/refusal_log.py): three
file loggers on every listener, one per kind of refusal, that Envoy itself accepts. What they
write is checked through a real mesh (tests/e2e/test_credentials.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from ragmeshd.envoy.config import render_config, validate_config, write_config
from ragmeshd.envoy.refusal_log import REFUSALS
from ragmeshd.pki.certs import CertificatePaths, ensure_certificates
from ragmeshd.settings import Settings
from ragmeshd.state import MeshLayout
from ragmeshd.supervisor.plan import available_services, plan_replicas
from ragmeshd.supervisor.topology import mesh_topology
from tests.unit.envoy.test_http_gateway import gateway, manager, topology

FILE_LOGGER = "envoy.access_loggers.file"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificatePaths:
    return ensure_certificates(tmp_path_factory.mktemp("refusals") / "certs")


def test_each_listener_appends_every_kind_of_refusal_to_one_file(
    certs: CertificatePaths, tmp_path: Path
) -> None:
    audit_file = tmp_path / "logs" / "envoy-audit.log"
    limited = replace(
        topology(certs, gateway()), ratelimit_socket=tmp_path / "rl.sock", refusal_log=audit_file
    )
    config = yaml.safe_load(render_config(limited))
    for listener in ("client", "internal"):
        loggers = [
            logger
            for logger in manager(config, listener)["access_log"]
            if logger["name"] == FILE_LOGGER
        ]
        assert len(loggers) == len(REFUSALS)
        assert {logger["typed_config"]["path"] for logger in loggers} == {str(audit_file)}
        # A call with a key id but no refusal in the metadata is not one of them.
        metadata = loggers[0]["filter"]["metadata_filter"]
        assert metadata["match_if_key_not_found"] is False
        for logger in loggers:
            fields = logger["typed_config"]["log_format"]["json_format"]
            assert fields["event"] == "call refused" and fields["audit"] is True
            assert fields["key_id"] == "%DYNAMIC_METADATA(ragmesh:key_id)%"
            assert fields["peer"] == "%DOWNSTREAM_PEER_URI_SAN%"
    audit_file.parent.mkdir()  # `ragmesh up` makes STATE_DIR/logs before Envoy starts
    validate_config(write_config(limited, tmp_path / "envoy.yaml"))


def test_ragmesh_up_writes_it_beside_the_audit_log(tmp_path: Path) -> None:
    settings = Settings.model_validate({"state_dir": str(tmp_path)})
    layout = MeshLayout(settings.state_dir)
    replicas = plan_replicas(settings, dict.fromkeys(available_services(), 1))
    mesh = mesh_topology(settings, replicas, layout.certificates(), layout)
    assert mesh.refusal_log == layout.logs_dir / "envoy-audit.log"


def test_without_a_file_there_are_no_refusal_loggers(certs: CertificatePaths) -> None:
    config = yaml.safe_load(render_config(topology(certs, gateway())))
    assert FILE_LOGGER not in [logger["name"] for logger in manager(config, "client")["access_log"]]
