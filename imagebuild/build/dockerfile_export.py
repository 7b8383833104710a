"""`imagebuild dockerfile`: what `bake` makes of a recipe, written as a Dockerfile.

For teams that want to read, or build by hand, what imagebuild does. The
Dockerfile follows the layers in order: the base (Dockerfile.base rendered
with the recipe's os and runtime sections), the libraries (installed by pip in
a separate stage, so the image has no pip, like a baked one; a Node app's
by `npm ci` in a node stage), the server
(its packages, rendered configuration and imagebuild's launcher), the app,
the config (every environment's settings), then the same runtime settings a
baked image's config holds. Generated files are written by `printf`, line by
line, so the classic builder needs no heredocs and the text stays readable.

It is an equivalent, not a twin: the engine's layers carry build times, the
app is whatever the build context holds (a bake takes only what git tracks),
and pip runs in the engine rather than on the host.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping

from imagebuild import plan as planning
from imagebuild.errors import UserError
from imagebuild.sources.git import GitFacts, git_facts, remote_url
from imagebuild.build.layers import config as config_layer
from imagebuild.build.layers import dockerfile_base
from imagebuild.build.layers import server as server_layer
from imagebuild.build.layers.libraries import site_packages
from imagebuild.contract import LAUNCHER_PATH, RUN_DIR
from imagebuild.launcher.assets import launcher_script
from imagebuild.recipe.model import Recipe
from imagebuild.recipe.templates import server_command

BASE_ARG = "BASE"
PIP_ARG = "PIP_IMAGE"
NODE_ARG = "NODE_IMAGE"
STAGE_DIR = "/imagebuild"


def default_base(recipe: Recipe) -> str:
    """What the Dockerfile starts FROM unless --build-arg BASE=... says otherwise."""
    if recipe.os.image:
        return recipe.os.image
    if recipe.os.dockerfile:
        return f"{recipe.name}-base"
    return f"debian:{recipe.os.debian}-slim"


def render_dockerfile(recipe: Recipe, base_env: Mapping[str, str] | None = None,
                      template: Path = dockerfile_base.TEMPLATE, facts: GitFacts | None = None) -> str:
    """The Dockerfile for `recipe`. `base_env`: the base image's Env, when known (a bake takes it
    into the image's Env; a Docker build inherits it anyway). `facts`: git's facts of the recipe's
    directory, when the caller has them already (the recipe was rendered with them)."""
    try:
        template_text = template.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read the base template {template}: {exc.strerror}",
                        hint="reinstall imagebuild; Dockerfile.base belongs beside the package") from None
    if recipe.java is not None:
        raise UserError("imagebuild dockerfile does not write a recipe's java: layers yet",
                        hint="bake it with `imagebuild bake`, or run the jar with server.app instead")
    facts = facts or git_facts(recipe.root)
    commit = planning.Commit(revision=facts.commit or "unknown", time=facts.commit_time,
                             version=(facts.version or "unknown") + ("-dirty" if facts.dirty else ""),
                             dirty=facts.dirty, source=remote_url(facts.toplevel) if facts.toplevel else None)
    env = {**(base_env or {}), "IMAGEBUILD_VERSION": commit.version, "IMAGEBUILD_REVISION": commit.revision}
    runtime, _ = planning.image_settings(recipe, commit, server_command(recipe), env)
    pip_stage = _pip_stage(recipe)
    npm_stage = _npm_stage(recipe)

    out = [f"# {recipe.name}: the image `imagebuild bake` makes, as a Dockerfile (`imagebuild dockerfile`).",
           "# Build it from the app's directory:",
           "#   imagebuild dockerfile > Dockerfile.imagebuild && docker build -f Dockerfile.imagebuild .",
           f"# --build-arg {BASE_ARG}=IMAGE starts from another base"
           + (f"; --build-arg {PIP_ARG}=IMAGE names an image with pip for the libraries" if pip_stage else "")
           + "."]
    from_hub = [BASE_ARG] if not (recipe.os.image or recipe.os.dockerfile) else []
    from_hub += [PIP_ARG] if pip_stage else []
    from_hub += [NODE_ARG] if npm_stage else []
    if from_hub:
        verb = "come" if len(from_hub) > 1 else "comes"
        out.append(f"# The default {' and '.join(from_hub)} {verb} from Docker Hub; "
                   "without access to it, pass --build-arg with images the engine has.")
    out.append(f"ARG {BASE_ARG}={default_base(recipe)}")
    if recipe.os.dockerfile:
        out.append(f"# {BASE_ARG}: `imagebuild bake` builds {recipe.os.dockerfile} and tags it "
                   f"{recipe.name}-base:KEY in the engine; name that tag here.")
    if pip_stage:
        out.append(f"ARG {PIP_ARG}=python:{recipe.runtime.python}-slim")
        out += ["", *pip_stage]
    if npm_stage:
        out.append(f"ARG {NODE_ARG}=node:{recipe.runtime.node}-slim")
        out += ["", *npm_stage]
    base = dockerfile_base.render(template_text, str(template),
                                  dockerfile_base.template_context(recipe, "${" + BASE_ARG + "}"))
    out += ["", "# -- os and runtime: Dockerfile.base, rendered with the recipe's os and runtime sections",
            base.strip("\n")]
    out += _libraries(recipe)
    out += _server(recipe)
    out += _app(recipe)
    out += ["", "# -- config: every environment's settings; the launcher picks one at start",
            _write_files({path: (content, 0o644) for path, content in config_layer.files(recipe).items()})]
    out += ["", "# -- the image's settings, as a baked image's config holds them", *_settings(runtime)]
    return "\n".join(out) + "\n"


def _has_libraries(recipe: Recipe) -> bool:
    return bool(recipe.runtime.python and (recipe.libraries.requirements or recipe.libraries.packages))


def _pip_stage(recipe: Recipe) -> list[str]:
    """A stage that installs the libraries and the server's packages, which the image copies from.
    pip gets the same pins (and hashes, then required) a bake installs from."""
    if not _has_libraries(recipe) and not (recipe.runtime.python and recipe.server.packages):
        return []
    lines = ["# -- libraries: pip runs here, not in the image, which gets no pip (as in a baked image)",
             f"FROM ${{{PIP_ARG}}} AS libraries"]
    if _has_libraries(recipe):
        requirements = f"{STAGE_DIR}/requirements.txt"
        hashed = False
        if recipe.libraries.requirements:
            lines.append(_dockerfile_copy(posixpath.normpath(recipe.libraries.requirements), requirements))
            hashed = _has_hashes(recipe)
        if recipe.libraries.packages:
            lines.append(f"RUN {_printf_lines(recipe.libraries.packages)} >> {requirements}")
            hashed = hashed or any("--hash=" in line for line in recipe.libraries.packages)
        lines.append(_pip_install(f"{STAGE_DIR}/libraries", requirements, hashed))
    if recipe.server.packages:
        requirements = f"{STAGE_DIR}/server-requirements.txt"
        lines.append(f"RUN {_printf_lines(recipe.server.packages)} > {requirements}")
        lines.append(_pip_install(f"{STAGE_DIR}/server-packages", requirements,
                                  any("--hash=" in line for line in recipe.server.packages)))
    return lines


def _npm_stage(recipe: Recipe) -> list[str]:
    """A stage that runs `npm ci` on the committed lock, as a bake does, for the image to copy from."""
    if recipe.libraries.package_lock is None:
        return []
    lock = posixpath.normpath(recipe.libraries.package_lock)
    return ["# -- libraries: npm ci runs here on package-lock.json, not in the image (as in a baked one)",
            f"FROM ${{{NODE_ARG}}} AS npm", f"WORKDIR {STAGE_DIR}",
            _dockerfile_copy(posixpath.join(posixpath.dirname(lock), "package.json"), f"{STAGE_DIR}/"),
            _dockerfile_copy(lock, f"{STAGE_DIR}/"),
            "RUN npm ci --omit=dev --ignore-scripts --no-bin-links --no-audit --no-fund && mkdir -p node_modules"]


def _pip_install(target: str, requirements: str, hashed: bool) -> str:
    return ("RUN python3 -m pip install --no-cache-dir --disable-pip-version-check --no-compile "
            f"--only-binary=:all: --target {target} {'--require-hashes ' if hashed else ''}-r {requirements}")


def _printf_lines(lines: Iterable[str]) -> str:
    return "printf '%s\\n' " + " ".join(shlex.quote(line) for line in lines)


def _has_hashes(recipe: Recipe) -> bool:
    try:
        return "--hash=" in (recipe.root / str(recipe.libraries.requirements)).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def _libraries(recipe: Recipe) -> list[str]:
    if recipe.libraries.package_lock is not None:
        modules = posixpath.join(recipe.app.dest, "node_modules")
        return ["", "# -- libraries", f"COPY --from=npm {STAGE_DIR}/node_modules/ {modules}/"]
    if not _has_libraries(recipe):
        return []
    return ["", "# -- libraries", f"COPY --from=libraries {STAGE_DIR}/libraries/ /{site_packages(recipe)}/"]


def _server(recipe: Recipe) -> list[str]:
    lines = ["", f"# -- server: {recipe.server.kind}'s configuration, imagebuild's launcher and its run directory"]
    if recipe.server.packages:
        lines.append(f"COPY --from=libraries {STAGE_DIR}/server-packages/ /{server_layer.SERVER_PACKAGES}/")
    files = {LAUNCHER_PATH.lstrip("/"): (launcher_script(), 0o755),
             **server_layer.rendered_files(recipe)}
    if recipe.server.packages:
        files[f"{site_packages(recipe)}/{server_layer.PTH_NAME}"] = (f"/{server_layer.SERVER_PACKAGES}\n".encode(),
                                                                     0o644)
    lines.append(_write_files(files, _account_commands(recipe)))
    return lines


def _account_commands(recipe: Recipe) -> list[str]:
    """The app's user in /etc/passwd and /etc/group when the base lacks one with its ids, and the
    launcher's run directory owned by it."""
    uid, _, gid = recipe.app.user.partition(":")
    gid = gid or uid
    commands = []
    if uid.isdigit() and gid.isdigit():
        passwd = shlex.quote(f"app:x:{uid}:{gid}:app:{recipe.app.dest}:/usr/sbin/nologin")
        commands += [f"{{ cut -d: -f3 /etc/passwd | grep -qx {uid} || echo {passwd} >> /etc/passwd; }}",
                     f"{{ cut -d: -f3 /etc/group | grep -qx {gid} || echo app:x:{gid}: >> /etc/group; }}"]
    commands += [f"mkdir -p {RUN_DIR}", f"chown {uid}:{gid} {RUN_DIR}", f"chmod 755 {RUN_DIR}"]
    return commands


