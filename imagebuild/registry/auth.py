"""Registry credentials and the bearer-token flow.

Credentials come from the Docker client configuration (`~/.docker/config.json`
or `$DOCKER_CONFIG/config.json`): inline `auths`, per-registry `credHelpers`
and the default `credsStore`, the latter two through `docker-credential-*`
programs. A password is held only in `Credentials`, whose repr hides it, so it
cannot leak into a message or a log line by accident.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING

from imagebuild.atomic import write_atomically
from imagebuild.errors import AuthError, UserError
from imagebuild.frozen import frozen

if TYPE_CHECKING:
    import subprocess


@frozen
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode("utf-8")
        return "Basic " + base64.b64encode(raw).decode("ascii")


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(base) / "config.json"


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the Docker client configuration {path}: {exc}",
                        hint="fix or remove the file") from None
    sections = ("auths", "credHelpers")
    if not isinstance(config, dict) or not all(isinstance(config.get(key, {}), (dict, type(None))) for key in sections):
        raise UserError(f"the Docker client configuration {path} is not a JSON object with `auths` and "
                        "`credHelpers` objects", hint="fix or remove the file")
    return config


def _host_key(key: str) -> str:
    """`https://HOST:5000/v1/`, `host:5000/` and `host:5000` name the same registry: the key without
    scheme, path or trailing slash, in lower case. Reading and writing both compare keys this way."""
    key = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", key.strip())
    return key.split("/", 1)[0].lower()


def _run_helper(helper: str, verb: str, payload: str) -> subprocess.CompletedProcess:
    import subprocess     # only a Docker configuration with a credential helper runs one

    program = f"docker-credential-{helper}"
    try:
        return subprocess.run([program, verb], input=payload, capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, PermissionError):
        raise AuthError(f"credential helper {program} named in {docker_config_path()} is not installed",
                        hint="install it or remove it from the configuration") from None
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {program} did not answer within 30 s") from None


def _from_helper(helper: str, host: str) -> Credentials | None:
    program = f"docker-credential-{helper}"
    done = _run_helper(helper, "get", host)
    if done.returncode != 0:
        # Helpers answer "credentials not found" with a non-zero exit: that only means anonymous.
        return None
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        raise AuthError(f"credential helper {program} gave an unreadable answer") from None
    if not isinstance(answer, dict) or not answer.get("Secret"):
        return None
    return Credentials(str(answer.get("Username") or ""), str(answer["Secret"]))


def lookup_credentials(host: str) -> Credentials | None:
    """The credentials the Docker client would use for `host`, or None."""
    config = _read_config(docker_config_path())
    helper = _helper_for(config, host)
    if helper:
        return _from_helper(helper, host)
    wanted = _host_key(host)
    # An entry under exactly the host's name first: it is the one `login` writes.
    entries = sorted((config.get("auths") or {}).items(), key=lambda item: item[0] != host)
    for key, entry in entries:
        if _host_key(key) != wanted or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode("utf-8").partition(":")
            except (ValueError, TypeError):
                raise UserError(f"the saved credentials for {host} in {docker_config_path()} are unreadable",
                                hint=f"run `imagebuild login {host}` again") from None
            return Credentials(user, password)
        if entry.get("username") and entry.get("password"):
            return Credentials(entry["username"], entry["password"])
    if config.get("credsStore"):
        return _from_helper(config["credsStore"], host)
    return None


def _helper_for(config: dict, host: str) -> str | None:
    """The `credHelpers` entry for `host`, whatever form its key is written in."""
    wanted = _host_key(host)
    for key, helper in (config.get("credHelpers") or {}).items():
        if _host_key(key) == wanted and helper:
            return helper
    return None


def save_credentials(host: str, credentials: Credentials) -> Path:
    """Store credentials where the Docker client looks: the host's helper, else the creds store, else
    inline `auths`, where they replace every older entry for the same registry so the newest login wins."""
    path = docker_config_path()
    config = _read_config(path)
    helper = _helper_for(config, host) or config.get("credsStore")
    if helper:
        payload = json.dumps({"ServerURL": host, "Username": credentials.username,
                              "Secret": credentials.password})
        done = _run_helper(helper, "store", payload)
        if done.returncode != 0:
            raise AuthError(f"credential helper docker-credential-{helper} could not store the credentials")
        return path
    wanted = _host_key(host)
    auths = {key: entry for key, entry in (config.get("auths") or {}).items() if _host_key(key) != wanted}
    config["auths"] = auths
    auths[host] = {"auth": base64.b64encode(
        f"{credentials.username}:{credentials.password}".encode("utf-8")).decode("ascii")}
    text = json.dumps(config, indent="\t")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # 0600: the file holds passwords.
        return write_atomically(path, text.encode("utf-8"), mode=0o600)
    except OSError as exc:
        raise UserError(f"cannot save the credentials in {path}: {exc.strerror or exc}",
                        hint="make the directory writable or point DOCKER_CONFIG elsewhere") from None


_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="...",scope="..."` to ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _PARAM_RE.finditer(rest)}
    return scheme.lower(), params


def repository_scope(repository: str, *actions: str) -> str:
    return f"repository:{repository}:{','.join(actions)}"
