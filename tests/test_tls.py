"""TLS without sockets: the server context (bivio.process.tls), what a connection reports
(bivio.protocols.tls), the ASGI ``tls`` extension and the WSGI ``HTTPS`` variable.

Handshakes run in memory (two :class:`ssl.SSLObject` over ``MemoryBIO``s). The
end-to-end tests over real sockets are tests/e2e/test_tls.py.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
from pathlib import Path
from typing import Any

import pytest
from certs import PASSWORD, Certs, issue_client, make_certs
from cryptography import x509
from cryptography.x509.oid import NameOID
from fakes import FakeStream, FakeWebSocket

from bivio.adapters.asgi import ASGIHandler
from bivio.adapters.wsgi import WSGIHandler
from bivio.core.config import Config
from bivio.core.stream import TLSInfo
from bivio.process.errors import StartupError
from bivio.process.tls import build_ssl_context, served_certificate
from bivio.protocols.tls import _client_chain, _escape, connection_tls


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def config(certs: Certs, **options: Any) -> Config:
    values = {"ssl_certfile": str(certs.cert), "ssl_keyfile": str(certs.key), **options}
    return Config.from_options(values, env={})


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
              ) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run a TLS handshake in memory; the server's and the client's SSLObject."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    done = {"server": False, "client": False}
    for _ in range(20):
        for name, obj in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server learns the client's certificate from its last flight.
            server.do_handshake()
            return server, client
    raise AssertionError("the handshake did not finish")


class Transport:
    def __init__(self, sslobj: Any) -> None:
        self.sslobj = sslobj

    def get_extra_info(self, name: str) -> Any:
        return self.sslobj if name == "ssl_object" else None


# -- the server's context ---------------------------------------------------------------


def test_the_context_follows_the_options(certs: Certs) -> None:
    ctx = build_ssl_context(config(certs))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_NONE
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    ctx = build_ssl_context(config(certs, ssl_min_version="1.3", ssl_cert_reqs="required",
                                   ssl_ca_certs=str(certs.ca)))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert build_ssl_context(config(certs, ssl_cert_reqs="1", ssl_ca_certs=str(certs.ca))
                             ).verify_mode == ssl.CERT_OPTIONAL


def test_ciphers_are_the_ones_asked_for(certs: Certs) -> None:
    ctx = build_ssl_context(config(certs, ssl_ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))
    tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == {"ECDHE-ECDSA-AES128-GCM-SHA256"}
    client = certs.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    server, _ = handshake(ctx, client)
    assert server.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"


@pytest.mark.parametrize(("http", "offered", "selected"), [
    ("auto", ["h2", "http/1.1"], "h2"),
    ("auto", ["http/1.1"], "http/1.1"),
    ("h1", ["h2", "http/1.1"], "http/1.1"),
    ("h2", ["h2", "http/1.1"], "h2"),
    ("h2", ["http/1.1"], None),  # no overlap: no ALPN (the HTTP/2 preface then fails)
])
def test_alpn_follows_http(certs: Certs, http: str, offered: list[str],
                           selected: str | None) -> None:
    client = certs.client_context()
    client.set_alpn_protocols(offered)
    server, peer = handshake(build_ssl_context(config(certs, http=http)), client)
    assert server.selected_alpn_protocol() == peer.selected_alpn_protocol() == selected


def test_the_key_may_be_in_the_certificate_file(certs: Certs, tmp_path: Path) -> None:
    combined = tmp_path / "combined.pem"
    combined.write_bytes(certs.key.read_bytes() + certs.cert.read_bytes() + certs.ca.read_bytes())
    cfg = Config.from_options({"ssl_certfile": str(combined)}, env={})
    handshake(build_ssl_context(cfg), certs.client_context())
    # The certificate served is the first in the file, whatever comes before or after it.
    assert served_certificate(cfg) == certs.cert.read_text()


def test_an_encrypted_key_with_its_password(certs: Certs) -> None:
    cfg = config(certs, ssl_keyfile=str(certs.key_encrypted), ssl_keyfile_password=PASSWORD)
    handshake(build_ssl_context(cfg), certs.client_context())


FAILURES = [
    # (options, the one line: every fragment must be in it)
    ({"ssl_certfile": "{d}/missing.pem"},
     ["--ssl-certfile {d}/missing.pem", "No such file or directory"]),
    ({"ssl_certfile": "{d}"}, ["--ssl-certfile {d}", "is a directory"]),
    ({"ssl_keyfile": "{d}/missing-key.pem"},
     ["--ssl-keyfile {d}/missing-key.pem", "No such file or directory"]),
    ({"ssl_certfile": "{d}/key.pem"}, ["--ssl-certfile {d}/key.pem", "no PEM certificate"]),
    ({"ssl_keyfile": "{d}/cert.pem"}, ["--ssl-keyfile {d}/cert.pem", "no PEM private key"]),
    ({"ssl_keyfile": None}, ["--ssl-certfile {d}/cert.pem", "no private key in it",
                             "give --ssl-keyfile"]),
    ({"ssl_keyfile": "{d}/other-key.pem"},
     ["--ssl-keyfile {d}/other-key.pem", "the key does not match the certificate",
      "--ssl-certfile {d}/cert.pem"]),
    ({"ssl_keyfile": "{d}/key-encrypted.pem", "ssl_keyfile_password": "wrong"},
     ["--ssl-keyfile {d}/key-encrypted.pem", "wrong --ssl-keyfile-password"]),
    ({"ssl_keyfile": "{d}/key-encrypted.pem"},  # never OpenSSL's prompt on the terminal
     ["--ssl-keyfile {d}/key-encrypted.pem", "the key is encrypted",
      "--ssl-keyfile-password"]),
    ({"ssl_ciphers": "NOT-A-CIPHER"}, ["--ssl-ciphers NOT-A-CIPHER", "no cipher"]),
    ({"ssl_ca_certs": "{d}/missing-ca.pem"},
     ["--ssl-ca-certs {d}/missing-ca.pem", "No such file or directory"]),
    ({"ssl_ca_certs": "{d}/key.pem"}, ["--ssl-ca-certs {d}/key.pem", "no usable CA"]),
]


@pytest.mark.parametrize(("options", "fragments"), FAILURES,
                         ids=lambda v: "-".join(f"{k}={v[k]}" for k in v)
                         if isinstance(v, dict) else "")
def test_what_is_wrong_is_one_line_naming_the_flag_and_the_file(
        certs: Certs, options: dict[str, Any], fragments: list[str]) -> None:
    d = str(certs.directory)
    values = {k: (v.format(d=d) if isinstance(v, str) else v) for k, v in options.items()}
    with pytest.raises(StartupError) as info:
        build_ssl_context(config(certs, **values))
    message = str(info.value)
    assert info.value.code == 1
    assert "\n" not in message
    for fragment in fragments:
        assert fragment.format(d=d) in message


def test_a_corrupt_certificate_is_named(certs: Certs, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    pem = certs.cert.read_text().splitlines()
    pem[3] = "A" * len(pem[3])  # still base64, no longer a certificate
    bad.write_text("\n".join(pem) + "\n")
    with pytest.raises(StartupError, match=f"--ssl-certfile {bad}: the first certificate"):
        build_ssl_context(config(certs, ssl_certfile=str(bad)))


def test_an_unreadable_file_is_named(certs: Certs, tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    shutil.copy(certs.key, key)
    key.chmod(0)
    try:
        key.read_bytes()
    except PermissionError:
        pass
    else:
        pytest.skip("running as a user who can read any file (root)")
    with pytest.raises(StartupError, match=f"--ssl-keyfile {key}: Permission denied"):
        build_ssl_context(config(certs, ssl_keyfile=str(key)))


# -- what a connection reports ------------------------------------------------------------


def test_connection_tls_reports_the_handshake(certs: Certs) -> None:
    ctx = build_ssl_context(config(certs, ssl_cert_reqs="optional", ssl_ca_certs=str(certs.ca)))
    client = certs.client_context(client_cert=True, maximum_version=ssl.TLSVersion.TLSv1_2)
    client.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384")
    client.set_alpn_protocols(["http/1.1"])
    server, _ = handshake(ctx, client)
    info = connection_tls(Transport(server), "PEM")
    assert info is not None
    assert (info.version, info.cipher_suite, info.alpn) == (0x0303, 0xC02C, "http/1.1")
    assert info.server_cert == "PEM"
    # Python >= 3.13 knows the verified chain: the client's certificate, then the CA's.
    chain = (certs.client_cert.read_text(),) + (
        (certs.ca.read_text(),) if hasattr(ssl.SSLObject, "get_verified_chain") else ())
    assert info.client_cert_chain == chain
    assert info.client_cert_name == "CN=client one,O=bivio tests"

    server, _ = handshake(ctx, certs.client_context())  # TLS 1.3, no client certificate
    info = connection_tls(Transport(server), None)
    assert info is not None
    assert info.version == 0x0304
    assert info.cipher_suite in (0x1301, 0x1302, 0x1303)
    assert (info.client_cert_chain, info.client_cert_name) == ((), None)
    assert connection_tls(Transport(None), None) is None  # cleartext


class _ChainOnly:
    """An SSL object as Python 3.13 has it: get_verified_chain() gives DER bytes."""

    def __init__(self, ders: list[bytes]) -> None:
        self.ders = ders

    def get_verified_chain(self) -> list[bytes]:
        return self.ders


def test_a_verified_chain_of_der_bytes_is_given_as_pem(certs: Certs) -> None:
    pems = [certs.client_cert.read_text(), certs.ca.read_text()]
    ders = [ssl.PEM_cert_to_DER_cert(pem) for pem in pems]
    assert _client_chain(_ChainOnly(ders)) == tuple(ssl.DER_cert_to_PEM_cert(d) for d in ders)
    assert [ssl.PEM_cert_to_DER_cert(p) for p in _client_chain(_ChainOnly(ders))] == ders


def test_client_cert_name_is_rfc4514(certs: Certs, tmp_path: Path) -> None:
    """Against cryptography's own RFC 4514 writer, on a subject that needs escaping."""
    subject = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'Acme, "Inc" + <Co>; \\ x'),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "#ops "),
        x509.NameAttribute(NameOID.EMAIL_ADDRESS, "ops@example.org"),
        x509.NameAttribute(NameOID.COMMON_NAME, " Zoé "),
    ])
    cert = issue_client(certs, subject, tmp_path / "c.pem", tmp_path / "k.pem")
    client = certs.client_context()
    client.load_cert_chain(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    ctx = build_ssl_context(config(certs, ssl_cert_reqs="required", ssl_ca_certs=str(certs.ca)))
    server, _ = handshake(ctx, client)
    info = connection_tls(Transport(server), None)
    assert info is not None
    assert info.client_cert_name == cert.subject.rfc4514_string()
    assert info.client_cert_name.startswith("CN=\\ Zoé\\ ,1.2.840.113549.1.9.1=ops@")


@pytest.mark.parametrize(("value", "escaped"), [
    ("plain", "plain"), ("a,b", "a\\,b"), ("#x", "\\#x"), ("x#", "x#"), (" x ", "\\ x\\ "),
    ("a\\ ", "a\\\\\\ "), ("n\0l", "n\\00l"), ("", ""),
])
def test_escape(value: str, escaped: str) -> None:
    assert _escape(value) == escaped


# -- the adapters ---------------------------------------------------------------------------

INFO = TLSInfo(version=0x0304, cipher_suite=0x1301, client_cert_chain=("CLIENT", "CA"),
               server_cert="SERVER", alpn="http/1.1", client_cert_name="CN=c")
EXTENSION = {"server_cert": "SERVER", "client_cert_chain": ["CLIENT", "CA"],
             "client_cert_name": "CN=c", "client_cert_error": None, "tls_version": 0x0304,
             "cipher_suite": 0x1301}


def test_http_scopes_carry_the_tls_extension_over_tls_only() -> None:
    scopes: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope)
        if len(scopes) == 1:  # a middleware that edits what it was given
            scope["extensions"]["tls"]["client_cert_chain"].clear()
            scope["extensions"]["tls"]["tls_version"] = None
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body"})

    handler = ASGIHandler(app)
    asyncio.run(handler(FakeStream(scheme="https", tls=INFO)))
    asyncio.run(handler(FakeStream(scheme="https", tls=INFO)))
    asyncio.run(handler(FakeStream()))
    first, second, cleartext = scopes
    assert first["scheme"] == "https"
    # Fresh per scope: the first app's change did not reach the second scope.
    assert second["extensions"]["tls"] == EXTENSION
    assert first["extensions"]["tls"] is not second["extensions"]["tls"]
    assert "tls" not in cleartext["extensions"]  # the spec forbids it over cleartext


