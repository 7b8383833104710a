"""Rules a well-typed recipe must still obey: names, pins, ports, environments.

Each rule reports through `fail(key, message, hint)`, which the loader turns
into a RecipeError at the line of that key.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
from pathlib import Path, PurePosixPath
from typing import Callable, NoReturn

import yaml

from imagebuild.errors import RecipeError, UserError
from imagebuild.oci.reference import Reference
from imagebuild.recipe.cluster import check_kubernetes
from imagebuild.recipe.kinds import KINDS, RUNTIME_VERSIONS
from imagebuild.recipe.fleet import parse_batch, parse_duration
from imagebuild.recipe.model import CONTRACT_WHEN, DeploySpec, Policy, Recipe
from imagebuild.recipe.recipe_files import path_identity
from imagebuild.recipe.schema import did_you_mean

Fail = Callable[..., NoReturn]

# Patterns end in \Z, not $: `$` also matches before a final newline.
_SUITE = re.compile(r"^[a-z][a-z0-9-]*\Z")
# Debian policy 5.6.1 (Source/Package) and 5.6.12 (Version: [epoch:]upstream[-revision]).
_DEB_NAME = r"[a-z0-9][a-z0-9+.-]+"
_DEB_VERSION = r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~:-]*"
_DEB_PACKAGE = re.compile(rf"^{_DEB_NAME}(={_DEB_VERSION})?\Z")
_KERNEL = re.compile(rf"^linux-image-[a-z0-9][a-z0-9+.-]*(={_DEB_VERSION})?\Z")
_ARCHITECTURE = re.compile(r"^[a-z0-9][a-z0-9-]*\Z")
_MIRROR = re.compile(r"^(https?|file)://[^\s\x00-\x1f\x7f]+\Z")
MAX_REQUIREMENTS_BYTES = 1 << 20
# Durations in seconds: a day at most, far from where nanoseconds (the image's Healthcheck) overflow.
MAX_SECONDS = 86_400
MAX_SESSIONS = 256          # deploy.max_sessions: SSH connections opened at once
_VARIANTS = ("extract", "custom", "essential", "apt", "required", "minbase", "buildd",
             "important", "debootstrap", "standard")
# One pinned requirement, optionally with extras, a marker and --hash options.
_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._, -]+\])?[ \t]*===?[ \t]*[^\s;=]+"
                     r"([ \t]*;[^-\n]*)?([ \t]+--hash=sha(256|384|512):[0-9a-f]+)*[ \t]*\Z")
# pip options a requirements file may hold: none of them reads a file or a package from
# outside the commit (-r, -c, -e, -f and file: URLs would, and pip quotes what it reads).
_PIP_OPTIONS = frozenset({"-i", "--index-url", "--extra-index-url", "--trusted-host", "--prefer-binary",
                          "--only-binary", "--no-binary", "--require-hashes", "--pre", "--no-index"})
_JAVA_CLASS = re.compile(r"^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*\Z")
_APP_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*(\(.*\))?\Z")
_URL_PATH = re.compile(r"^/[A-Za-z0-9._~/%-]*\Z")
_USER = re.compile(r"^\d+(:\d+)?\Z")
_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._/-]*\Z")
_ENV_NAME = re.compile(r"^[a-z][a-z0-9-]*\Z")
# A policy's source repository: a URL (https://, ssh://, git://, file://) or git's user@host:path form;
# never a password in it.
_SOURCE_URL = re.compile(r"^([a-z][a-z0-9+.-]*://([A-Za-z0-9._-]+@)?[^\s@/:]*(:\d+)?(/[^\s@]*)?|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+)\Z")
# Debian (policy 5.6.7) and Python (PEP 508) package names, both.
_PACKAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._-]*\Z")
MAX_REPRODUCTIONS = 16
# Config keys, feature names and detect.variable: each becomes a shell variable in the launcher.
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_SECRET = re.compile(r"^[A-Z_][A-Z0-9_]*\Z")
# Variables the image config sets (plan.image_settings); a config key of the same name would lose to them.
_IMAGE_VARIABLES = frozenset({"PATH", "PORT", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"})
SECRET_HINT = "secrets lists names only; the values come at run time (docker run -e NAME=... or NAME_FILE)"


class Confinement:
    """Where the files a recipe names must lie (`repository()`), and a note of each path resolved
    (as written, its real path, its `path_identity` before anything reads it) in `named`."""

    def __init__(self, repository: Callable[[], Path], named: list | None):
        self.repository = repository
        self.named = named

    def __call__(self) -> Path:
        return self.repository()

    def note(self, value: str, resolved: Path) -> None:
        if self.named is not None:
            self.named.append((value, str(resolved), path_identity(str(resolved))))


def check_recipe(recipe: Recipe, fail: Fail, explicit: Callable[[str], bool],
                 repository: Path | Callable[[], Path] | None = None, named: list | None = None) -> None:
    """Run every rule; `explicit(key)` tells whether the recipe files set that key.
    `repository`: the directory every file the recipe names must resolve into (after
    symlinks), or a function giving it, asked only for a file outside the recipe's own
    directory (which lies in it); None takes the recipe's own directory. `named`, when given,
    gets each path the recipe names as the checks resolved it (Confinement.note)."""
    if not callable(repository):
        fixed = Path(os.path.realpath(repository or recipe.root))
        repository = lambda: fixed     # noqa: E731
    repository = Confinement(repository, named)
    _check_names(recipe, fail)
    _check_os(recipe, fail, explicit, repository)
    _check_platforms(recipe, fail, explicit)
    _check_runtime(recipe, fail)
    _check_libraries(recipe, fail, repository)
    _check_server(recipe, fail)
    _check_java(recipe, fail, repository)
    _check_app(recipe, fail, repository)
    _check_health(recipe, fail)
    _check_environments(recipe, fail, repository)
    _check_detect(recipe, fail)
    _check_deploy(recipe, fail)
    _check_migrations(recipe, fail, repository)
    _check_disk(recipe, fail)
    _check_hosts(recipe, fail)
    check_kubernetes(recipe, fail)


def local_path(recipe: Recipe, value: str, key: str, fail: Fail, repository: Callable[[], Path]) -> Path:
    """A file or directory the recipe names, relative to it: its real path, which must lie
    inside `repository()` (asked only for a path outside the recipe's own directory). Nothing
    is read before this check passes, so no error ever shows a line of a file outside the app."""
    if not value or PurePosixPath(value).is_absolute():
        fail(key, f"{value!r} must be a path relative to the recipe")
    if any(part.startswith("-") for part in PurePosixPath(value).parts):
        fail(key, f"{value!r} has a part that starts with -, which tools would take for an option")
    resolved = Path(os.path.realpath(recipe.root / value))
    if not resolved.is_relative_to(os.path.realpath(recipe.root)) and not resolved.is_relative_to(repository()):
        fail(key, f"{value!r} leads outside the recipe's repository",
             f"the files a recipe names must lie in {repository()}")
    if isinstance(repository, Confinement):
        repository.note(value, resolved)
    return resolved


def is_clean_absolute_path(path: str) -> bool:
    """/a/b: absolute, normalized (no //, . or ..), printable; / itself passes."""
    return (path.startswith("/") and posixpath.normpath(path) == path and not path.startswith("//")
            and path.isprintable())


IMAGE_NAME_HINT = "use lowercase letters, digits and . _ -; put the registry under registry:"


def is_image_name(name: str) -> bool:
    """A repository name without registry, tag or digest, as `name:` in a recipe takes it."""
    try:
        ref = Reference.parse(name)
    except UserError:
        return False
    return not (ref.registry or ref.tag or ref.digest)


def _check_names(recipe: Recipe, fail: Fail) -> None:
    if not is_image_name(recipe.name):
        fail("name", f"{recipe.name!r} is not a valid image name", IMAGE_NAME_HINT)
    if recipe.registry is not None:
        try:
            Reference.parse(f"{recipe.registry}/{recipe.name}")
        except UserError:
            fail("registry", f"{recipe.registry!r} is not a registry address",
                 "write HOST[:PORT][/PATH], e.g. localhost:5000/acme")


def _check_os(recipe: Recipe, fail: Fail, explicit: Callable[[str], bool], repository: Callable[[], Path]) -> None:
    spec = recipe.os
    if spec.image is not None:
        if explicit("os.debian"):
            fail("os.image", "set either os.debian or os.image, not both")
        try:
            ref = Reference.parse(spec.image)
        except UserError as exc:
            fail("os.image", exc.one_line())
        if ref.digest is None:
            fail("os.image", f"{spec.image!r} is not pinned by digest",
                 "write REF@sha256:..., a tag can change under you")
    elif not spec.debian or not _SUITE.match(spec.debian):
        fail("os.debian", f"{spec.debian!r} is not a Debian suite name", "e.g. bookworm")
    for index, package in enumerate(spec.packages):
        if not _DEB_PACKAGE.match(package):
            fail(f"os.packages[{index}]", f"{package!r} is not a Debian package name",
                 "NAME or NAME=VERSION, e.g. curl or curl=7.88.1-10+deb12u5")
    if not _ARCHITECTURE.match(spec.architecture):
        fail("os.architecture", f"{spec.architecture!r} is not a Debian architecture", "e.g. amd64 or arm64")
    if spec.mirror is not None and not _MIRROR.match(spec.mirror):
        fail("os.mirror", f"{spec.mirror!r} is not a mirror URL", "e.g. http://deb.debian.org/debian")
    if spec.dockerfile is not None:
        local_path(recipe, spec.dockerfile, "os.dockerfile", fail, repository)
    if spec.variant not in _VARIANTS:
        fail("os.variant", f"unknown mmdebstrap variant {spec.variant!r}",
             did_you_mean(spec.variant, _VARIANTS) or f"use one of {', '.join(_VARIANTS)}")


# The platforms an image can be baked for: those pip has wheels for (build/layers/lock_freshness.MACHINE).
PLATFORMS = ("linux/amd64", "linux/arm64")


def _check_platforms(recipe: Recipe, fail: Fail, explicit: Callable[[str], bool]) -> None:
    if not explicit("platforms"):
        return
    if not recipe.platforms:
        fail("platforms", "lists no platform", "e.g. platforms: [linux/amd64, linux/arm64]")
    for index, platform in enumerate(recipe.platforms):
        if platform not in PLATFORMS:
            fail(f"platforms[{index}]", f"{platform!r} is not a platform imagebuild bakes",
                 did_you_mean(platform, PLATFORMS) or f"use {' or '.join(PLATFORMS)}")
        if platform in recipe.platforms[:index]:
            fail(f"platforms[{index}]", f"{platform} is listed twice")
    if explicit("os.architecture"):
        fail("os.architecture", "set either platforms or os.architecture, not both",
             "list the architecture under platforms, e.g. platforms: [linux/arm64]")
    if recipe.os.dockerfile is not None and len(recipe.platforms) > 1:
        fail("platforms", "an os.dockerfile base is built by the Docker engine for its own platform only",
             "bake one platform, or build the base from os.debian")


def _check_runtime(recipe: Recipe, fail: Fail) -> None:
    set_ = [name for name in RUNTIME_VERSIONS if getattr(recipe.runtime, name)]
    if len(set_) > 1:
        fail(f"runtime.{set_[1]}", f"only one runtime per image, {set_[0]} is set too")
    for name in set_:
        version = getattr(recipe.runtime, name)
        form, example = RUNTIME_VERSIONS[name]
        if not form.fullmatch(version):
            fail(f"runtime.{name}", f"{version!r} is not a {name} version", f'e.g. "{example}"')


def _check_pins(lines: tuple[str, ...], key: str, fail: Fail) -> None:
    for index, line in enumerate(lines):
        if not _PINNED.match(line):
            fail(f"{key}[{index}]", f"{line!r} is not pinned",
                 "write NAME==VERSION, optionally followed by --hash=sha256:...")


def _check_libraries(recipe: Recipe, fail: Fail, repository: Callable[[], Path]) -> None:
    _check_pins(recipe.libraries.packages, "libraries.packages", fail)
    _check_package_lock(recipe, fail, repository)
    requirements = recipe.libraries.requirements
    if requirements is None:
        return
    path = local_path(recipe, requirements, "libraries.requirements", fail, repository)
    if not path.is_file():
        fail("libraries.requirements", f"{requirements} does not exist next to the recipe",
             f"looked in {recipe.root.resolve()}")
    _check_requirements_file(path, fail)
    if recipe.runtime.language != "python":
        fail("libraries.requirements", "Python requirements need runtime.python")


def _check_package_lock(recipe: Recipe, fail: Fail, repository: Callable[[], Path]) -> None:
    package_lock = recipe.libraries.package_lock
    if package_lock is None:
        return
    if recipe.runtime.language != "node":
        fail("libraries.package_lock", "npm libraries need runtime.node")
    if recipe.libraries.requirements or recipe.libraries.packages:
        fail("libraries.package_lock", "a Node image takes its libraries from package-lock.json only",
             "remove libraries.requirements and libraries.packages")
    if PurePosixPath(package_lock).name != "package-lock.json":
        fail("libraries.package_lock", f"{package_lock!r} is not a package-lock.json", "e.g. package-lock.json")
    path = local_path(recipe, package_lock, "libraries.package_lock", fail, repository)
    if not path.is_file():
        fail("libraries.package_lock", f"{package_lock} does not exist next to the recipe",
             "run `npm install` to write it, and commit it")


def _check_requirements_file(path: Path, fail: Fail) -> None:
    """Every requirement must be pinned, or the same commit could bake different libraries.
    `path` has passed local_path, so quoting its lines shows nothing from outside the app."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_REQUIREMENTS_BYTES + 1)
    except OSError as exc:
        fail("libraries.requirements", f"cannot be read: {exc.strerror}")
    if len(data) > MAX_REQUIREMENTS_BYTES:
        fail("libraries.requirements", f"is larger than {MAX_REQUIREMENTS_BYTES // 1024} KiB")
    text = data.decode("utf-8", errors="replace").replace("\\\n", " ")
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            option = line.split()[0].split("=", 1)[0]
            if option not in _PIP_OPTIONS:
                raise RecipeError(f"the pip option {option} is not allowed in requirements", file=str(path),
                                  line=number, key="libraries.requirements",
                                  hint="it reads files or packages from outside the commit; "
                                       "list pinned requirements, with --hash options if you like")
            continue
        if " @ " in line:
            if line.split(" @ ", 1)[1].strip().lower().startswith("file:"):
                raise RecipeError("a requirement from a file: URL is not allowed", file=str(path), line=number,
                                  key="libraries.requirements", hint="the image is built from the commit alone")
            continue
        if not _PINNED.match(line):
            name = re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0]
            raise RecipeError(f"requirement {name!r} is not pinned with ==", file=str(path),
                              line=number, key="libraries.requirements",
                              hint="pin every library, e.g. flask==3.1.3")


def _check_server(recipe: Recipe, fail: Fail) -> None:
    server = recipe.server
    if server.kind is None:
        fail("server.kind", "missing", f"set one of {', '.join(KINDS)} or extend a stock recipe")
    kind = KINDS.get(server.kind)
    if kind is None:
        fail("server.kind", f"unknown server kind {server.kind!r}",
             did_you_mean(server.kind, KINDS) or f"use one of {', '.join(KINDS)}")
    if not 1 <= server.port <= 65535:
        fail("server.port", f"{server.port} is not a TCP port", "use 1-65535, e.g. 8000")
    if server.workers is not None and not 1 <= server.workers <= 1024:
        fail("server.workers", "must be 1 to 1024")
    if kind.runtime and getattr(recipe.runtime, kind.runtime) is None:
        fail("server.kind", f"{kind.name} needs runtime.{kind.runtime}")
    if kind.needs_app and not server.app:
        example = {"java": "app.jar", "node": "server.js"}.get(kind.name, "hello:app")
        fail("server.app", f"{kind.name} needs server.app", f"e.g. app: {example}")
    if kind.runtime == "python" and not _APP_REF.match(server.app):
        fail("server.app", f"{server.app!r} is not MODULE:CALLABLE", "e.g. hello:app")
    if kind.name in ("java", "node") and (PurePosixPath(server.app).is_absolute()
                                          or ".." in PurePosixPath(server.app).parts):
        what = "jar" if kind.name == "java" else "main script"
        fail("server.app", f"the {what} path must be relative to the app directory")
    if kind.name == "command" and not server.command:
        fail("server.command", "kind command needs the argv to run", "e.g. command: [./serve, --port, '8000']")
    if kind.name != "command" and server.command:
        fail("server.command", f"only kind command takes a command; {kind.name} builds its own")
    for name in server.options:
        if name not in kind.options:
            known = ", ".join(kind.options) or "none"
            fail(f"server.options.{name}", f"{kind.name} has no option {name!r}",
                 did_you_mean(name, kind.options) or f"known options: {known}")
        if name in kind.numeric and not server.options[name].isdigit():
            fail(f"server.options.{name}", f"{server.options[name]!r} is not a whole number")
        if any(c in server.options[name] for c in '\n;{}"'):
            fail(f"server.options.{name}", "must not contain newlines, quotes, ; or braces")
        if name == "host" and not _is_ip_address(server.options[name]):
            fail("server.options.host", f"{server.options[name]!r} is not an IP address", "e.g. 0.0.0.0 or ::")
    if kind.name == "nginx" and recipe.os.image is None and not any(
            p.split("=")[0] in ("nginx", "nginx-light", "nginx-core", "nginx-full") for p in recipe.os.packages):
        fail("os.packages", "kind nginx needs nginx in os.packages", "add nginx-light")
    _check_pins(server.packages, "server.packages", fail)
    if server.packages and recipe.runtime.language != "python":
        fail("server.packages", "PyPI packages need runtime.python")


def _check_java(recipe: Recipe, fail: Fail, repository: Callable[[], Path]) -> None:
    """`java:` names build output; it need not exist yet (the build makes it before bake)."""
    java = recipe.java
    if java is None:
        return
    if recipe.server.kind != "java" or recipe.runtime.java is None:
        fail("java", "a JVM app's layers need server.kind java and runtime.java", "extend java-jar")
    if (java.jar is None) == (java.classes is None):
        fail("java", "set either java.jar (a fat jar) or java.classes (a classes directory)",
             "e.g. classes: target/classes with dependencies: target/dependency")
    if java.jar is not None and java.dependencies is not None:
        fail("java.dependencies", "a fat jar brings its own dependencies", "remove java.dependencies or java.jar")
    if java.classes is not None and java.main_class is None:
        fail("java.main_class", "a classes directory needs the class to start", "e.g. main_class: com.example.App")
    if java.main_class is not None and not _JAVA_CLASS.match(java.main_class):
        fail("java.main_class", f"{java.main_class!r} is not a Java class name", "e.g. com.example.App")
    for key in ("jar", "dependencies", "classes", "resources"):
        value = getattr(java, key)
        if value is not None:
            local_path(recipe, value, f"java.{key}", fail, repository)


def _check_app(recipe: Recipe, fail: Fail, repository: Callable[[], Path]) -> None:
    app = recipe.app
    if PurePosixPath(app.path).is_absolute() or ".." in PurePosixPath(app.path).parts:
        fail("app.path", "must be a path inside the app's directory", "e.g. . or src/")
    local_path(recipe, app.path, "app.path", fail, repository)
    if not is_clean_absolute_path(app.dest) or app.dest == "/":
        fail("app.dest", f"{app.dest!r} must be an absolute, normalized directory other than /", "e.g. /app")
    for index, pattern in enumerate(app.exclude):
        if not pattern.isprintable():
            fail(f"app.exclude[{index}]", f"{pattern!r} must be one line of printable text")
    if not _USER.match(app.user):
        fail("app.user", f"{app.user!r} is not UID[:GID]", "use numbers, e.g. 10001:10001")


def _check_health(recipe: Recipe, fail: Fail) -> None:
    health = recipe.health
    if not _URL_PATH.match(health.path):
        fail("health.path", f"{health.path!r} must be a URL path", "e.g. /health")
    for name in ("interval", "timeout", "retries"):
        if getattr(health, name) < 1:
            fail(f"health.{name}", "must be at least 1")
    if health.start_period < 0:
        fail("health.start_period", "must not be negative")
    for name in ("interval", "timeout", "start_period", "retries"):
        if getattr(health, name) > MAX_SECONDS:
            fail(f"health.{name}", f"must be at most {MAX_SECONDS}")


def _check_disk(recipe: Recipe, fail: Fail) -> None:
    if not _KERNEL.match(recipe.disk.kernel):
        fail("disk.kernel", f"{recipe.disk.kernel!r} is not a Debian kernel package",
             "linux-image-FLAVOUR, optionally =VERSION, e.g. linux-image-cloud-amd64")
    try:
        if recipe.disk.max_bytes < 1 << 20:
            fail("disk.max_size", f"{recipe.disk.max_size} is less than 1MiB", "e.g. 4GiB")
    except ValueError:
        fail("disk.max_size", f"{recipe.disk.max_size!r} is not a size", "e.g. 4GiB, 512MiB or a number of bytes")


def _check_environments(recipe: Recipe, fail: Fail, repository: Callable[[], Path]) -> None:
    seen: set[str] = set()
    for index, env in enumerate(recipe.environments):
        key = f"environments[{index}]"
        if not _ENV_NAME.match(env.name):
            fail(f"{key}.name", f"{env.name!r} is not an environment name",
                 "use lowercase letters, digits and -, e.g. prod")
        if env.name in seen:
            fail(f"{key}.name", f"environment {env.name!r} is listed twice")
        seen.add(env.name)
        for name in env.config:
            if not VARIABLE_NAME.match(name):
                fail(f"{key}.config.{name}", f"{name!r} is not an environment variable name",
                     "use letters, digits and _, e.g. LOG_LEVEL")
        for name in env.features:
            if not VARIABLE_NAME.match(name):
                fail(f"{key}.features.{name}", f"{name!r} is not a feature name",
                     "use letters, digits and _, e.g. new_checkout")
        for name in env.config:
            if name in _IMAGE_VARIABLES or name.startswith("IMAGEBUILD_") or (
                    name == "NODE_ENV" and recipe.runtime.node):
                fail(f"{key}.config.{name}", f"{name} is set by the image itself, so a config value would never apply",
                     "set the port with server.port (or PORT at run time)" if name == "PORT" else None)
            if name.startswith("FEATURE_"):
                fail(f"{key}.config.{name}", f"{name} would be taken for a feature toggle",
                     "declare toggles under features, e.g. features: {new_checkout: true}")
        for number, name in enumerate(env.secrets):
            if "=" in name or ":" in name or " " in name:
                fail(f"{key}.secrets[{number}]", "holds a value, and a secret is never baked", SECRET_HINT)
            if not _SECRET.match(name):
                fail(f"{key}.secrets[{number}]", f"{name!r} is not a secret name",
                     "secrets are environment variable names in capitals, e.g. DATABASE_URL")
            if name in env.config:
                fail(f"{key}.secrets[{number}]", f"{name} is also in config",
                     "a secret is never baked: remove it from config")
        if env.registry is not None:
            try:
                Reference.parse(f"{env.registry}/{recipe.name}")
            except UserError:
                fail(f"{key}.registry", f"{env.registry!r} is not a registry address")
        _check_policy(recipe, env.policy, f"{key}.policy", fail, repository)


def _check_policy(recipe: Recipe, policy: Policy, key: str, fail: Fail, repository: Callable[[], Path]) -> None:
    """Each key of an environment's policy: key files in the repository, names that can be packages."""
    for field in ("signed_by", "reproduced_by"):
        for index, path in enumerate(getattr(policy, field)):
            resolved = local_path(recipe, path, f"{key}.{field}[{index}]", fail, repository)
            if not resolved.is_file():
                fail(f"{key}.{field}[{index}]", f"{path} is not a file next to the recipe",
                     "name a public key file committed with the app, e.g. keys/release.pub")
        if len(set(getattr(policy, field))) != len(getattr(policy, field)):
            fail(f"{key}.{field}", "names one key twice")
    if policy.provenance_from is not None:
        if not _SOURCE_URL.match(policy.provenance_from):
            fail(f"{key}.provenance_from", f"{policy.provenance_from!r} is not a source repository URL",
                 "e.g. https://github.com/acme/hello or ssh://git@example.com/acme/hello.git")
        if not policy.signed_by:
            fail(f"{key}.provenance_from", "needs signed_by: the keys the provenance is verified with")
    for index, name in enumerate(policy.deny):
        if not _PACKAGE_NAME.match(name):
            fail(f"{key}.deny[{index}]", f"{name!r} is not a Debian or Python package name", "e.g. telnetd or pyyaml")
    if not 0 <= policy.reproduced <= MAX_REPRODUCTIONS:
        fail(f"{key}.reproduced", f"must be between 0 and {MAX_REPRODUCTIONS}")
    if policy.reproduced_by and not policy.reproduced:
        fail(f"{key}.reproduced_by", "has no effect without reproduced: N", "add reproduced: 1, or drop it")
    keys = policy.rebuilder_keys
    if policy.reproduced > len(keys):
        fail(f"{key}.reproduced", f"asks for {policy.reproduced} reproductions by distinct keys, but "
             f"{'reproduced_by' if policy.reproduced_by else 'signed_by'} lists {len(keys)}",
             "list the rebuilders' public keys under reproduced_by")


def _check_detect(recipe: Recipe, fail: Fail) -> None:
    """How the launcher picks the environment: a variable, per-environment rules, a default."""
    detect = recipe.detect
    names = recipe.environment_names()
    if not VARIABLE_NAME.match(detect.variable):
        fail("detect.variable", f"{detect.variable!r} is not an environment variable name",
             "use letters, digits and _, e.g. APP_ENV")
    if detect.variable.startswith("FEATURE_"):
        fail("detect.variable", f"{detect.variable} would be taken for a feature toggle", "e.g. APP_ENV")
    for index, env in enumerate(recipe.environments):
        if detect.variable in env.config or detect.variable in env.secrets:
            fail("detect.variable", f"{detect.variable} is also a config or secret name of {env.name!r}",
                 "the variable names the environment; choose another name for one of them")
        rule = env.detect
        where = f"environments[{index}].detect"
        if rule.hostname is not None and (not rule.hostname.strip() or any(c.isspace() for c in rule.hostname)):
            fail(f"{where}.hostname", f"{rule.hostname!r} is not a hostname pattern", "e.g. prod-*")
        if rule.file is not None and (not is_clean_absolute_path(rule.file) or rule.file == "/"):
            fail(f"{where}.file", f"{rule.file!r} must be an absolute path inside the container",
                 "e.g. /etc/prod-marker")
    if detect.default is not None:
        if not names:
            fail("detect.default", f"names {detect.default!r}, but the recipe lists no environments",
                 "list the environments under environments:, or drop detect.default")
        if detect.default not in names:
            fail("detect.default", f"{detect.default!r} is not a listed environment",
                 did_you_mean(detect.default, names) or f"use one of {', '.join(names)}")
    toggles: dict[str, str] = {}
    for index, env in enumerate(recipe.environments):
        for name in env.features:
            upper = name.upper()
            if toggles.setdefault(upper, name) != name:
                fail(f"environments[{index}].features.{name}",
                     f"{name!r} and {toggles[upper]!r} are the same toggle (FEATURE_{upper})",
                     "spell a feature the same way in every environment")


def check_secret_nodes(tree: yaml.Node, fail: Callable[[yaml.Node, str, str, str], NoReturn]) -> None:
    """Before the recipe is read: `secrets:` written as NAME: value (a mapping) gets its own message,
    not the generic "expected a list", because the value must never be baked."""
    environments = _child(tree, "environments")
    if not isinstance(environments, yaml.SequenceNode):
        return
    for index, env in enumerate(environments.value):
        secrets = _child(env, "secrets")
        key = f"environments[{index}].secrets"
        if isinstance(secrets, yaml.MappingNode):
            fail(secrets, key, "is a mapping of values, and a secret is never baked", SECRET_HINT)
        if isinstance(secrets, yaml.SequenceNode):
            for number, item in enumerate(secrets.value):
                if isinstance(item, yaml.MappingNode):
                    fail(item, f"{key}[{number}]", "holds a value, and a secret is never baked", SECRET_HINT)


def _child(node: yaml.Node, name: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((value for key, value in node.value if getattr(key, "value", None) == name), None)


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True


def _check_deploy(recipe: Recipe, fail: Fail) -> None:
    """The values the hosts' shell, docker and nginx will see: refused here, not at the first deploy."""
    spec = recipe.deploy
    if not 1 <= spec.port <= 65535:
        fail("deploy.port", f"{spec.port} is not a TCP port", "use 1-65535, e.g. 8080")
    if spec.drain < 0:
        fail("deploy.drain", "must not be negative")
    if spec.health_timeout < 1:
        fail("deploy.health_timeout", "must be at least 1 second")
    for name in ("drain", "health_timeout"):
        if getattr(spec, name) > MAX_SECONDS:
            fail(f"deploy.{name}", f"must be at most {MAX_SECONDS} seconds")
    if not _is_ip_address(spec.listen):
        fail("deploy.listen", f"{spec.listen!r} is not an IP address", "e.g. 0.0.0.0, 127.0.0.1 or ::")
    if not is_clean_absolute_path(spec.state_dir) or not _PLAIN_PATH.match(spec.state_dir):
        fail("deploy.state_dir", f"{spec.state_dir!r} must be an absolute, normalized path of letters, digits and . _ - /",
             "e.g. /var/lib/imagebuild")
    if spec.env_file is not None and (not is_clean_absolute_path(spec.env_file) or not _PLAIN_PATH.match(spec.env_file)
                                      or spec.env_file == "/"):
        fail("deploy.env_file", f"{spec.env_file!r} must be an absolute, normalized path of a file on the host",
             "e.g. /etc/myapp.env")
    _check_fleet(spec, fail)


def _check_fleet(spec: DeploySpec, fail: Fail) -> None:
    """How many hosts swap at once, and the canary: refused when the recipe loads, not mid-deploy."""
    for key, parse, value in (("batch", parse_batch, spec.batch), ("canary_wait", parse_duration, spec.canary_wait)):
        if value is None:
            continue
        try:
            parse(value)
        except UserError as exc:
            fail(f"deploy.{key}", exc.message, exc.hint)
    if spec.canary < 0:
        fail("deploy.canary", "must not be negative", "0 means no canary")
    if spec.canary_wait is not None:
        if spec.canary == 0:
            fail("deploy.canary_wait", "has no effect without deploy.canary", "set deploy.canary: 1, or remove it")
        if parse_duration(spec.canary_wait) > MAX_SECONDS:
            fail("deploy.canary_wait", f"must be at most {MAX_SECONDS} seconds")
    if not 1 <= spec.max_sessions <= MAX_SESSIONS:
        fail("deploy.max_sessions", f"{spec.max_sessions} is not between 1 and {MAX_SESSIONS}")


def _check_migrations(recipe: Recipe, fail: Fail, repository: Callable[[], Path]) -> None:
    spec = recipe.deploy.migrations
    if recipe.deploy.migrate and spec.expand:
        fail("deploy.migrations.expand", "deploy.migrate is the short form of deploy.migrations.expand; give one of them")
    if spec.contract_when not in CONTRACT_WHEN:
        fail("deploy.migrations.contract_when", f"{spec.contract_when!r} is not one of {', '.join(CONTRACT_WHEN)}")
    if spec.sql is not None:
        directory = local_path(recipe, spec.sql, "deploy.migrations.sql", fail, repository)
        if not directory.is_dir():
            fail("deploy.migrations.sql", f"{spec.sql!r} is not a directory",
                 "it holds expand/*.sql and contract/*.sql")


def _check_hosts(recipe: Recipe, fail: Fail) -> None:
    """Deploy targets, checked when the recipe loads rather than at the first deploy."""
    if not any(env.hosts for env in recipe.environments):
        return
    from imagebuild.recipe.hosts import parse_host, parse_hosts  # only recipes that deploy need it

    for index, env in enumerate(recipe.environments):
        key = f"environments[{index}].hosts"
        for number, url in enumerate(env.hosts):
            try:
                parse_host(url)
            except UserError as exc:
                fail(f"{key}[{number}]", exc.message, exc.hint)
        try:
            parse_hosts(env.hosts)
        except UserError as exc:
            fail(key, exc.message, exc.hint)
