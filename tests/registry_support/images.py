"""Small runnable images written straight into a LayoutStore.

The base layer holds busybox-static, so `docker run` works without any
image from a public registry. `filler` adds incompressible bytes to a lower
layer, to make the app layer small next to the rest, as in a real app.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from imagebuild.oci.layer import Entry, write_layer
from imagebuild.oci.model import (ANNOTATION_CREATED, ANNOTATION_REVISION, ANNOTATION_SOURCE,
                                  ANNOTATION_VERSION, Image)
from imagebuild.stores.layout import LayoutStore
from tests.ports import free_port  # noqa: F401 (tests import it from here)

EPOCH = 1_700_000_000
CREATED = "2023-11-14T22:13:20Z"


def _layer(store: LayoutStore, entries: list[Entry]):
    store.ensure()
    with store.blob_writer() as writer:
        result = write_layer(entries, writer.file, source_date_epoch=EPOCH)
        writer.commit(result.digest)
    return result.as_layer()


def base_layers(store: LayoutStore, filler_bytes: int = 0, seed: bytes = b"seed") -> list:
    busybox = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    layers = [_layer(store, [Entry.file("bin/busybox", busybox, mode=0o755),
                              Entry.symlink("bin/sh", "busybox"), Entry.symlink("bin/cat", "busybox")])]
    if filler_bytes:
        # Deterministic, incompressible bytes: the same seed gives the same layer digest.
        import hashlib
        out = bytearray()
        counter = 0
        while len(out) < filler_bytes:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        layers.append(_layer(store, [Entry.file("opt/runtime/blob.bin", bytes(out[:filler_bytes]))]))
    return layers


def write_app_image(store: LayoutStore, name: str, version: str, message: str = "hello",
                    filler_bytes: int = 0, revision: str | None = None, extra_layers: int = 0,
                    labels: dict[str, str] | None = None) -> str:
    """An image whose top layer holds the app (its config carrying `labels`); returns the local ref
    name `name:version`."""
    layers = base_layers(store, filler_bytes)
    for index in range(extra_layers):
        layers.append(_layer(store, [Entry.file(f"opt/extra/{index}.txt", f"{version} {index}\n".encode())]))
    layers.append(_layer(store, [Entry.file("app/message.txt", (message + "\n").encode())]))
    runtime = {"Entrypoint": ["/bin/busybox", "echo", message], "Env": ["PATH=/bin"]}
    if labels:
        runtime["Labels"] = dict(labels)
    return _write_image(store, name, version, layers, runtime, revision)


# What stands in for the image's launcher: it runs its arguments, as the real one does once it is done.
STAND_IN_LAUNCHER = b'#!/bin/sh\nexec "$@"\n'


def write_server_image(store: LayoutStore, name: str, version: str, healthy: bool = True, port: int = 8000) -> str:
    """A web server image laid out as a baked one: busybox httpd on `port` as user 10001, started through a
    launcher at the launcher's path; /health answers 200, or 404 when not `healthy`."""
    from imagebuild.contract import LAUNCHER_PATH

    entries = [Entry.file(LAUNCHER_PATH.lstrip("/"), STAND_IN_LAUNCHER, mode=0o755),
               Entry.file("app/www/index.html", f"{version}\n".encode())]
    if healthy:
        entries.append(Entry.file("app/www/health", b"ok\n"))
    layers = base_layers(store) + [_layer(store, entries)]
    runtime = {"Entrypoint": [LAUNCHER_PATH], "Cmd": ["/bin/busybox", "httpd", "-f", "-p", str(port), "-h", "/app/www"],
               "Env": ["PATH=/bin"], "User": "10001:10001", "ExposedPorts": {f"{port}/tcp": {}}}
    return _write_image(store, name, version, layers, runtime)


def _write_image(store: LayoutStore, name: str, version: str, layers: list, runtime: dict,
                 revision: str | None = None) -> str:
    image = Image(created=CREATED, runtime=runtime)
    for index, layer in enumerate(layers):
        image = image.with_layer(layer, created_by=f"test layer {index}")
    image = image.with_annotations(**{
        ANNOTATION_VERSION: version, ANNOTATION_REVISION: revision or version.removesuffix("-dirty"),
        ANNOTATION_CREATED: CREATED, ANNOTATION_SOURCE: "https://example.invalid/app.git"})
    ref_name = f"{name}:{version}"
    store.write_image(image, [ref_name])
    return ref_name


def app_layer_sizes(store: LayoutStore, ref_name: str) -> dict[str, int]:
    manifest = store.read_manifest(store.resolve(ref_name).digest)
    return {"app": manifest.layers[-1].size, "config": manifest.config.size, "manifest": len(manifest.raw)}