def test_websocket_scopes_carry_it_too() -> None:
    scopes: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope)
        await receive()
        await send({"type": "websocket.close"})

    for tls in (INFO, None):
        ws = FakeWebSocket()
        stream = FakeStream(path=b"/ws", upgrade="websocket", websocket=ws,
                            scheme="https" if tls else "http", tls=tls)
        asyncio.run(ASGIHandler(app)(stream))
    secure, plain = scopes
    assert (secure["scheme"], secure["extensions"]["tls"]) == ("wss", EXTENSION)
    assert plain["scheme"] == "ws" and "tls" not in plain["extensions"]


def test_wsgi_environ_says_https_on_over_tls_only() -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        raise AssertionError("not called")

    handler = WSGIHandler(app, Config(threads=1))
    try:
        secure = handler.environ(FakeStream(scheme="https", tls=INFO))
        assert (secure["wsgi.url_scheme"], secure["HTTPS"]) == ("https", "on")
        plain = handler.environ(FakeStream())
        assert plain["wsgi.url_scheme"] == "http" and "HTTPS" not in plain
        # https from a trusted proxy's X-Forwarded-Proto is not TLS on this connection.
        proxied = handler.environ(FakeStream(scheme="https"))
        assert proxied["wsgi.url_scheme"] == "https" and "HTTPS" not in proxied
    finally:
        handler.shutdown()


