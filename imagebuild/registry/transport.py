"""HTTP to one registry host: scheme choice, authentication, retries, counting.

Every request goes through `Transport.request`. It adds the credentials the
registry asks for (Basic, or a bearer token fetched from the realm named in
`WWW-Authenticate`, cached per scope set and refreshed on a 401), retries
idempotent requests on connection errors, 5xx and 429 (honouring
`Retry-After`) with exponential backoff, and counts requests. Request bodies
are given as bytes or as a callable that opens a fresh stream, so a retry
never resends a half-consumed stream.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import threading
import time
import weakref
from typing import Callable, Iterable, Mapping

from imagebuild.registry.http import httpx

from imagebuild.errors import AuthError, ImageBuildError, RegistryError, RegistryUnreachableError
from imagebuild.frozen import mutable
from imagebuild.registry.auth import Credentials, lookup_credentials, parse_challenge

Body = bytes | Callable[[], Iterable[bytes]] | None

DEFAULT_ATTEMPTS = 5
DEFAULT_BACKOFF = 0.25
DEFAULT_TIMEOUT = 120.0   # seconds a connection may stay silent (a body that stalls meets it), per attempt
# Marks a response whose request the transport already retried as often as it may.
RETRIED = "imagebuild.retries_spent"
MAX_RETRY_AFTER = 30.0
MAX_ERROR_BODY = 64 * 1024   # an error body larger than this is not read for its code
# Answers read whole are read no further than these (a registry could send a body without end): a token
# answer is a few KiB, any other answer read whole (a tag-list page, the `/v2/` ping, an upload's answer)
# is JSON within a manifest's bound.
MAX_TOKEN_BODY = 64 * 1024
MAX_ANSWER_BODY = 4 * 1024 * 1024
_UNSET = object()


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@mutable
class Counters:
    requests: int = 0
    token_requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


class Transport:
    def __init__(self, host: str, *, insecure: bool | None = None,
                 credentials: Credentials | None | object = _UNSET,
                 attempts: int = DEFAULT_ATTEMPTS, backoff: float = DEFAULT_BACKOFF,
                 timeout: float = DEFAULT_TIMEOUT):
        self.host = host
        plain = insecure if insecure is not None else is_loopback(host)
        self.scheme = "http" if plain else "https"
        self.base_url = f"{self.scheme}://{host}"
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.counters = Counters()
        self._credentials = credentials
        self._lock = threading.Lock()
        self._basic = False
        self._bearer: tuple[str, str | None] | None = None  # realm, service
        self._tokens: dict[frozenset[str], str] = {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=15.0), follow_redirects=True,
                                    verify=CertificatesOnFirstUse(ssl.PROTOCOL_TLS_CLIENT),
                                    limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
                                    headers={"User-Agent": "imagebuild"})
        # Set once the work is given up (Ctrl-C, SIGTERM): no request starts after it, no chunk is sent.
        self.cancelled = threading.Event()
        self._backends = _abortable_backends(self._client)

    def close(self) -> None:
        self._client.close()

    def abort(self) -> None:
        """Give up all work at once: later requests fail, and requests waiting on a socket wake now.

        Threads blocked on a stalled registry would otherwise hold the process up to the
        read timeout, and Python waits for them before it exits."""
        self.cancelled.set()
        for backend in self._backends:
            backend.shutdown_all()

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise RegistryError(f"transfer with registry {self.host} cancelled", code="CANCELLED")

    # -- credentials -------------------------------------------------------

    @property
    def credentials(self) -> Credentials | None:
        if self._credentials is _UNSET:
            self._credentials = lookup_credentials(self.host)
        return self._credentials  # type: ignore[return-value]

    def _auth_header(self, scopes: frozenset[str]) -> str | None:
        if self._basic and self.credentials:
            return self.credentials.basic_header()
        if self._bearer is None:
            return None
        with self._lock:
            token = self._tokens.get(scopes)
        if token is None:
            token = self._fetch_token(scopes)
        return f"Bearer {token}"

    def _on_unauthorized(self, response: httpx.Response, scopes: frozenset[str]) -> None:
        scheme, params = parse_challenge(response.headers.get("www-authenticate", ""))
        if scheme == "basic":
            if not self.credentials:
                raise AuthError(f"registry {self.host} needs credentials",
                                hint=f"run `imagebuild login {self.host}`")
            self._basic = True
            return
        if scheme != "bearer" or not params.get("realm"):
            raise AuthError(f"registry {self.host} refused access and named no way to authenticate")
        self._bearer = (params["realm"], params.get("service"))
        wanted = set(scopes)
        if params.get("scope"):
            wanted.update(params["scope"].split(" "))
        with self._lock:
            self._tokens.pop(scopes, None)
        self._fetch_token(scopes, frozenset(wanted))

    def _fetch_token(self, key: frozenset[str], scopes: frozenset[str] | None = None) -> str:
        assert self._bearer is not None
        realm, service = self._bearer
        query: list[tuple[str, str]] = []
        if service:
            query.append(("service", service))
        query.extend(("scope", scope) for scope in sorted(scopes or key))
        headers = {}
        if self.credentials:
            headers["Authorization"] = self.credentials.basic_header()
        response = self._send_with_retries("GET", realm, params=query, headers=headers, body=None,
                                           idempotent=True, stream=False, token=True, limit=MAX_TOKEN_BODY)
        if response.status_code in (401, 403):
            raise self._refused(frozenset())
        if response.status_code != 200:
            raise RegistryError(f"token server of {self.host} answered {response.status_code}",
                                status=response.status_code)
        try:
            answer = response.json()
            token = answer.get("token") or answer["access_token"]
            if not isinstance(token, str) or not token:
                raise ValueError("no token")
        except (ValueError, KeyError, AttributeError, TypeError, RecursionError):
            raise RegistryError(f"token server of {self.host} gave no token") from None
        with self._lock:
            self._tokens[key] = token
        return token

    # -- requests --------------------------------------------------------------

    def url(self, path: str) -> str:
        return path if "://" in path else self.base_url + path

    def request(self, method: str, path: str, *, scopes: Iterable[str] = (),
                headers: Mapping[str, str] | None = None, body: Body = None, params=None,
                idempotent: bool = True, stream: bool = False, timeout: float | None = None) -> httpx.Response:
        """Send one logical request; the response may be any status but 401."""
        key = frozenset(scopes)
        refreshed = False
        while True:
            extra = dict(headers or {})
            auth = self._auth_header(key)
            if auth:
                extra["Authorization"] = auth
            response = self._send_with_retries(method, self.url(path), params=params, headers=extra,
                                               body=body, idempotent=idempotent, stream=stream, timeout=timeout)
            if response.status_code != 401:
                return response
            response.close()
            if refreshed:
                raise self._refused(key)
            # A 401 means the request was not acted on, so it is safe to send again.
            self._on_unauthorized(response, key)
            refreshed = True

    def _refused(self, scopes: frozenset[str]) -> AuthError:
        """The error for a registry or token server that still says no."""
        if not self.credentials:
            return AuthError(f"registry {self.host} needs credentials", hint=f"run `imagebuild login {self.host}`")
        user = self.credentials.username
        if self._bearer is not None and scopes:
            return AuthError(f"registry {self.host} did not grant user {user!r} {', '.join(sorted(scopes))}",
                             hint="check the account's permissions on the repository")
        return AuthError(f"registry {self.host} refused the credentials of user {user!r}",
                         hint=f"check the password and run `imagebuild login {self.host}`")

    def _send_with_retries(self, method: str, url: str, *, params, headers: dict, body: Body,
                           idempotent: bool, stream: bool, token: bool = False,
                           timeout: float | None = None, limit: int = MAX_ANSWER_BODY) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            self.check_cancelled()
            content = body() if callable(body) else body
            try:
                request = self._client.build_request(method, url, params=params, headers=headers,
                                                     content=content,
                                                     **({"timeout": timeout} if timeout is not None else {}))
                with self._lock:
                    self.counters.requests += 1
                    self.counters.token_requests += int(token)
                # Always streamed, so an answer read whole is read only within its bound (a hostile
                # registry could otherwise send one without end): MAX_ERROR_BODY for an error, `limit`
                # for the others; a body that stalls meets the client's read timeout.
                response = self._client.send(request, stream=True)
                if response.status_code >= 400:
                    if not stream:
                        read_error_body(response)
                elif not stream and len(read_at_most(response, limit)) > limit:
                    raise self._too_large(method, url, limit, token)
            except httpx.TransportError as exc:
                self.check_cancelled()
                if idempotent and attempt < self.attempts:
                    time.sleep(self._delay(attempt))
                    continue
                raise self._transport_failure(method, url, exc, retried=idempotent) from None
            except httpx.TooManyRedirects:
                raise RegistryError(f"registry {self.host} redirected {method} {httpx.URL(url).path} "
                                    "in a loop (too many redirects)", code="REDIRECT_LOOP",
                                    hint="check the registry address and its proxy") from None
            except httpx.HTTPError as exc:  # an answer httpx cannot decode, such as a broken Content-Encoding
                raise RegistryError(f"registry {self.host} sent an unreadable answer to {method} "
                                    f"{httpx.URL(url).path}: {exc or type(exc).__name__}",
                                    code="UNREADABLE") from None
            if idempotent and (response.status_code >= 500 or response.status_code == 429):
                if attempt < self.attempts:
                    delay = self._delay(attempt, response.headers.get("retry-after"))
                    response.close()
                    time.sleep(delay)
                    continue
                response.extensions[RETRIED] = True
            return response

    def _too_large(self, method: str, url: str, limit: int, token: bool) -> RegistryError:
        # The path alone is named: a query may carry what a registry put in a next-page link.
        what = f"token server of {self.host} sent a token answer" if token else \
            f"registry {self.host} sent an answer to {method} {httpx.URL(url).path}"
        return RegistryError(f"{what} larger than {size_text(limit)}", code="SIZE_INVALID",
                             hint="check the registry address; a registry does not send this much")

    def count_bytes(self, *, sent: int = 0, received: int = 0) -> None:
        """Body bytes are counted by the client, which alone sees them stream."""
        with self._lock:
            self.counters.bytes_sent += sent
            self.counters.bytes_received += received

    def _delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after:
            try:
                return min(MAX_RETRY_AFTER, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return min(8.0, self.backoff * (2 ** (attempt - 1)))

    def _transport_failure(self, method: str, url: str, exc: httpx.TransportError, *,
                           retried: bool) -> Exception:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError):
            hint = "check the address or start the registry"
            if self.scheme == "https" and ("SSL" in reason or "ssl" in reason):
                hint = "the registry may speak plain HTTP: pass --insecure"
            return RegistryUnreachableError(f"cannot reach registry {self.host}: {reason}", hint=hint)
        path = httpx.URL(url).path
        return RegistryError(f"connection to registry {self.host} failed during {method} {path}: {reason}",
                             hint="retry; if it persists, check the network or the registry's logs",
                             retried=retried)


class CertificatesOnFirstUse(ssl.SSLContext):
    """A verifying TLS context that loads its trusted certificates only when a TLS connection starts.

    Loading the CA bundle takes ~50 ms, a third of a `status`; a plain-HTTP registry (loopback) never
    needs it, unless its token service or a redirect is https. What is trusted is what httpx trusts:
    SSL_CERT_FILE, else SSL_CERT_DIR, else certifi's bundle. Hostnames and chains are checked as always
    (PROTOCOL_TLS_CLIENT requires both)."""

    _guard = threading.Lock()

    def _load_once(self) -> None:
        with self._guard:
            if getattr(self, "_loaded", False):
                return
            if os.environ.get("SSL_CERT_FILE"):
                self.load_verify_locations(cafile=os.environ["SSL_CERT_FILE"])
            elif os.environ.get("SSL_CERT_DIR"):
                self.load_verify_locations(capath=os.environ["SSL_CERT_DIR"])
            else:
                import certifi

                self.load_verify_locations(cafile=certifi.where())
            self._loaded = True

    @property
    def certificates_loaded(self) -> bool:
        return getattr(self, "_loaded", False)

    def wrap_socket(self, *args, **kwargs):
        self._load_once()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args, **kwargs):
        self._load_once()
        return super().wrap_bio(*args, **kwargs)


class _AbortableBackend:
    """httpcore's network backend, remembering the sockets it opens so `Transport.abort` can shut them.

    A shut socket wakes a thread blocked in send or recv on it at once; closing it would not."""

    def __init__(self, inner):
        self._inner = inner
        self._sockets: weakref.WeakSet = weakref.WeakSet()
        self._lock = threading.Lock()

    def _remember(self, stream):
        sock = stream.get_extra_info("socket")
        if sock is not None:
            with self._lock:
                self._sockets.add(sock)
        return stream

    def connect_tcp(self, *args, **kwargs):
        return self._remember(self._inner.connect_tcp(*args, **kwargs))

    def connect_unix_socket(self, *args, **kwargs):
        return self._remember(self._inner.connect_unix_socket(*args, **kwargs))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)

    def shutdown_all(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed


def _abortable_backends(client: httpx.Client) -> list[_AbortableBackend]:
    """Wrap the network backend of each connection pool of `client` (httpx offers no public way in)."""
    backends = []
    for transport in [client._transport, *client._mounts.values()]:
        pool = getattr(transport, "_pool", None)
        inner = getattr(pool, "_network_backend", None)
        if inner is not None:
            backend = _AbortableBackend(inner)
            pool._network_backend = backend
            backends.append(backend)
    return backends


def size_text(size: int) -> str:
    """64 KiB, 4 MiB: a bound as the messages and docs name it."""
    return f"{size // (1024 * 1024)} MiB" if size >= 1024 * 1024 else f"{size // 1024} KiB"


def read_at_most(response: httpx.Response, limit: int, *, keep_broken: bool = False) -> bytes:
    """The body, read no further than one byte past `limit`, and the answer closed.

    What is kept is what the body began with, so longer than `limit` means too long. A body that breaks
    off raises httpx's error, or is kept as far as it came with `keep_broken`."""
    try:
        return response.content  # already read whole
    except httpx.ResponseNotRead:
        pass
    body = bytearray()
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > limit:
                break
    except httpx.HTTPError:
        if not keep_broken:
            raise
    finally:
        response.close()
    # Kept on the answer (httpx has no public way), so `.content` and `.json()` read the bounded body.
    response._content = bytes(body[:limit + 1])
    return response._content


