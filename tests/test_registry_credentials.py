"""Where credentials come from: Docker config `auths`, `credHelpers`, `credsStore`; and the scheme choice."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from imagebuild.errors import AuthError, UserError
from imagebuild.registry.auth import Credentials, lookup_credentials, save_credentials
from imagebuild.registry.transport import Transport, is_loopback
from tests.conftest import imagebuild

# A credential helper speaking the docker-credential-helpers protocol, keeping secrets in a JSON file.
HELPER = """#!{python}
import json, os, sys
path = os.environ["TEST_HELPER_FILE"]
data = json.load(open(path)) if os.path.exists(path) else {{}}
verb = sys.argv[1]
if verb == "get":
    host = sys.stdin.read().strip()
    if host not in data:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps({{"ServerURL": host, "Username": data[host][0], "Secret": data[host][1]}}))
elif verb == "store":
    entry = json.load(sys.stdin)
    data[entry["ServerURL"]] = [entry["Username"], entry["Secret"]]
    json.dump(data, open(path, "w"))
"""


@pytest.fixture
def helper_env(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "docker-credential-ibtest"
    program.write_text(HELPER.format(python=sys.executable))
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    secrets = tmp_path / "helper-secrets.json"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TEST_HELPER_FILE", str(secrets))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    (tmp_path / "docker").mkdir()
    return tmp_path / "docker" / "config.json", secrets


def test_auths_entries_match_with_or_without_scheme(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    auth = base64.b64encode(b"bob:pw-one").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "https://reg.example:5000/v1/": {"auth": auth}, "other.example": {"username": "eve", "password": "pw-two"}}}))
    assert lookup_credentials("reg.example:5000") == Credentials("bob", "pw-one")
    assert lookup_credentials("other.example") == Credentials("eve", "pw-two")
    assert lookup_credentials("unknown.example") is None
    assert "pw-one" not in repr(lookup_credentials("reg.example:5000"))


def test_creds_store_and_cred_helpers_are_asked(helper_env):
    config, secrets = helper_env
    secrets.write_text(json.dumps({"store.example": ["carol", "pw-store"], "helped.example": ["dan", "pw-helper"]}))
    config.write_text(json.dumps({"credsStore": "ibtest", "credHelpers": {"helped.example": "ibtest"}}))
    assert lookup_credentials("store.example") == Credentials("carol", "pw-store")
    assert lookup_credentials("helped.example") == Credentials("dan", "pw-helper")
    assert lookup_credentials("missing.example") is None  # the helper's "not found" means anonymous


def test_save_goes_to_the_creds_store_when_one_is_set(helper_env):
    config, secrets = helper_env
    config.write_text(json.dumps({"credsStore": "ibtest"}))
    save_credentials("saved.example:5000", Credentials("erin", "pw-saved"))
    assert json.loads(secrets.read_text())["saved.example:5000"] == ["erin", "pw-saved"]
    assert "pw-saved" not in config.read_text()
    assert lookup_credentials("saved.example:5000") == Credentials("erin", "pw-saved")


def test_a_missing_helper_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "does-not-exist"}))
    with pytest.raises(AuthError, match="docker-credential-does-not-exist .* is not installed"):
        lookup_credentials("reg.example")


@pytest.mark.parametrize("config, words", [
    ("[]", "is not a JSON object with `auths` and `credHelpers` objects"),
    ('{"auths": []}', "is not a JSON object with `auths` and `credHelpers` objects"),
    ('{"credHelpers": "ecr-login"}', "is not a JSON object with `auths` and `credHelpers` objects"),
    ('{"auths": {"reg.example": {"auth": 5}}}', "the saved credentials for reg.example"),
])
def test_a_garbled_docker_config_is_a_user_error(tmp_path, monkeypatch, config, words):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(UserError) as caught:
        lookup_credentials("reg.example")
    assert words in caught.value.one_line()


@pytest.mark.integration
def test_login_keeps_other_entries_and_accepts_null_auths(registry, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"auths": None, "proxies": {"default": {}}}))
    done = imagebuild("login", registry, "-u", "someone", "--password-stdin", input="s3cret\n",
                      env={"DOCKER_CONFIG": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["proxies"] == {"default": {}}
    assert base64.b64decode(saved["auths"][registry]["auth"]) == b"someone:s3cret"
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == 0o600


def test_https_by_default_plain_http_for_loopback_or_insecure():
    assert [is_loopback(h) for h in ("127.0.0.1:5000", "localhost", "[::1]:5000", "127.8.9.1")] == [True] * 4
    assert [is_loopback(h) for h in ("registry.example.com", "10.0.0.1:5000", "localhost.example")] == [False] * 3
    assert Transport("registry.example.com", credentials=None).scheme == "https"
    assert Transport("registry.example.com", insecure=True, credentials=None).scheme == "http"
    assert Transport("127.0.0.1:5000", credentials=None).scheme == "http"
    assert Transport("127.0.0.1:5000", insecure=False, credentials=None).scheme == "https"


@pytest.mark.integration
def test_cli_push_uses_the_recipe_registry(registry, tmp_path):
    from imagebuild.stores.layout import LayoutStore
    from tests.registry_support.images import write_app_image
    import uuid

    store = LayoutStore(tmp_path / "store").ensure()
    ref_name = write_app_image(store, "hello", "rec1")
    namespace = f"recipe-{uuid.uuid4().hex[:8]}"
    recipe = Path(tmp_path / "imagebuild.yaml")
    recipe.write_text(f"name: hello\nregistry: {registry}/{namespace}\nserver:\n  kind: command\n"
                      '  command: ["/bin/busybox", "echo", "hi"]\n')
    done = imagebuild("push", ref_name, "--recipe", recipe, "--store", store.root, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["reference"] == f"{registry}/{namespace}/hello:rec1"
    missing = imagebuild("push", ref_name, "--recipe", tmp_path / "nope.yaml", "--store", store.root)
    assert missing.returncode == 2 and "no registry to push to" in missing.stderr


def test_a_cred_helper_named_by_url_is_used_for_login_and_push(helper_env):
    """`credHelpers` keys written as URLs name the same host on save as on lookup."""
    config, secrets = helper_env
    config.write_text(json.dumps({"credHelpers": {"https://reg.example:5000/": "ibtest"}}))
    save_credentials("reg.example:5000", Credentials("fay", "pw-helper"))
    assert json.loads(secrets.read_text())["reg.example:5000"] == ["fay", "pw-helper"]
    assert "auths" not in json.loads(config.read_text()), "inline credentials that lookup would ignore"
    assert lookup_credentials("reg.example:5000") == Credentials("fay", "pw-helper")


@pytest.mark.parametrize("old_key", ["https://reg.example:5000/v1/", "http://reg.example:5000",
                                     "reg.example:5000/", "https://REG.example:5000/v2/"])
def test_a_new_login_replaces_older_entries_for_the_same_registry(tmp_path, monkeypatch, old_key):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    old = base64.b64encode(b"old:pw-old").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        old_key: {"auth": old}, "other.example": {"auth": old}}}))
    save_credentials("reg.example:5000", Credentials("new", "pw-new"))
    assert lookup_credentials("reg.example:5000") == Credentials("new", "pw-new")
    auths = json.loads((tmp_path / "config.json").read_text())["auths"]
    assert sorted(auths) == ["other.example", "reg.example:5000"]


def test_lookup_normalises_the_host_it_is_asked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    auth = base64.b64encode(b"bob:pw-one").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"reg.example:5000": {"auth": auth}}}))
    assert lookup_credentials("https://reg.example:5000/") == Credentials("bob", "pw-one")


def test_saving_through_a_missing_helper_is_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "does-not-exist"}))
    with pytest.raises(AuthError) as caught:
        save_credentials("reg.example", Credentials("gil", "pw-gil"))
    assert caught.value.exit_code == 2
    assert "docker-credential-does-not-exist" in caught.value.one_line()
    assert "pw-gil" not in caught.value.one_line()


@pytest.mark.integration
def test_login_through_a_missing_creds_store_is_one_line_exit_2(registry, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "does-not-exist"}))
    done = imagebuild("login", registry, "-u", "someone", "--password-stdin", input="s3cret\n",
                      env={"DOCKER_CONFIG": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "docker-credential-does-not-exist" in lines[0], done.stderr
    assert "s3cret" not in done.stdout + done.stderr
