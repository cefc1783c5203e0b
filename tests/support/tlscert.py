"""Throw-away TLS certificates for loopback tests, made with Debian's `openssl` command.

No `cryptography` package: two `openssl req` runs make a private CA and a server
certificate for `localhost` / `127.0.0.1` signed by it (a separate CA keeps strict
X.509 verification, as newer Pythons enable by default, happy). Keys are EC P-256,
so generation takes milliseconds.

    cert = shared_certificate()          # made once per test process
    server_ctx = cert.server_context()   # for the scripted SMTP server
    client_ctx = cert.client_context()   # trusts only the test CA
    os.environ["SSL_CERT_FILE"] = str(cert.ca)   # for a subprocess using default contexts
"""

from __future__ import annotations

import atexit
import shutil
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.support.require import require_program


class CertificateError(RuntimeError):
    """openssl failed; the message carries its output."""


@dataclass(frozen=True)
class TestCertificate:
    """PEM files of a test CA and of a server certificate it signed."""

    __test__ = False  # not a pytest test class despite the name

    ca: Path  # the CA certificate: give this to clients as their trust bundle
    cert: Path  # server certificate (leaf)
    key: Path  # server private key (unencrypted)
    hostname: str  # the DNS name in the server certificate (also valid for 127.0.0.1)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert), str(self.key))
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts exactly this test CA."""
        return ssl.create_default_context(cafile=str(self.ca))


def _openssl(openssl: str, args: list[str], cwd: Path) -> None:
    result = subprocess.run(
        [openssl, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise CertificateError(
            f"openssl {' '.join(args[:2])} failed (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )


def make_certificate(directory: Path, hostname: str = "localhost") -> TestCertificate:
    """Create ca.pem, ca.key, server.pem and server.key in directory (which must exist)."""
    openssl = require_program("openssl", "openssl")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        openssl,
        [
            "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "7",
            "-subj", "/CN=spoolmail test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ],
        directory,
    )  # fmt: skip
    _openssl(
        openssl,
        [
            "req", "-x509", *ec, "-keyout", "server.key", "-out", "server.pem", "-days", "7",
            "-CA", "ca.pem", "-CAkey", "ca.key",
            "-subj", f"/CN={hostname}",
            "-addext", f"subjectAltName=DNS:{hostname},IP:127.0.0.1",
            "-addext", "basicConstraints=critical,CA:FALSE",
            "-addext", "keyUsage=critical,digitalSignature",
            "-addext", "extendedKeyUsage=serverAuth",
        ],
        directory,
    )  # fmt: skip
    for name in ("ca.pem", "server.pem"):
        (directory / name).chmod(0o644)
    return TestCertificate(
        ca=directory / "ca.pem",
        cert=directory / "server.pem",
        key=directory / "server.key",
        hostname=hostname,
    )


_shared: TestCertificate | None = None
_shared_lock = threading.Lock()


def shared_certificate() -> TestCertificate:
    """One certificate per test process, in a temporary directory removed at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            directory = Path(tempfile.mkdtemp(prefix="spoolmail-tls-"))
            atexit.register(shutil.rmtree, directory, True)
            directory.chmod(0o755)  # a relay running as another user may read ca.pem
            _shared = make_certificate(directory)
        return _shared