# -- the worker's side: handshakes in progress, the command line ----------------------------


def test_handshakes_in_progress_are_known_until_they_end(certs: Certs) -> None:
    """What graceful shutdown waits for on a TLS listener (bivio.process.tls.Handshakes)."""
    import gc

    from bivio.process.tls import Handshakes

    class Loop:
        now = 100.0

        def time(self) -> float:
            return self.now

    loop = Loop()
    ctx = build_ssl_context(config(certs))
    handshakes = Handshakes(object, loop, ctx, 10.0)  # type: ignore[arg-type]
    assert not handshakes.in_progress()
    handshakes()  # accepted: the loop begins its handshake on the next tick
    assert handshakes.in_progress()
    server, _ = handshake(ctx, certs.client_context())  # begun and finished
    assert not handshakes.in_progress()

    handshakes()
    with pytest.raises(ssl.SSLError):  # the client refuses the certificate's name: an alert
        s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
        srv = ctx.wrap_bio(s_in, s_out, server_side=True)
        cli = certs.client_context().wrap_bio(c_in, c_out,
                                              server_hostname="not-this-host.example")
        for _ in range(10):
            for obj in (cli, srv):
                try:
                    obj.do_handshake()
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
    assert handshakes.in_progress()  # the server has not read the client's alert yet
    s_in.write(c_out.read())
    with pytest.raises(ssl.SSLError, match="CERTIFICATE"):
        srv.do_handshake()
    assert not handshakes.in_progress()  # failed: done

    handshakes()
    stalled = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    with pytest.raises(ssl.SSLWantReadError):
        stalled.do_handshake()  # begun; the client says nothing more
    loop.now += 5
    assert handshakes.in_progress()
    loop.now += 5  # its handshake timeout: the loop drops it
    assert not handshakes.in_progress()
    loop.now -= 10
    assert handshakes.in_progress()
    del stalled  # the connection closed (the loop drops its SSLObject)
    gc.collect()
    assert not handshakes.in_progress()
    handshakes()  # an accept whose handshake never begins is not waited for long
    loop.now += Handshakes.GAP
    assert not handshakes.in_progress()


def test_an_ssl_option_without_a_certificate_is_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    from bivio.cli import main

    with pytest.raises(SystemExit) as info:
        main(["tests.apps.tls:app", "--ssl-keyfile", "key.pem"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["bivio: error: --ssl-keyfile: needs --ssl-certfile "
                                "(see bivio --help)"]
