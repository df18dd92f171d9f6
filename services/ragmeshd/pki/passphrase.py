"""The CA key's passphrase, for the commands that may use the CA key (`up`, `certs`).

    use_settings_passphrase(settings)   # before ensure_certificates / renew / revoke
    forget_passphrase(settings)         # `up`, once every certificate is issued

From the environment variable named by mesh.ca_passphrase_env, else the file named by
mesh.ca_passphrase_file (default ~/.config/ragmesh/ca-passphrase), which gets a random
passphrase the first time one is needed, so `make up` still needs no input.
"""

from __future__ import annotations

import os
import secrets
from functools import cache
from pathlib import Path

from ragmeshd.pki import authority, pem_files
from ragmeshd.settings import Settings, environment_secret


def use_settings_passphrase(settings: Settings) -> None:
    """Let certs.py encrypt and decrypt the CA key with the settings' passphrase."""
    mesh = settings.mesh

    def source() -> bytes:
        return _passphrase(mesh.ca_passphrase_env, mesh.ca_passphrase_file)

    authority.use_ca_passphrase(source)


def forget_passphrase(settings: Settings) -> None:
    """Drop the passphrase from this process and its future children (`up` does this before
    starting any service)."""
    environment_secret(settings.mesh.ca_passphrase_env, forget=True)
    authority.use_ca_passphrase(authority.no_passphrase)
    _passphrase.cache_clear()


def protect_ca_key(settings: Settings, certs_dir: Path) -> None:
    """Encrypt a CA key left unencrypted (made before issue 10) in place."""
    key_path = certs_dir / "ca-key.pem"
    if not key_path.exists() or authority.ca_key_is_encrypted(key_path):
        return
    use_settings_passphrase(settings)
    with authority.locked(certs_dir):
        ca = authority.load_ca(certs_dir / "ca.pem", key_path, need_key=True)
        assert ca.key is not None
        pem_files.write_key(key_path, ca.key, passphrase=authority.ca_passphrase_source())


@cache
def _passphrase(env_name: str, file_name: str) -> bytes:
    from_env = environment_secret(env_name)
    if from_env:
        return from_env.encode()
    path = Path(file_name).expanduser()
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another ragmesh process made it just now
        else:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")
    return path.read_bytes().strip()