def _app(recipe: Recipe) -> list[str]:
    source = posixpath.normpath(recipe.app.path).rstrip("/") or "."
    ignored = ", ".join([".git", *recipe.app.exclude])
    return ["", "# -- app: a bake takes only the files git tracks, minus app.exclude; keep the rest out of the",
            f"# build context with .dockerignore ({ignored})",
            _dockerfile_copy(f"{source}/", f"{recipe.app.dest.rstrip('/')}/")]


def _dockerfile_copy(source: str, dest: str) -> str:
    """COPY in its JSON form: a recipe's path with a space stays one path, and never reads as a flag."""
    return f"COPY {json.dumps([source, dest], ensure_ascii=False)}"


def _write_files(files: Mapping[str, tuple[bytes, int]], extra: Iterable[str] = ()) -> str:
    """One RUN that writes each file with printf (base64 for a file that is not plain text)."""
    commands = []
    directories = sorted({str(PurePosixPath("/" + path).parent) for path in files})
    if directories:
        commands.append("mkdir -p " + " ".join(map(shlex.quote, directories)))
    for path, (content, mode) in sorted(files.items()):
        target = shlex.quote("/" + path.lstrip("/"))
        commands.append(_printf(content, target))
        commands.append(f"chmod {mode:o} {target}")
    commands += list(extra)
    return "RUN " + " \\\n && ".join(commands)


