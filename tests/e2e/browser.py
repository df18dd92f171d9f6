"""A real browser for the e2e tests: Debian's headless chromium, driven by selenium through
Debian's chromedriver, presenting the mesh's client certificate.

The certificate goes into a throwaway NSS database (the one chromium reads, under its HOME)
with `pk12util`, the mesh's CA is trusted there, and a managed policy
(AutoSelectCertificateForUrls) lets chromium present the certificate to the mesh's origin
without asking. `make test-tools` installs chromium, chromium-driver and libnss3-tools.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

# Chromium reads managed policies from here (root-owned; the tests run as root).
POLICY_DIR = Path("/etc/chromium/policies/managed")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # as root
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,2400",
)


def tools() -> dict[str, str]:
    """The programs this module needs, by name; an AssertionError names a missing one."""
    found = {name: shutil.which(name) for name in ("chromium", "chromedriver", "pk12util")}
    missing = [name for name, path in found.items() if path is None]
    assert not missing, f"{missing} missing: `make test-tools` installs them"
    found["certutil"] = shutil.which("certutil")  # same package as pk12util
    return {name: str(path) for name, path in found.items()}


def nss_database(home: Path, ca: Path, cert: Path, key: Path) -> Path:
    """$HOME/.pki/nssdb holding the client certificate and key, with the CA trusted."""
    database = home / ".pki" / "nssdb"
    database.mkdir(parents=True)
    where = f"sql:{database}"
    subprocess.run(["certutil", "-N", "-d", where, "--empty-password"], check=True)
    password = secrets.token_hex(16)
    bundle = home / "client.p12"
    bundle.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"ragmesh client",
            serialization.load_pem_private_key(key.read_bytes(), password=None),  # type: ignore[arg-type]
            x509.load_pem_x509_certificate(cert.read_bytes()),
            None,
            serialization.BestAvailableEncryption(password.encode()),
        )
    )
    subprocess.run(["pk12util", "-i", str(bundle), "-d", where, "-W", password], check=True)
    bundle.unlink()
    subprocess.run(
        ["certutil", "-A", "-d", where, "-n", "ragmesh CA", "-t", "C,,", "-i", str(ca)],
        check=True,
    )
    return database


@contextmanager
def certificate_policy(origin: str) -> Iterator[Path]:
    """A managed policy that selects the (only) client certificate for `origin`, removed
    afterwards."""
    POLICY_DIR.mkdir(parents=True, exist_ok=True)
    path = POLICY_DIR / f"ragmesh-test-{os.getpid()}-{secrets.token_hex(4)}.json"
    rule = json.dumps({"pattern": origin, "filter": {}})
    path.write_text(json.dumps({"AutoSelectCertificateForUrls": [rule]}))
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def chromium(
    origin: str, ca: Path, cert: Path, key: Path, scratch: Path
) -> Iterator[webdriver.Chrome]:
    """Headless chromium with the client certificate for `origin`, in a fresh profile."""
    paths = tools()
    home = scratch / "home"
    nss_database(home, ca, cert, key)
    options = webdriver.ChromeOptions()
    options.binary_location = paths["chromium"]
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={scratch / 'profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(
        executable_path=paths["chromedriver"],
        env={**os.environ, "HOME": str(home)},
        log_output=str(scratch / "chromedriver.log"),
    )
    with certificate_policy(origin):
        driver = webdriver.Chrome(options=options, service=service)
        try:
            yield driver
        finally:
            driver.quit()
