"""A Docker engine as a sink, through the Docker SDK (`docker load`)."""

from __future__ import annotations

import os
import re
import tempfile

from imagebuild.errors import ImageBuildError, UserError
from imagebuild.stores.archive import write_docker_archive
from imagebuild.stores.layout import LayoutStore


class DaemonError(ImageBuildError):
    exit_code = 7


def connect(base_url: str | None = None):
    """A client of the Docker engine that answered a ping; a UserError when none answers."""
    import docker
    from docker.errors import DockerException

    where = base_url or os.environ.get("DOCKER_HOST") or "the default socket"
    try:
        client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
        client.ping()
    except DockerException as exc:
        raise UserError(f"no Docker engine answers at {where}: {_reason(exc)}",
                        hint="start dockerd or set DOCKER_HOST; --load needs an engine") from None
    return client


def _reason(exc: Exception) -> str:
    """The OS's words from deep inside the SDK's wrapped exception ("Connection refused")."""
    text = str(exc)
    found = (re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
             or re.search(r"Error\(-?\d+, '([^']+)'\)", text))
    return found.group(1).strip() if found else text.splitlines()[0]


def load_into_daemon(store: LayoutStore, manifest_digest: str, repo_tags: list[str],
                     base_url: str | None = None) -> list[str]:
    """Load the image into a Docker engine; return the tags it now has."""
    from docker.errors import DockerException

    client = connect(base_url)
    with tempfile.TemporaryDirectory(prefix="imagebuild-load-") as tmp:
        path = os.path.join(tmp, "image.tar")
        write_docker_archive(store, manifest_digest, repo_tags, path)
        try:
            with open(path, "rb") as handle:
                images = client.images.load(handle)
        except DockerException as exc:
            raise DaemonError(f"docker load refused the image: {exc}") from None
    return [tag for image in images for tag in image.tags]