def read_error_body(response: httpx.Response) -> bytes:
    """An error answer's body, read no further than one byte past MAX_ERROR_BODY, and the answer closed.
    A body that breaks off is kept as far as it came: the status still speaks."""
    return read_at_most(response, MAX_ERROR_BODY, keep_broken=True)


def registry_error(response: httpx.Response, what: str) -> ImageBuildError:
    """A RegistryError from the registry's `{"errors": [...]}` body, or its status."""
    code = message = None
    try:
        if len(read_error_body(response)) <= MAX_ERROR_BODY:
            errors = response.json().get("errors") or []
            if errors:
                code = errors[0].get("code")
                message = errors[0].get("message")
            code = str(code)[:80] if code is not None else None
            message = str(message)[:300] if message is not None else None
    except (ValueError, AttributeError, TypeError, KeyError, IndexError, RecursionError, httpx.HTTPError):
        code = message = None  # an error body that says nothing usable: the status speaks
    detail = f"{code}: {message}" if code else f"HTTP {response.status_code}"
    if response.status_code == 403 or code == "DENIED":
        return AuthError(f"{what}: access denied by the registry ({detail})",
                         hint="check that your account may push or pull this repository")
    return RegistryError(f"{what}: {detail}", status=response.status_code, code=code,
                         retried=bool(response.extensions.get(RETRIED)))
