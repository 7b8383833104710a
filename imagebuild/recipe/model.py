"""The recipe as frozen, documented types. Keys here are the public contract:
extend them, never rename them. No I/O."""

from __future__ import annotations

from dataclasses import field, replace
from pathlib import Path
from typing import Mapping, Sequence

from imagebuild.contract import DEFAULT_VARIABLE
from imagebuild.frozen import frozen
from imagebuild.errors import UserError


@frozen
class OsSpec:
    """The OS layer: a Debian suite plus packages, or a base image pinned by digest."""

    debian: str | None = "bookworm"        # suite built with mmdebstrap
    packages: tuple[str, ...] = ()         # extra Debian packages in the OS layer
    image: str | None = None               # REF@sha256:... instead of `debian`
    mirror: str | None = None              # Debian mirror URL; default deb.debian.org
    variant: str = "essential"             # mmdebstrap variant
    architecture: str = "amd64"
    dockerfile: str | None = None          # a Dockerfile (Jinja2) built by a Docker engine as the base


@frozen
class RuntimeSpec:
    """The language runtime, from the suite's own packages. At most one is set."""

    python: str | None = None              # e.g. "3.11" -> python3.11 (full stdlib)
    java: str | None = None                # e.g. "17" -> openjdk-17-jre-headless
    node: str | None = None                # e.g. "18" -> nodejs

    @property
    def language(self) -> str | None:
        for name in ("python", "java", "node"):
            if getattr(self, name):
                return name
        return None

    @property
    def version(self) -> str | None:
        lang = self.language
        return getattr(self, lang) if lang else None


@frozen
class LibrariesSpec:
    requirements: str | None = None        # path relative to the recipe, pinned
    packages: tuple[str, ...] = ()         # extra pinned requirement lines, e.g. server packages
    package_lock: str | None = None        # Node: package-lock.json (package.json beside it), installed by npm ci


@frozen
class JavaSpec:
    """A JVM app's build output, split into layers the way Jib does (release dependencies,
    snapshot dependencies, resources, classes). Read from the work tree, where the build put it."""

    jar: str | None = None                 # a fat jar (Spring Boot BOOT-INF layout, or a plain jar), exploded
    dependencies: str | None = None        # a directory of dependency jars, e.g. target/dependency
    classes: str | None = None             # compiled classes, e.g. target/classes or build/classes/java/main
    resources: str | None = None           # resources, e.g. build/resources/main (target/classes holds Maven's)
    main_class: str | None = None          # the class java starts; a jar's Start-Class or Main-Class when unset


@frozen
class ServerSpec:
    kind: str | None = None                # gunicorn | uvicorn | nginx | java | node | command
    app: str | None = None                 # module:callable (gunicorn/uvicorn), jar path (java), main script (node)
    port: int = 8000
    workers: int | None = None             # None: from the CPU count when the container starts
    command: tuple[str, ...] = ()          # for kind: command, the argv to run
    packages: tuple[str, ...] = ()         # pinned PyPI requirements of the server (e.g. gunicorn==23.0.0)
    options: Mapping[str, str] = field(default_factory=dict)  # passed to the server's config template


@frozen
class AppSpec:
    path: str = "."                        # only files git tracks at the commit under this path
    exclude: tuple[str, ...] = ()          # gitignore-style patterns left out of the app layer
    dest: str = "/app"                     # where the app lands in the image (WorkingDir)
    user: str = "10001:10001"              # non-root by default


@frozen
class HealthSpec:
    path: str = "/health"
    interval: int = 10                     # seconds
    timeout: int = 3
    retries: int = 3
    start_period: int = 5


@frozen
class DetectRule:
    """How the launcher recognises an environment when no variable names it."""

    hostname: str | None = None            # shell pattern matched against the hostname, e.g. "prod-*"
    file: str | None = None                # the environment is chosen when this path exists


@frozen
class DetectSpec:
    variable: str = DEFAULT_VARIABLE       # the variable that names the environment explicitly
    default: str | None = None             # used when nothing detects one; None: refuse to start


@frozen
class Policy:
    """What an image must carry before it may enter an environment (docs/evidence.md, "Promotion gates")."""

    signed_by: tuple[str, ...] = ()        # public keys (paths in the repository); a signature by one of them
    sbom: bool = False                     # an SBOM attached (SPDX or CycloneDX)
    provenance_from: str | None = None     # provenance, verified with signed_by, naming this source repository
    deny: tuple[str, ...] = ()             # Debian or Python package names the SBOM must not list
    reproduced: int = 0                    # reproduction attestations by this many distinct keys
    reproduced_by: tuple[str, ...] = ()    # the keys they may come from (default: signed_by)

    @property
    def empty(self) -> bool:
        return self == Policy()

    @property
    def rebuilder_keys(self) -> tuple[str, ...]:
        return self.reproduced_by or self.signed_by


@frozen
class KubernetesResources:
    """Container resources, as Kubernetes quantities (`250m`, `512Mi`): cpu, memory, ephemeral-storage."""

    requests: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)


@frozen
class KubernetesService:
    port: int = 80                         # the Service's port; it forwards to server.port
    type: str = "ClusterIP"                # ClusterIP | NodePort | LoadBalancer


@frozen
class KubernetesSpec:
    """An environment deployed to a Kubernetes cluster instead of SSH hosts (docs/deploy.md#kubernetes)."""

    namespace: str                         # required: where every object goes
    context: str | None = None             # the kubeconfig context; None: the kubeconfig's current one
    name: str | None = None                # the objects' name; None: NAME-ENV
    replicas: int = 2
    resources: KubernetesResources = KubernetesResources()
    secret: str | None = None              # a Secret's name (envFrom); its values stay in the cluster
    pull_secret: str | None = None         # an imagePullSecret's name, for a private registry
    service: KubernetesService = KubernetesService()
    rollout_timeout: int = 600             # seconds the new pods get to become ready, else roll back
    job_timeout: int = 600                 # seconds a migration Job may run


