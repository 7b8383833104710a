"""A small bearer-token server for docker-registry's `auth: token` mode.

It checks Basic credentials against a fixed user table, grants the actions
asked for in each `scope` to a known user, and signs an RS256 JWT with a
self-signed key made at start-up. The registry trusts the certificate through
`rootcertbundle`; the JWT header names the key by its libtrust key ID, which
is how distribution finds the signing key.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

ISSUER = "imagebuild-test-issuer"
SERVICE = "imagebuild-test-registry"


def libtrust_key_id(public_key) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))


class TokenServer:
    def __init__(self, workdir: Path, users: dict[str, str]):
        self.users = users
        self.requests: list[dict] = []   # what was asked: user and scopes, never passwords
        self._lock = threading.Lock()
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = libtrust_key_id(self.key.public_key())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .sign(self.key, hashes.SHA256()))
        workdir.mkdir(parents=True, exist_ok=True)
        self.cert_path = workdir / "token-cert.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urlparse(self.path)
                query = parse_qs(url.query)
                user = server._user(self.headers.get("Authorization"))
                scopes = query.get("scope", [])
                with server._lock:
                    server.requests.append({"user": user, "scopes": scopes})
                if user is False:
                    self._answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                    return
                access = server._grant(user, scopes)
                self._answer(200, {"token": server.issue(user or "", access), "expires_in": 300})

            def _answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _user(self, header: str | None):
        """The user name, None for anonymous, False for wrong credentials."""
        if not header or not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if self.users.get(user) == password else False

    @staticmethod
    def _grant(user, scopes: list[str]) -> list[dict]:
        if not user:
            return []
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        return access

    def issue(self, subject: str, access: list[dict], expired: bool = False) -> str:
        now = int(time.time())
        # distribution allows 60 s of clock leeway, so an expired token must be well past it.
        expires = now - 600 if expired else now + 300
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": expires, "nbf": now - 700,
                  "iat": now - 700 if expired else now, "jti": uuid.uuid4().hex, "access": access}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