def _printf(content: bytes, target: str) -> str:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or any(ord(c) < 32 and c not in "\t\n" for c in text):
        import base64

        return f"echo {base64.b64encode(content).decode()} | base64 -d > {target}"
    lines = text.split("\n")
    last = lines.pop()                 # "" when the file ends with a newline
    parts = []
    if lines:
        parts.append("printf '%s\\n' \\\n" + " \\\n".join("      " + shlex.quote(line) for line in lines))
    if last:
        parts.append(f"printf '%s' {shlex.quote(last)}")
    if not parts:
        return f": > {target}"
    if len(parts) == 1:
        return f"{parts[0]} > {target}"
    return "{ " + "; ".join(parts) + f"; }} > {target}"


def _settings(runtime: Mapping) -> list[str]:
    lines = []
    env = [item.split("=", 1) for item in runtime.get("Env") or []]
    if env:
        lines.append("ENV " + " \\\n    ".join(f"{key}={_env_value(value)}" for key, value in env))
    labels = runtime.get("Labels") or {}
    if labels:
        lines.append("LABEL " + " \\\n      ".join(f"{json.dumps(key)}={_env_value(value)}"
                                                    for key, value in sorted(labels.items())))
    lines.append(f"WORKDIR {runtime['WorkingDir']}")
    lines.append(f"USER {runtime['User']}")
    for port in runtime.get("ExposedPorts") or {}:
        lines.append(f"EXPOSE {port}")
    health = runtime.get("Healthcheck")
    if health:
        seconds = planning.NANOSECONDS
        lines.append(f"HEALTHCHECK --interval={health['Interval'] // seconds}s "
                     f"--timeout={health['Timeout'] // seconds}s "
                     f"--start-period={health['StartPeriod'] // seconds}s --retries={health['Retries']} \\\n"
                     f"  CMD {json.dumps(health['Test'][1:])}")
    lines.append(f"ENTRYPOINT {json.dumps(runtime['Entrypoint'])}")
    lines.append(f"CMD {json.dumps(runtime['Cmd'])}")
    return lines


def _env_value(value: str) -> str:
    """An ENV value the Dockerfile parser gives back unchanged: quoted, with $ escaped."""
    return json.dumps(value, ensure_ascii=False).replace("$", "\\$")