@frozen
class Environment:
    name: str
    config: Mapping[str, str] = field(default_factory=dict)
    features: Mapping[str, bool] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()          # required at run time, never baked
    registry: str | None = None            # promote into another registry/repository
    detect: DetectRule = DetectRule()      # rules tried in list order after the variable
    hosts: tuple[str, ...] = ()            # ssh://user@host:port targets of `imagebuild deploy`
    policy: Policy = Policy()              # checked by `imagebuild promote` before the tag moves
    kubernetes: KubernetesSpec | None = None  # a cluster instead of hosts


CONTRACT_WHEN = ("after-swap", "next-deploy")


@frozen
class MigrationsSpec:
    """Schema changes in two phases around the swap (docs/deploy.md, "Database changes")."""

    expand: tuple[str, ...] = ()           # argv from the new image before it takes traffic; old code must cope
    contract: tuple[str, ...] = ()         # argv from the new image once no old container runs any more
    contract_when: str = "after-swap"      # after-swap: at the end of the deploy; next-deploy: at the start of the next
    sql: str | None = None                 # a directory of SQL files (expand/*.sql, contract/*.sql) to lint


@frozen
class DeploySpec:
    """`imagebuild deploy`: how each host runs the app behind its nginx front (docs/deploy.md)."""

    migrate: tuple[str, ...] = ()          # the short form of migrations.expand
    migrations: MigrationsSpec = MigrationsSpec()
    smoke: tuple[str, ...] = ()            # argv from the serving (old) image, after expand: does it still work?
    port: int = 8080                       # the public port of each host's front (per host: ?port= in its URL)
    listen: str = "0.0.0.0"                # the address the front listens on
    drain: int = 30                        # seconds in-flight requests get before the old container stops
    health_timeout: int = 120              # seconds a new container gets to answer health.path with 200
    env_file: str | None = None            # a file on the host with run-time variables (secrets); stays there
    state_dir: str = "/var/lib/imagebuild"  # where each host keeps the front's config and the deploy state
    # Fleets (release/deploy/fleet.py): waves of hosts, the first one a canary.
    batch: str = "1"                       # hosts swapped at once: a count ("2") or a share ("25%")
    canary: int = 0                        # hosts swapped first, alone, then watched for canary_wait
    canary_wait: str | None = None         # how long the canaries must keep answering (30s, 2m); 60s by default
    max_sessions: int = 8                  # hosts talked to at the same moment

    @property
    def expand(self) -> tuple[str, ...]:
        return self.migrations.expand or self.migrate


@frozen
class DiskSpec:
    """`bake --format disk`: the same layers plus a kernel, as a bootable disk."""

    kernel: str = "linux-image-cloud-amd64"  # Debian package of the kernel
    max_size: str = "4GiB"                   # the image's files may expand to this much, at most (size_bytes)

    @property
    def max_bytes(self) -> int:
        return size_bytes(self.max_size)


_SIZE_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def size_bytes(text: str) -> int:
    """Bytes in a size such as 4GiB, 512MiB or 1073741824; ValueError when it is none."""
    number = text.strip().rstrip("BKMGTi")
    unit = text.strip()[len(number):]
    if not number.isdigit() or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size")
    return int(number) * _SIZE_UNITS[unit]


@frozen
class Recipe:
    name: str
    registry: str | None = None
    extends: str | None = None
    os: OsSpec = OsSpec()
    runtime: RuntimeSpec = RuntimeSpec()
    libraries: LibrariesSpec = LibrariesSpec()
    java: JavaSpec | None = None           # layered JVM app from build output, instead of server.app's jar
    server: ServerSpec = ServerSpec()
    app: AppSpec = AppSpec()
    health: HealthSpec = HealthSpec()
    environments: tuple[Environment, ...] = ()
    detect: DetectSpec = DetectSpec()
    deploy: DeploySpec = DeploySpec()
    disk: DiskSpec = DiskSpec()
    platforms: tuple[str, ...] = ()        # OS/ARCH of each image; several: an image index over them
    source: Path | None = None             # the imagebuild.yaml this came from
    stock_dir: Path | None = None          # the stock recipe's directory (templates), if extended

    @property
    def root(self) -> Path:
        """The app's root: the directory holding imagebuild.yaml."""
        return self.source.parent if self.source else Path.cwd()

    @property
    def architectures(self) -> tuple[str, ...]:
        """The Debian architecture of each image baked: `platforms`, else os.architecture."""
        return tuple(platform.split("/", 1)[-1] for platform in self.platforms) or (self.os.architecture,)

    @property
    def multi_platform(self) -> bool:
        """Several images under one index."""
        return len(self.architectures) > 1

    def for_architecture(self, architecture: str) -> "Recipe":
        """The recipe of one platform's image: os.architecture set, no `platforms`."""
        return replace(self, os=replace(self.os, architecture=architecture), platforms=())

    def environment(self, name: str) -> Environment | None:
        return next((env for env in self.environments if env.name == name), None)

    def environment_names(self) -> list[str]:
        return [env.name for env in self.environments]


def environment_index(environments: Sequence[Environment], environment: str) -> int:
    """Where ENVIRONMENT stands in the recipe's order; a name the recipe lacks is a UserError listing the names."""
    names = [env.name for env in environments]
    if environment not in names:
        raise UserError(f"no environment {environment!r}", hint=f"the recipe names: {', '.join(names) or 'none'}")
    return names.index(environment)
