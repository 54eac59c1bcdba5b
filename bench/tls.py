"""A throwaway self-signed certificate for the TLS scenarios, made at bench start.

ECDSA P-256, for 127.0.0.1, key in PKCS#8 PEM (granian accepts no other key
format). The openssl command when present, else the ``cryptography`` package.
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TLSFiles:
    cert: str
    key: str


def make_cert(directory: Path) -> TLSFiles:
    """Write cert.pem and key.pem into ``directory``; raise RuntimeError when neither
    openssl nor cryptography is at hand."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TLSFiles(str(directory / "cert.pem"), str(directory / "key.pem"))
    if shutil.which("openssl"):
        argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:P-256", "-nodes", "-keyout", files.key, "-out", files.cert,
                "-days", "2", "-subj", "/CN=127.0.0.1",
                "-addext", "subjectAltName=IP:127.0.0.1"]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode == 0:
            return files
        problem = done.stderr.strip().splitlines()[-1:] or ["?"]
        error = f"openssl failed: {problem[0]}"
    else:
        error = "openssl is not installed"
    try:
        _with_cryptography(files)
    except ImportError:
        raise RuntimeError(f"no certificate: {error}, and cryptography is missing") from None
    return files


def _with_cryptography(files: TLSFiles) -> None:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    Path(files.key).write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    Path(files.cert).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
