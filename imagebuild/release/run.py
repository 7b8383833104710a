"""`imagebuild run`: start an image from the local store in the local Docker engine, as an
environment would, so a developer can see what test or prod would do.

The image goes into the engine through imagebuild.stores.engine; the container gets
the environment's name in the variable the image's launcher reads, the image's
manifest digest in IMAGEBUILD_IMAGE_DIGEST (the image cannot know its own digest,
which depends on its layers), and the variables given with -e. Its output streams
to ours and its exit code becomes ours.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

from imagebuild.errors import UserError, quoted
from imagebuild.oci.digest import Digest
from imagebuild.contract import (ANNOTATION_ENVIRONMENTS, DEFAULT_ENVIRONMENT, DIGEST_VARIABLE, RUN_LABEL,
                                 launcher_variable)
from imagebuild.recipe.checks import VARIABLE_NAME
from imagebuild.stores.layout import LayoutStore

STOP_TIMEOUT = 10          # seconds `docker stop` gives the server after SIGTERM
_PUBLISH = re.compile(r"^(?:(?P<ip>[0-9.]+|\[[0-9a-fA-F:]+\]):)?(?P<host>\d+)(?::(?P<container>\d+))?$")


@dataclass(frozen=True)
class RunOptions:
    env: str | None = None                       # the environment; None lets the image detect it
    publish: tuple[str, ...] = ()                # [IP:]HOSTPORT[:CONTAINERPORT]
    variables: tuple[str, ...] = ()              # NAME=VALUE, or NAME to pass ours on
    detach: bool = False
    name: str | None = None
    docker_url: str | None = None


@dataclass(frozen=True)
class RunTarget:
    """What the store says about the image before anything reaches the engine."""

    reference: str                               # the name:tag it runs under in the engine
    digest: Digest
    environments: tuple[str, ...]
    variable: str
    port: int | None                             # the exposed port of the server
    environment: dict[str, str] = field(default_factory=dict)
    ports: dict[str, tuple[str, int | None]] = field(default_factory=dict)


def plan_run(store: LayoutStore, image: str, options: RunOptions,
             host_env: dict[str, str] | None = None) -> RunTarget:
    """Check everything a user can get wrong, without touching the engine."""
    host_env = dict(os.environ) if host_env is None else host_env
    if not store.exists():
        raise UserError(f"no image {quoted(image)}: the local store at {store.root} is empty",
                        hint="bake one first, or pull it")
    descriptor = store.resolve(image)
    kind = store.kind_of(descriptor)
    if kind not in ("image", "index"):
        raise UserError(f"{image} is not a container image", hint="`imagebuild images` lists the images")
    # A multi-platform index runs as this machine's image (the engine is given that one).
    config = store.read_config(store.read_manifest(store.image_for(descriptor.digest))).get("config") or {}
    labels = config.get("Labels") or {}
    environments = tuple(name for name in labels.get(ANNOTATION_ENVIRONMENTS, "").split(",") if name) \
        or (DEFAULT_ENVIRONMENT,)
    variable = launcher_variable(labels)
    if options.env is not None and options.env not in environments:
        raise UserError(f"unknown environment {options.env!r} for {image}",
                        hint=f"this image knows: {', '.join(environments)}")
    environment = _variables(options.variables, host_env)
    if options.env is not None:
        if variable in environment and environment[variable] != options.env:
            raise UserError(f"--env {options.env} and -e {variable}={environment[variable]} disagree",
                            hint="name the environment once")
        environment[variable] = options.env
    environment[DIGEST_VARIABLE] = str(descriptor.digest)
    exposed = [int(key.split("/")[0]) for key in config.get("ExposedPorts") or {}]
    port = int(environment["PORT"]) if environment.get("PORT", "").isdigit() else (exposed[0] if exposed else None)
    return RunTarget(reference=_engine_reference(store, image, str(descriptor.digest)),
                     digest=descriptor.digest, environments=environments, variable=variable, port=port,
                     environment=environment, ports=_ports(options.publish, port))


def _variables(given: tuple[str, ...], host_env: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in given:
        name, sep, value = item.partition("=")
        if not VARIABLE_NAME.match(name):
            raise UserError(f"-e {item!r}: {name!r} is not a variable name", hint="write -e NAME=VALUE or -e NAME")
        if not sep:
            if name not in host_env:
                raise UserError(f"-e {name}: {name} is not set here to pass on",
                                hint=f"write -e {name}=VALUE, or export {name} first")
            value = host_env[name]
        out[name] = value
    return out


def _ports(publish: tuple[str, ...], port: int | None) -> dict[str, tuple[str, int | None]]:
    """docker's `ports=` mapping. Without -p the server's port is published on a free loopback port."""
    if not publish:
        return {f"{port}/tcp": ("127.0.0.1", None)} if port else {}
    out: dict[str, tuple[str, int | None]] = {}
    for item in publish:
        found = _PUBLISH.match(item)
        if not found:
            raise UserError(f"-p {item!r} is not a port", hint="write -p HOSTPORT, -p HOSTPORT:PORT or -p IP:HOSTPORT:PORT")
        host = int(found["host"])
        target = int(found["container"]) if found["container"] else port
        if target is None:
            raise UserError(f"-p {item}: the image exposes no port", hint="write -p HOSTPORT:PORT")
        for number in (host, target):
            if not 1 <= number <= 65535:
                raise UserError(f"-p {item}: {number} is not a TCP port", hint="use 1-65535")
        out[f"{target}/tcp"] = ((found["ip"] or "127.0.0.1").strip("[]"), host)
    return out


def _engine_reference(store: LayoutStore, image: str, digest: str) -> str:
    """The name:tag the image carries in the engine: the one asked for, or a tag of the same digest."""
    refs = store.refs()
    if image in refs:
        return image
    names = sorted(name for name, descriptor in refs.items() if descriptor.digest == digest)
    return names[0] if names else f"imagebuild-run:{Digest(digest).short}"


@dataclass(frozen=True)
class Started:
    container_id: str
    address: str | None          # http://127.0.0.1:PORT when the server's port is published


def start(store: LayoutStore, target: RunTarget, options: RunOptions, say: Callable[[str], None]):
    """Load the image into the engine and start it; returns (container, output stream or None, Started).

    Unless detached, the output is attached before the container starts, so
    not even the first line of a container that exits at once is lost.
    """
    from docker.errors import APIError, ImageNotFound

    from imagebuild.stores.engine import EngineError, connect, load_into_engine
    from imagebuild.stores.registry import fetch_missing_blobs

    # Layers a registry's layer cache lent to the bake are fetched first, verified.
    fetch_missing_blobs(store, target.digest, progress=say)
    client = connect(options.docker_url)
    load_into_engine(store, target.digest, [target.reference], client=client)
    try:
        container = client.containers.create(target.reference, environment=target.environment,
                                             ports=target.ports, name=options.name,
                                             labels={RUN_LABEL: target.digest})
    except ImageNotFound as exc:
        raise EngineError(f"the engine lost {target.reference} right after loading it: {exc.explanation}") from None
    except APIError as exc:
        raise UserError(f"the engine refused to create a container of {target.reference}: "
                        f"{exc.explanation or exc}") from None
    output = None
    try:
        if not options.detach:
            output = container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
        container.start()
    except APIError as exc:
        _remove(container)
        raise UserError(f"the engine refused to start {target.reference}: {exc.explanation or exc}") from None
    address = None
    if target.port:
        container.reload()
        bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{target.port}/tcp")
        if bindings:
            address = f"http://{_host_for_url(bindings[0]['HostIp'])}:{bindings[0]['HostPort']}"
    env_name = target.environment.get(target.variable, "detected at start")
    say(f"started {target.reference} ({target.digest.short}) as {env_name} in container {container.short_id}"
        + (f", serving on {address}" if address else ""))
    return container, output, Started(container.id, address)


def _host_for_url(ip: str) -> str:
    if ip in ("", "0.0.0.0"):
        return "127.0.0.1"
    return f"[{ip}]" if ":" in ip else ip


def follow(container, output, stdout: BinaryIO, stderr: BinaryIO, say: Callable[[str], None]) -> int:
    """Stream the container's output until it exits; return its exit code.

    Ctrl-C or SIGTERM stops the container (SIGTERM to the server, as `docker stop`
    would) while its last lines still stream, then removes it and is raised
    again. A second one kills the container.
    """
    interrupted: BaseException | None = None
    try:
        _relay(output, stdout, stderr)
    except KeyboardInterrupt as exc:
        interrupted = exc
        say(f"stopping container {container.short_id} (SIGTERM, {STOP_TIMEOUT} s before SIGKILL) ...")
        rest = container.attach(stdout=True, stderr=True, stream=True, logs=False, demux=True)
        stopper = threading.Thread(target=container.stop, kwargs={"timeout": STOP_TIMEOUT}, daemon=True)
        stopper.start()
        try:
            _relay(rest, stdout, stderr)
            stopper.join()
        except KeyboardInterrupt:
            container.kill()
    code = int(container.wait().get("StatusCode", 1))
    _remove(container)
    if interrupted is not None:
        raise interrupted
    return code


def _relay(output, stdout: BinaryIO, stderr: BinaryIO) -> None:
    for out, err in output:
        if out:
            stdout.write(out)
            stdout.flush()
        if err:
            stderr.write(err)
            stderr.flush()


def _remove(container) -> None:
    from docker.errors import APIError

    try:
        container.remove(force=True)
    except APIError:
        pass   # gone already, or already being removed by the engine (NotFound is an APIError)


def run_image(store: LayoutStore, image: str, options: RunOptions, stdout: BinaryIO, stderr: BinaryIO,
              say: Callable[[str], None]) -> tuple[int, Started]:
    """Run `image`; with `detach`, return at once (exit code 0) and leave it running."""
    target = plan_run(store, image, options)
    container, output, started = start(store, target, options, say)
    if options.detach:
        return 0, started
    return follow(container, output, stdout, stderr, say), started
