"""The registry client's TLS context: certificates loaded only when a TLS connection starts, and
then checked as strictly as ever (a loopback HTTPS server with a self-signed certificate)."""

from __future__ import annotations

import datetime
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imagebuild.errors import ImageBuildError
from imagebuild.registry.transport import Transport


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def _serve(tls: ssl.SSLContext | None):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder


@pytest.fixture(scope="module")
def tls_server(certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate / "cert.pem", certificate / "key.pem")
    server = _serve(context)
    yield f"localhost:{server.server_address[1]}"
    server.shutdown()


def test_plain_http_loads_no_certificates():
    server = _serve(None)
    try:
        transport = Transport(f"127.0.0.1:{server.server_address[1]}", credentials=None, attempts=1)
        assert transport.request("GET", "/v2/").status_code == 200
        assert not transport._client._transport._pool._ssl_context.certificates_loaded
        transport.close()
    finally:
        server.shutdown()


def test_an_unknown_certificate_is_refused(tls_server, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    transport = Transport(tls_server, insecure=False, credentials=None, attempts=1)
    with pytest.raises(ImageBuildError, match="(?i)certificate|ssl"):
        transport.request("GET", "/v2/")
    transport.close()


def test_a_certificate_trusted_through_ssl_cert_file_is_accepted(tls_server, certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate / "cert.pem"))
    transport = Transport(tls_server, insecure=False, credentials=None, attempts=1)
    assert transport.scheme == "https"
    assert transport.request("GET", "/v2/").status_code == 200
    transport.close()


def test_the_hostname_is_checked(tls_server, certificate, monkeypatch):
    """The certificate names localhost: reached as 127.0.0.1, it does not match."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate / "cert.pem"))
    transport = Transport(tls_server.replace("localhost", "127.0.0.1"), insecure=False, credentials=None, attempts=1)
    with pytest.raises(ImageBuildError):
        transport.request("GET", "/v2/")
    transport.close()
