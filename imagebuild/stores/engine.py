"""A Docker engine as a store, through the Docker SDK: images go in by `docker load`
(streamed, never staged on disk) and come out by `docker save` into the local store.

The engine is wherever DOCKER_HOST points: the local socket, tcp://, or
ssh://user@host (the SDK's paramiko transport; the remote side runs
`docker system dial-stdio`, so it needs the docker CLI and sshd).
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import threading
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable, Iterator
from urllib.parse import urlparse

from imagebuild.errors import ImageBuildError, UserError
from imagebuild.oci.digest import Digest
from imagebuild.oci.layer import LayerResult, write_tar
from imagebuild.oci.model import Descriptor
from imagebuild.stores.archive import check_repo_tags, docker_archive_entries, read_docker_archive
from imagebuild.stores.layout import READ_CHUNK, LayoutStore, os_error_for
from imagebuild.stores.streams import IterReader

DEFAULT_SOCKET = "/var/run/docker.sock"
STREAM_CHUNK = 1 << 20        # what one piece of a streamed load holds
STREAM_DEPTH = 4              # pieces in flight: memory stays near STREAM_CHUNK * STREAM_DEPTH
MAX_INSPECTED = 64            # images looked at when searching the engine for layers it already has
WRITER_THREAD = "imagebuild-load-writer"
_CONTAINERD_STORE = "io.containerd.snapshotter"


class EngineError(ImageBuildError):
    exit_code = 7


def engine_address(base_url: str | None = None) -> str:
    """Where the SDK will connect, as a user would write it."""
    return base_url or os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"


def connect(base_url: str | None = None):
    """A client of the Docker engine that answered a ping; a UserError when none answers
    or when this user may not use it."""
    import docker
    import paramiko
    from docker.errors import DockerException

    where = engine_address(base_url)
    try:
        client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
        client.ping()
    except (DockerException, paramiko.SSHException, OSError) as exc:
        raise _connect_error(where, exc) from None
    return client


class EngineSession:
    """One connection to the Docker engine for a whole command, made when first needed: over
    ssh:// each connection costs a handshake, and a bake may need the engine three times
    (check --load, build a Dockerfile base, load)."""

    def __init__(self, base_url: str | None = None):
        self.base_url = base_url
        self._client = None

    def client(self):
        if self._client is None:
            self._client = connect(self.base_url)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _connect_error(where: str, exc: BaseException) -> UserError:
    reason = _reason(exc)
    url = urlparse(where if "://" in where else f"unix://{where}")
    if "Permission denied" in reason or isinstance(exc, PermissionError):
        if url.scheme in ("unix", "http+unix"):
            return UserError(f"permission denied on the Docker socket {url.path}",
                             hint="run as a member of its group, usually docker, "
                                  "or set DOCKER_HOST to an engine you may use")
        return UserError(f"permission denied by the Docker engine at {where}: {reason}")
    if url.scheme == "ssh":
        hint = "check that sshd runs there, that your key is accepted and the host is in ~/.ssh/known_hosts"
        if "RemoteDisconnected" in str(exc):
            # The login worked; the command the SDK runs on the far side did not.
            return UserError(f"no Docker engine answers at {where}: the SSH login worked, but the remote end "
                             "closed the connection", hint="`docker system dial-stdio` must run there: install "
                             "the docker CLI on that host and let this user use its engine")
        if "known_hosts" in reason:
            port = f"-p {url.port} " if url.port else ""
            hint = f"add its host key: ssh-keyscan {port}{url.hostname} >> ~/.ssh/known_hosts"
        elif "uthentication" in reason:
            hint = "the remote host does not accept your SSH key; name it with IdentityFile in ~/.ssh/config"
        return UserError(f"no Docker engine answers at {where}: {reason}", hint=hint)
    return UserError(f"no Docker engine answers at {where}: {reason}",
                     hint="start dockerd or set DOCKER_HOST; --load needs an engine")


def _reason(exc: BaseException) -> str:
    """The OS's words from deep inside the SDK's wrapped exception ("Connection refused")."""
    text = (str(exc) or type(exc).__name__).replace("[Errno None] ", "")
    found = (re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
             or re.search(r"Error\(-?\d+, '([^']+)'\)", text)
             or re.search(r"Disconnected\('([^']+)'\)", text))
    return found.group(1).strip() if found else text.splitlines()[0]


# -- load -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadReport:
    """What a load did: the tags the engine now has, and how much had to be sent."""

    tags: tuple[str, ...]
    image_id: Digest              # the engine's ID of the image: its config digest
    layers: int                   # layers in the image
    layers_sent: int              # layer files in the streamed archive (0: the engine had the image)
    bytes_sent: int


def load_into_engine(store: LayoutStore, manifest_digest: str, repo_tags: list[str],
                     base_url: str | None = None, client=None) -> list[str]:
    """Load the image into a Docker engine; return the tags it now has."""
    return list(load_image(store, manifest_digest, repo_tags, base_url=base_url, client=client).tags)


def load_image(store: LayoutStore, manifest_digest: str, repo_tags: list[str],
               base_url: str | None = None, client=None) -> LoadReport:
    """Load the image, streamed: the archive is written while the engine reads it.

    An engine that already has the image (same ID) is only tagged. Otherwise the
    leading layers whose chain the engine already has are left out of the
    archive; an engine that then asks for one of them anyway (it removed the
    image in between, or its image store needs every file) gets the full archive.
    """
    check_repo_tags(repo_tags)
    client = client or connect(base_url)
    manifest_digest = store.image_for(manifest_digest)   # an index: this machine's image
    manifest = store.read_manifest(manifest_digest)
    config = store.read_config(manifest)
    image_id = manifest.config.digest
    diff_ids = list(config.get("rootfs", {}).get("diff_ids", []))
    if _has_image(client, image_id):
        for repo_tag in repo_tags:
            repo, _, tag = repo_tag.rpartition(":")
            _api(lambda: client.api.tag(image_id, repo, tag, force=True), "docker tag")
        return LoadReport(tuple(repo_tags), image_id, len(diff_ids), 0, 0)
    present = _layers_present(client, diff_ids, repo_tags)
    try:
        return _stream_load(client, store, manifest_digest, repo_tags, image_id, len(diff_ids), present)
    except _LayerMissing:
        return _stream_load(client, store, manifest_digest, repo_tags, image_id, len(diff_ids), 0)


class _LayerMissing(Exception):
    pass


def _stream_load(client, store: LayoutStore, manifest_digest: str, repo_tags: list[str], image_id: str,
                 layer_count: int, omit: int) -> LoadReport:
    from docker.errors import DockerException
    import requests

    entries = docker_archive_entries(store, manifest_digest, repo_tags, omit_layers=omit)

    def write(out: BinaryIO) -> None:
        try:
            write_tar(entries, out, source_date_epoch=0)
        except OSError as exc:   # a blob the store cannot read back: the store's error, not the engine's
            raise os_error_for(store.root, exc) from None

    body = _Streamed(write)
    tags: list[str] = []
    try:
        # Not quiet: the engine reports each layer as it unpacks it, so a large image never leaves
        # the response silent for longer than the client's read timeout.
        for message in client.api.load_image(iter(body), quiet=False):
            error = message.get("error") or (message.get("errorDetail") or {}).get("message")
            if error:
                if omit and "no such file or directory" in error:
                    raise _LayerMissing(error)
                raise EngineError(f"docker load refused the image: {error.strip()}")
            found = re.match(r"Loaded image: (\S+)", message.get("stream") or "")
            if found:
                tags.append(found.group(1))
    except (DockerException, requests.RequestException, OSError) as exc:
        body.raise_failure()
        if omit and "no such file or directory" in str(exc):
            raise _LayerMissing(str(exc)) from None
        raise EngineError(f"docker load failed: {_reason(exc)}") from None
    finally:
        body.close()
    body.raise_failure()
    return LoadReport(tuple(tags or repo_tags), image_id, layer_count, layer_count - omit, body.sent)


def _api(call: Callable, what: str):
    from docker.errors import DockerException

    try:
        return call()
    except DockerException as exc:
        raise EngineError(f"{what} failed: {_reason(exc)}") from None


def _has_image(client, image_id: str) -> bool:
    from docker.errors import DockerException, NotFound

    try:
        return client.api.inspect_image(image_id)["Id"] == image_id
    except NotFound:
        return False
    except DockerException as exc:
        raise EngineError(f"cannot ask the engine about {image_id}: {_reason(exc)}") from None


def uses_containerd_store(client) -> bool:
    """Whether the engine keeps images in containerd (its containerd image store) rather than in
    a graph driver: only the latter is known to skip layer files it has, so the former gets all."""
    info = _api(client.info, "docker info")
    status = dict(tuple(pair) for pair in info.get("DriverStatus") or [] if len(pair) == 2)
    return status.get("driver-type", "").startswith(_CONTAINERD_STORE)


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """The engine's layer identities: each layer named together with every layer below it."""
    chain: list[str] = []
    for diff_id in diff_ids:
        if not chain:
            chain.append(diff_id)
        else:
            chain.append("sha256:" + hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest())
    return chain


