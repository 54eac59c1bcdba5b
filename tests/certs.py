"""Certificates for the TLS tests, made with ``cryptography`` into a directory.

``make_certs(directory)`` writes a private CA (``ca.pem``), a server
certificate for 127.0.0.1, ::1 and localhost signed by it (``cert.pem`` and
``key.pem``; ``key-encrypted.pem`` is the same key under ``PASSWORD``), a
client certificate signed by the same CA (``client.pem``, ``client-key.pem``)
and a second, unrelated key (``other-key.pem``) that matches no certificate.
``reissue`` writes a new server certificate (new serial, same CA and names)
into other files, for the reload test; ``issue_client`` a client certificate
with a given subject. The CA's key is kept in memory only.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PASSWORD = "s3cret-pass"
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass
class Certs:
    directory: Path
    ca: Path
    cert: Path
    key: Path
    key_encrypted: Path
    client_cert: Path
    client_key: Path
    other_key: Path
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate

    def client_context(self, client_cert: bool = False, **versions) -> ssl.SSLContext:
        """A client context that trusts the CA (and presents the client certificate)."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if client_cert:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        for name, value in versions.items():
            setattr(ctx, name, value)
        return ctx


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bivio tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, password: str | None = None) -> None:
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8, encryption))


def _issue(ca_key, ca_cert, key, subject: x509.Name, *, server: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(ca_cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.SERVER_AUTH if server
                    else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    if server:
        alt = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
               x509.IPAddress(ipaddress.ip_address("::1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_certs(directory: Path) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = _key()
    ca_name = _name("bivio test CA")
    ca_cert = (x509.CertificateBuilder()
               .subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                              critical=False)
               .sign(ca_key, hashes.SHA256()))
    certs = Certs(directory, directory / "ca.pem", directory / "cert.pem", directory / "key.pem",
                  directory / "key-encrypted.pem", directory / "client.pem",
                  directory / "client-key.pem", directory / "other-key.pem", ca_key, ca_cert)
    certs.ca.write_bytes(_pem(ca_cert))
    server_key = _key()
    certs.cert.write_bytes(_pem(_issue(ca_key, ca_cert, server_key, _name("localhost"),
                                       server=True)))
    _write_key(certs.key, server_key)
    _write_key(certs.key_encrypted, server_key, PASSWORD)
    client_key = _key()
    certs.client_cert.write_bytes(_pem(_issue(ca_key, ca_cert, client_key,
                                              _name("client one"), server=False)))
    _write_key(certs.client_key, client_key)
    _write_key(certs.other_key, _key())
    return certs


def reissue(certs: Certs, cert: Path, key: Path) -> x509.Certificate:
    """A new server certificate (new key, new serial, same CA and names) into ``cert``/``key``."""
    server_key = _key()
    new = _issue(certs.ca_key, certs.ca_cert, server_key, _name("localhost"), server=True)
    cert.write_bytes(_pem(new))
    _write_key(key, server_key)
    return new


def issue_client(certs: Certs, subject: x509.Name, cert: Path, key: Path) -> x509.Certificate:
    """A client certificate with this ``subject``, signed by the CA, into ``cert``/``key``."""
    client_key = _key()
    new = _issue(certs.ca_key, certs.ca_cert, client_key, subject, server=False)
    cert.write_bytes(_pem(new))
    _write_key(key, client_key)
    return new


def serial_of(pem_or_der: bytes) -> int:
    """The serial number of a certificate given as PEM or DER bytes."""
    if pem_or_der.lstrip().startswith(b"-----"):
        return x509.load_pem_x509_certificate(pem_or_der).serial_number
    return x509.load_der_x509_certificate(pem_or_der).serial_number
