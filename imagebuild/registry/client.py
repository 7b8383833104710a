"""The distribution-API client: manifests, tags and blobs of one registry host.

Quirks of the CNCF distribution 2.8 registry are normal here: tag lists may
ignore pagination (a page without a `Link` header is the last), there is no
referrers API, and a cross-repository mount may answer 202 with an ordinary
upload session, which is then used for the upload.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator, Iterable, TypeVar

from imagebuild.registry.http import httpx

from imagebuild.errors import RegistryError
from imagebuild.frozen import mutable
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.digest import Digest, is_digest
from imagebuild.oci.model import MAX_MANIFEST_BYTES, Descriptor, MalformedError, ManifestBytes, load_json_object
from imagebuild.registry.auth import Credentials, repository_scope
from imagebuild.registry.transport import (DEFAULT_ATTEMPTS, DEFAULT_BACKOFF, DEFAULT_TIMEOUT, Transport,
                                          registry_error, size_text, _UNSET)

ACCEPT_MANIFESTS = ", ".join(mt.ALL_MANIFEST_TYPES)
CHUNKED_THRESHOLD = 32 * 1024 * 1024
CHUNK_SIZE = 32 * 1024 * 1024
STREAM_BUFFER = 1024 * 1024
BLOB_ATTEMPTS = 4
UPLOAD_CANCEL_TIMEOUT = 5.0   # seconds for the DELETE of an upload session given up on
# A referrers listing in more pages than this is refused: each costs a request, and an image has a
# handful of attachments (a registry paging by 10, as some do, fits the entry bound of 1000 in 100).
MAX_REFERRER_PAGES = 100
# A tag list is read in pages of at most MAX_ANSWER_BODY each (the transport's bound), and refused when its
# pages pass these together: a registry naming next pages without end would otherwise never finish.
MAX_TAG_LIST_BYTES = 32 * 1024 * 1024
MAX_TAG_PAGES = 10_000

Opener = Callable[[], contextlib.AbstractContextManager]  # yields an object with read(n)
T = TypeVar("T")


@mutable
class UploadOutcome:
    how: str          # "skipped" | "mounted" | "uploaded"
    bytes_sent: int = 0


def _pull(repository: str) -> list[str]:
    return [repository_scope(repository, "pull")]


def _push(repository: str, mount_from: str | None = None) -> list[str]:
    scopes = [repository_scope(repository, "pull", "push")]
    if mount_from and mount_from != repository:
        # A mount reads the source repository, so the token must allow pulling it too.
        scopes.append(repository_scope(mount_from, "pull"))
    return scopes


class RegistryClient:
    def __init__(self, host: str, *, insecure: bool | None = None,
                 credentials: Credentials | None | object = _UNSET, attempts: int = DEFAULT_ATTEMPTS,
                 backoff: float = DEFAULT_BACKOFF, chunked_threshold: int = CHUNKED_THRESHOLD,
                 chunk_size: int = CHUNK_SIZE, timeout: float = DEFAULT_TIMEOUT):
        self.transport = Transport(host, insecure=insecure, credentials=credentials, attempts=attempts,
                                   backoff=backoff, timeout=timeout)
        self.host = host
        self.chunked_threshold = chunked_threshold
        self.chunk_size = chunk_size
        # Repositories whose referrers API answered that there is none: a registry does not grow one
        # within a command, so their referrers tag is used without asking again per attachment.
        self._without_referrers_api: set[str] = set()

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def counters(self):
        return self.transport.counters

    # -- API root -------------------------------------------------------------

    def ping(self) -> None:
        response = self.transport.request("GET", "/v2/")
        if response.status_code != 200:
            raise registry_error(response, f"registry {self.host} did not answer /v2/")

    # -- manifests and tags ---------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> ManifestBytes | None:
        """The manifest's exact bytes, or None when the registry does not know it."""
        response = self._manifest_request("GET", repository, reference, "reading", stream=True)
        if response is None:
            return None
        try:
            raw = self._bounded_body(response, MAX_MANIFEST_BYTES, f"the manifest of {repository}:{reference}")
        finally:
            response.close()
        digest = Digest.of(raw)
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"registry {self.host} sent a manifest for {reference} whose digest is {digest}")
        # The type the manifest names itself wins over the Content-Type: registries and proxies in front
        # of them have been seen to send `application/json` or another manifest type.
        media_type = _declared_media_type(raw)
        if media_type is None:
            sent = response.headers.get("content-type", "").split(";")[0].strip()
            media_type = sent if sent in mt.ALL_MANIFEST_TYPES else mt.OCI_MANIFEST
        return ManifestBytes(raw, media_type, digest)

    def _bounded_body(self, response: httpx.Response, limit: int, what: str) -> bytes:
        """The body, refused as soon as it passes `limit` bytes, before anything parses it."""
        def too_large() -> RegistryError:
            return RegistryError(f"registry {self.host} sent {what} larger than {limit // (1024 * 1024)} MiB",
                                 code="SIZE_INVALID")

        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large()
        body = bytearray()
        try:
            for chunk in response.iter_bytes(STREAM_BUFFER):
                body += chunk
                if len(body) > limit:
                    raise too_large()
        except httpx.HTTPError as exc:
            raise RegistryError(f"registry {self.host} broke off {what}: {exc or type(exc).__name__}",
                                hint="retry") from None
        self.transport.count_bytes(received=len(body))
        return bytes(body)

    def head_manifest(self, repository: str, reference: str) -> Digest | None:
        response = self._manifest_request("HEAD", repository, reference, "checking")
        value = response.headers.get("docker-content-digest") if response is not None else None
        if value and not is_digest(value):
            raise RegistryError(f"registry {self.host} answered {repository}:{reference} with the digest "
                                f"{value[:80]!r}, not sha256: and 64 hex digits")
        return Digest(value) if value else None

    def _manifest_request(self, method: str, repository: str, reference: str, doing: str,
                          stream: bool = False) -> httpx.Response | None:
        """GET or HEAD a manifest; None when the registry does not know it."""
        response = self.transport.request(method, f"/v2/{repository}/manifests/{reference}",
                                          scopes=_pull(repository), headers={"Accept": ACCEPT_MANIFESTS},
                                          stream=stream)
        if response.status_code == 404:
            response.close()
            return None
        if response.status_code != 200:
            try:
                raise registry_error(response, f"{doing} manifest {repository}:{reference}")
            finally:
                response.close()
        return response

    def put_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> Digest:
        """PUT the exact bytes; the registry must confirm their digest."""
        expected = Digest.of(raw)
        response = self.transport.request("PUT", f"/v2/{repository}/manifests/{reference}",
                                          scopes=_push(repository), headers={"Content-Type": media_type},
                                          body=raw)
        if response.status_code not in (200, 201):
            raise registry_error(response, f"writing manifest {repository}:{reference}")
        answered = response.headers.get("docker-content-digest")
        if answered and answered != expected:
            raise RegistryError(f"registry {self.host} stored {repository}:{reference} as {answered}, "
                                f"not {expected}", hint="the registry changed the manifest; use another registry")
        return expected

    def delete_manifest(self, repository: str, digest: str) -> bool:
        """DELETE a manifest by digest (and so every tag on it); False when the registry does not allow
        deletion (distribution answers 405 unless `storage.delete.enabled`)."""
        response = self.transport.request("DELETE", f"/v2/{repository}/manifests/{digest}",
                                          scopes=_push(repository))
        if response.status_code in (200, 202, 404):
            return True
        if response.status_code in (405, 501):
            return False
        raise registry_error(response, f"deleting manifest {repository}@{digest}")

    def list_referrers(self, repository: str, digest: str, artifact_type: str | None = None, *,
                       max_entries: int, pages: int = MAX_REFERRER_PAGES) -> list[dict] | None:
        """The OCI 1.1 referrers API's descriptors of manifests whose subject is `digest` (asked for those
        of `artifact_type`, which a registry may ignore); None when the registry has no such API
        (distribution 2.8 answers 404).

        A registry that cannot answer in one page names the next in a `Link: <…>; rel="next"` header;
        it is followed on this registry only, up to `pages` pages, and no further once more than
        `max_entries` entries came (the caller refuses that many), all pages within MAX_MANIFEST_BYTES."""
        if repository in self._without_referrers_api:
            return None
        what = f"the referrers of {repository}@{digest}"
        manifests: list[dict] = []
        received = 0
        url: str | None = f"/v2/{repository}/referrers/{digest}"
        params = {"artifactType": artifact_type} if artifact_type else None
        seen: set[str] = set()
        while url is not None and url not in seen and len(manifests) <= max_entries:
            if len(seen) == pages:
                raise RegistryError(f"registry {self.host} sent {what} in more than {pages} pages",
                                    code="SIZE_INVALID")
            seen.add(url)
            response = self.transport.request("GET", url, scopes=_pull(repository), params=params,
                                              headers={"Accept": mt.OCI_INDEX}, stream=True)
            params = None     # a next page's link carries the query it needs
            try:
                if response.status_code == 404 and not manifests and len(seen) == 1:
                    self._without_referrers_api.add(repository)
                    return None
                if response.status_code != 200:
                    raise registry_error(response, f"listing referrers of {repository}@{digest}")
                if response.headers.get("content-type", "").split(";")[0].strip() != mt.OCI_INDEX:
                    if len(seen) == 1:
                        self._without_referrers_api.add(repository)
                        return None
                    raise RegistryError(f"registry {self.host} sent a page of {what} that is no OCI index")
                # Read within the manifest's bound as it arrives: a registry's answer of any size is refused
                # before it fills memory.
                raw = self._bounded_body(response, MAX_MANIFEST_BYTES, what)
                url = self._next_page(response, what)
            finally:
                response.close()
            received += len(raw)
            if received > MAX_MANIFEST_BYTES:
                raise RegistryError(f"registry {self.host} sent {what} larger than "
                                    f"{MAX_MANIFEST_BYTES // (1024 * 1024)} MiB in all", code="SIZE_INVALID")
            manifests.extend(self._referrers_page(raw, repository, digest))
        # Not filtered by `artifact_type` here, whether or not the registry applied it: the caller checks
        # every entry it was sent before it keeps those of the type.
        return manifests

    def _referrers_page(self, raw: bytes, repository: str, digest: str) -> list[dict]:
        try:
            manifests = load_json_object(raw, "referrers index").get("manifests") or []
        except MalformedError as exc:
            raise RegistryError(f"registry {self.host} sent a malformed referrers index of "
                                f"{repository}@{digest}: {exc}") from None
        if not isinstance(manifests, list) or not all(isinstance(m, dict) for m in manifests):
            raise RegistryError(f"registry {self.host} sent a referrers index of {repository}@{digest} whose "
                                "manifests are not a list of objects")
        return manifests

    def _next_page(self, response: httpx.Response, what: str) -> str | None:
        """The absolute URL of the page a `Link: <…>; rel="next"` header names (a relative one resolved
        against the answer's URL), or None. A page on another host, scheme or port is refused: the
        request would carry this registry's credentials there."""
        link = response.links.get("next", {}).get("url")
        if not link:
            return None
        target = response.url.join(link)
        base = httpx.URL(self.transport.base_url)
        if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
            raise RegistryError(f"registry {self.host} sent {what} with a next page on another registry "
                                f"({target.scheme}://{target.netloc.decode(errors='replace')[:100]})",
                                hint="use the registry the pages are on")
        return str(target)

    def list_tags(self, repository: str) -> list[str]:
        """All tags; follows `Link` pages when the registry sends them, else one page is all. Each page is
        read within the transport's MAX_ANSWER_BODY, all of them within MAX_TAG_LIST_BYTES and
        MAX_TAG_PAGES."""
        tags: list[str] = []
        url: str | None = f"/v2/{repository}/tags/list"
        seen = set()
        received = 0
        while url and url not in seen:
            if len(seen) == MAX_TAG_PAGES:
                raise RegistryError(f"registry {self.host} sent the tags of {repository} in more than "
                                    f"{MAX_TAG_PAGES} pages", code="SIZE_INVALID")
            seen.add(url)
            response = self.transport.request("GET", url, scopes=_pull(repository))
            if response.status_code == 404:
                return tags
            if response.status_code != 200:
                raise registry_error(response, f"listing tags of {repository}")
            received += len(response.content)
            if received > MAX_TAG_LIST_BYTES:
                raise RegistryError(f"registry {self.host} sent the tags of {repository} larger than "
                                    f"{size_text(MAX_TAG_LIST_BYTES)} in all", code="SIZE_INVALID")
            tags.extend(self._tag_page(response, repository))
            url = self._next_page(response, f"the tags of {repository}")
        return sorted(set(tags))

    def _tag_page(self, response: httpx.Response, repository: str) -> list[str]:
        try:
            found = load_json_object(response.content, "tag list").get("tags") or []
        except MalformedError as exc:
            raise RegistryError(f"registry {self.host} sent a malformed tag list of {repository}: {exc}") from None
        if not isinstance(found, list) or not all(isinstance(tag, str) for tag in found):
            raise RegistryError(f"registry {self.host} sent a tag list of {repository} whose tags are not "
                                "a list of strings")
        return found

    # -- blobs -------------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        response = self.transport.request("HEAD", f"/v2/{repository}/blobs/{digest}", scopes=_pull(repository))
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise registry_error(response, f"checking blob {digest} in {repository}")

    def blob_size(self, repository: str, digest: str) -> int | None:
        """The size the registry gives a blob (its Content-Length), or None when it does not hold it."""
        response = self.transport.request("HEAD", f"/v2/{repository}/blobs/{digest}", scopes=_pull(repository))
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise registry_error(response, f"checking blob {digest} in {repository}")
        try:
            return int(response.headers.get("content-length", ""))
        except ValueError:
            return None

    @contextlib.contextmanager
    def open_blob(self, repository: str, digest: str) -> Iterator[httpx.Response]:
        response = self.transport.request("GET", f"/v2/{repository}/blobs/{digest}",
                                          scopes=_pull(repository), stream=True)
        try:
            if response.status_code != 200:
                raise registry_error(response, f"reading blob {digest} from {repository}")
            yield response
        finally:
            response.close()

    @contextlib.contextmanager
    def blob_chunks(self, repository: str, digest: str, size: int | None = None) -> Iterator[Iterable[bytes]]:
        """A blob's bytes as they arrive, counted as received; with `size`, refused as soon as they pass it
        and when they end short of it."""
        with self.open_blob(repository, digest) as response:
            yield _Counted(response.iter_bytes(STREAM_BUFFER), self.transport, digest, size, self.host)

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> str | None:
        """Mount a blob from another repository; None when mounted, else an upload location."""
        response = self.transport.request(
            "POST", f"/v2/{repository}/blobs/uploads/", params={"mount": digest, "from": from_repository},
            scopes=_push(repository, from_repository), idempotent=False)
        if response.status_code == 201:
            return None
        if response.status_code == 202:
            # Not mounted (distribution answers so when the source lacks the blob): an upload session instead.
            return response.headers.get("location") or self._start_upload(repository)
        raise registry_error(response, f"mounting blob {digest} into {repository}")

    def upload_blob(self, repository: str, descriptor: Descriptor, opener: Opener, *,
                    mount_from: str | None = None, absent: bool = False,
                    location: str | None = None) -> UploadOutcome:
        """Make one blob present in `repository`: skip, mount or upload it.

        A blob is content addressed, so a failed upload is safely retried as a
        whole from a new upload session; a HEAD first finds out whether the
        failed attempt had in fact completed. `absent`: the caller has just
        seen the blob missing, so the first HEAD is spared; `location`: an
        upload session already open (a mount answered 202), used by the first attempt.
        """
        digest = descriptor.digest
        skip_check = [absent]
        opened = [location]

        def present() -> UploadOutcome | None:
            if skip_check[0]:
                skip_check[0] = False
                return None
            return UploadOutcome("skipped") if self.blob_exists(repository, digest) else None

        def upload() -> UploadOutcome:
            session, opened[0] = opened[0], None
            if session is None and mount_from and mount_from != repository:
                session = self.mount_blob(repository, digest, mount_from)
                if session is None:
                    return UploadOutcome("mounted")
            return UploadOutcome("uploaded", self._upload(repository, descriptor, opener, session))

        return self._retry_blob(upload, f"uploading blob {digest} to {self.host}/{repository}", settled=present)

    def retry_transfer(self, attempt_once: Callable[[], T], doing: str) -> T:
        """Run a whole blob transfer (a download into some sink) again after a retryable failure."""
        return self._retry_blob(attempt_once, doing)

    def _retry_blob(self, attempt_once: Callable[[], T], doing: str, *,
                    settled: Callable[[], T | None] | None = None) -> T:
        """Run a whole blob transfer again after a retryable failure; blobs are content addressed.

        `settled`, asked before every attempt and outside the retry (the transport
        already retries it), may answer without a transfer.
        """
        for attempt in range(1, BLOB_ATTEMPTS + 1):
            if settled is not None and (outcome := settled()) is not None:
                return outcome
            self.transport.check_cancelled()
            try:
                return attempt_once()
            except (httpx.HTTPError, RegistryError) as exc:
                if attempt == BLOB_ATTEMPTS or not _retryable(exc) or self.transport.cancelled.is_set():
                    # What this loop gave up on is final: a caller's own retry must not start it over.
                    if isinstance(exc, httpx.HTTPError):
                        raise RegistryError(f"{doing} failed: {exc or type(exc).__name__}", hint="retry",
                                            retried=True) from None
                    if attempt == BLOB_ATTEMPTS:
                        exc.retried = True
                    raise
                time.sleep(self.transport._delay(attempt))
        raise AssertionError("unreachable")

    def _start_upload(self, repository: str) -> str:
        response = self.transport.request("POST", f"/v2/{repository}/blobs/uploads/",
                                          scopes=_push(repository), idempotent=False)
        if response.status_code != 202 or "location" not in response.headers:
            raise registry_error(response, f"starting an upload to {repository}")
        return response.headers["location"]

    def _upload(self, repository: str, descriptor: Descriptor, opener: Opener, location: str | None) -> int:
        session = [location or self._start_upload(repository)]
        try:
            return self._send_blob(repository, descriptor, opener, session)
        except BaseException:
            self._cancel_upload(repository, session[0])
            raise

    def _cancel_upload(self, repository: str, location: str) -> None:
        """Tell the registry to drop an upload session given up on; a registry keeps the bytes of an
        abandoned one for days. Best effort: a short wait, no retry, any failure ignored."""
        if self.transport.cancelled.is_set():
            return  # an interrupted push ends now; waiting here would hold it up
        try:
            response = self.transport.request("DELETE", location, scopes=_push(repository), idempotent=False,
                                              timeout=UPLOAD_CANCEL_TIMEOUT)
            response.close()
        except Exception:
            pass

    def _send_blob(self, repository: str, descriptor: Descriptor, opener: Opener, session: list[str]) -> int:
        """The bytes of one blob into the upload session `session[0]`, kept at the newest Location."""
        location = session[0]
        scopes = _push(repository)
        if descriptor.size <= self.chunked_threshold:
            body = _stream_body(opener, descriptor.size, self.transport)
            response = self.transport.request(
                "PUT", _with_digest(location, descriptor.digest), scopes=scopes, body=body.open,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(descriptor.size)},
                idempotent=False)
            self.transport.count_bytes(sent=body.sent)
            if response.status_code != 201:
                raise registry_error(response, f"uploading blob {descriptor.digest} to {repository}")
            return body.sent
        sent = 0
        with opener() as reader:
            while sent < descriptor.size:
                self.transport.check_cancelled()
                chunk = reader.read(min(self.chunk_size, descriptor.size - sent))
                if not chunk:
                    break
                response = self.transport.request(
                    "PATCH", location, scopes=scopes, body=chunk, idempotent=False,
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Range": f"{sent}-{sent + len(chunk) - 1}"})
                if response.status_code != 202:
                    raise registry_error(response, f"uploading a chunk of blob {descriptor.digest} to {repository}")
                sent += len(chunk)
                self.transport.count_bytes(sent=len(chunk))
                location = session[0] = response.headers.get("location", location)
            # Reading to the end lets a verifying reader check the blob's digest.
            if reader.read(1):
                raise RegistryError(f"blob {descriptor.digest} is larger than its descriptor says",
                                    code="SIZE_INVALID")
        response = self.transport.request("PUT", _with_digest(location, descriptor.digest), scopes=scopes,
                                          headers={"Content-Length": "0"}, idempotent=False)
        if response.status_code != 201:
            raise registry_error(response, f"finishing the upload of blob {descriptor.digest} to {repository}")
        return sent


class _Counted:
    """A blob download's chunks, counted; with a size, refused once they pass it or end short of it.

    The digest alone would let a manifest claim any size for the right bytes; the size is what
    exports and pushes announce, so it must be true too. Refusing at the first byte too many keeps
    a registry from streaming an endless body."""

    def __init__(self, chunks: Iterable[bytes], transport: Transport, digest: str, size: int | None, host: str):
        self._chunks = chunks
        self._transport = transport
        self._digest = digest
        self._size = size
        self._host = host
        self.total = 0

    def _wrong_size(self, more: bool) -> RegistryError:
        told = "more than" if more else f"{self.total} bytes, not"
        return RegistryError(f"registry {self._host} sent blob {self._digest} whose size is {told} the "
                             f"{self._size} bytes its descriptor says", code="SIZE_INVALID")

    def __iter__(self):
        for chunk in self._chunks:
            self.total += len(chunk)
            self._transport.count_bytes(received=len(chunk))
            if self._size is not None and self.total > self._size:
                raise self._wrong_size(more=True)
            yield chunk
        if self._size is not None and self.total != self._size:
            raise self._wrong_size(more=False)


class _stream_body:
    """A request body read from a fresh stream on every send."""

    def __init__(self, opener: Opener, size: int, transport: Transport):
        self._opener = opener
        self._size = size
        self._transport = transport
        self.sent = 0

    def open(self) -> Iterator[bytes]:
        self.sent = 0
        with self._opener() as reader:
            while chunk := reader.read(STREAM_BUFFER):
                self._transport.check_cancelled()  # an interrupted push sends no further byte
                self.sent += len(chunk)
                if self.sent > self._size:
                    break
                yield chunk
            if self.sent != self._size:
                # The request announced the descriptor's size; stop before the registry gets a short body.
                raise RegistryError(f"blob is {self.sent} bytes, not the {self._size} its descriptor says",
                                    code="SIZE_INVALID")


def _declared_media_type(raw: bytes) -> str | None:
    """The manifest type a manifest names itself, or None."""
    try:
        declared = load_json_object(raw, "manifest").get("mediaType")
    except MalformedError:
        return None  # the parse that follows says what is wrong with it
    return declared if declared in mt.ALL_MANIFEST_TYPES else None


def _with_digest(location: str, digest: str) -> str:
    return str(httpx.URL(location).copy_merge_params({"digest": digest}))


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, RegistryError):
        # A lost connection surfaces without a status; 404 is a vanished upload
        # session; 5xx and 429 are the registry's own trouble. What the transport
        # already retried is final, or retries would multiply.
        if exc.retried:
            return False
        if exc.status is None:
            return exc.code is None
        return exc.status >= 500 or exc.status in (404, 429)
    return False