def _layers_present(client, diff_ids: list[str], repo_tags: list[str]) -> int:
    """How many leading layers of the image the engine already has.

    The engine's API has no "which layers do you have" question, so this looks
    at its images, the same repositories' images first, then the newest.
    """
    if not diff_ids or uses_containerd_store(client):
        return 0
    wanted = {chain: index + 1 for index, chain in enumerate(chain_ids(diff_ids))}
    repos = {tag.rpartition(":")[0] for tag in repo_tags}
    images = _api(client.api.images, "docker images")

    def order(summary: dict) -> tuple:
        mine = any(tag.rpartition(":")[0] in repos for tag in summary.get("RepoTags") or [])
        return (not mine, -int(summary.get("Created") or 0))

    best = 0
    for summary in sorted(images, key=order)[:MAX_INSPECTED]:
        try:
            layers = client.api.inspect_image(summary["Id"]).get("RootFS", {}).get("Layers") or []
        except Exception:  # removed meanwhile: it simply does not count
            continue
        best = max([best] + [wanted[chain] for chain in chain_ids(layers) if chain in wanted])
        if best == len(diff_ids):
            break
    return best


class _Streamed:
    """Bytes written by `write(file)` in a thread, handed out as an iterator of pieces.

    The queue is bounded, so the writer waits for the reader and memory stays
    flat however large the image. A failure in the writer (a corrupt blob) is
    raised by the iterator and kept for `raise_failure`: the HTTP client may
    wrap what the iterator raised in an error of its own, and the writer's
    failure is the cause to report. Closing stops the writer.
    """

    def __init__(self, write: Callable[[BinaryIO], None]):
        self._queue: queue.Queue = queue.Queue(maxsize=STREAM_DEPTH)
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._buffer = bytearray()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, args=(write,), name=WRITER_THREAD, daemon=True)
        self._thread.start()

    # the writer's side ------------------------------------------------------------
    def write(self, data) -> int:
        self._buffer += data
        if len(self._buffer) >= STREAM_CHUNK:
            self._put(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def flush(self) -> None:
        pass

    def _put(self, item) -> None:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _run(self, write: Callable[[BinaryIO], None]) -> None:
        try:
            write(self)  # type: ignore[arg-type]
            if self._buffer:
                self._put(bytes(self._buffer))
            self._put(None)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the reading thread, which raises it
            self._failure = exc
            try:
                self._put(None)
            except _Stopped:
                pass

    # the reader's side ------------------------------------------------------------
    def __iter__(self) -> Iterator[bytes]:
        while True:
            piece = self._queue.get()
            if piece is None:
                self.raise_failure()
                return
            self.sent += len(piece)
            yield piece

    def raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class _Stopped(Exception):
    pass


# -- save -------------------------------------------------------------------------------

def save_image(client, image: str, store: LayoutStore, ref_names: tuple[str, ...] = (),
               known: dict[str, LayerResult] | None = None) -> Descriptor:
    """`docker save` of one engine image, read as it arrives into the local store.
    `known`: layers (by diff_id) the store already holds, which are not stored again."""
    from docker.errors import DockerException
    import requests

    try:
        chunks = client.api.get_image(image, chunk_size=READ_CHUNK)
        return read_docker_archive(store, IterReader(chunks), ref_names, known)
    except (DockerException, requests.RequestException) as exc:
        raise EngineError(f"docker save of {image} failed: {_reason(exc)}") from None
