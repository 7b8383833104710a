"""Authentication against real docker-registry instances: htpasswd basic auth and bearer tokens."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from imagebuild.errors import AuthError
from imagebuild.oci.reference import Reference
from imagebuild.registry.auth import Credentials, lookup_credentials, parse_challenge
from imagebuild.registry.client import RegistryClient
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.registry import pull_image, push_image
from tests.conftest import imagebuild
from tests.registry_support.images import write_app_image
from tests.registry_support.services import RegistryProcess, write_htpasswd
from tests.registry_support.token_server import TokenServer

USER = "alice"
PASSWORD = "s3cret-Pa55word-never-printed"
WRONG = "wrong-Pa55word-never-printed"


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory):
    work = tmp_path_factory.mktemp("basic-registry")
    htpasswd = write_htpasswd(work / "htpasswd", {USER: PASSWORD})
    process = RegistryProcess("htpasswd.yml", work, HTPASSWD=str(htpasswd))
    yield process.address
    process.stop()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    work = tmp_path_factory.mktemp("token-registry")
    server = TokenServer(work, {USER: PASSWORD})
    process = RegistryProcess("token.yml", work, REALM=server.realm, CERT=str(server.cert_path))
    yield process.address, server
    process.stop()
    server.stop()


@pytest.fixture
def docker_home(tmp_path, monkeypatch):
    """An empty Docker client configuration for this test only."""
    config_dir = tmp_path / "docker-config"
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    return config_dir


def save_auths(config_dir, host: str, password: str) -> dict:
    config_dir.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
    (config_dir / "config.json").write_text(json.dumps({"auths": {f"http://{host}": {"auth": auth}}}))
    return {"DOCKER_CONFIG": str(config_dir)}


@pytest.fixture
def store(tmp_path):
    return LayoutStore(tmp_path / "store").ensure()


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text and WRONG not in text
        assert base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in text


def test_challenge_parsing_keeps_scopes_whole():
    scheme, params = parse_challenge(
        'Bearer realm="http://127.0.0.1:1/token",service="reg",scope="repository:a/b:pull,push"')
    assert scheme == "bearer"
    assert params == {"realm": "http://127.0.0.1:1/token", "service": "reg", "scope": "repository:a/b:pull,push"}


@pytest.mark.integration
def test_basic_auth_push_and_pull_with_docker_config(basic_registry, store, docker_home, tmp_path):
    save_auths(docker_home, basic_registry, PASSWORD)
    assert lookup_credentials(basic_registry) == Credentials(USER, PASSWORD)
    assert PASSWORD not in repr(lookup_credentials(basic_registry))
    ref_name = write_app_image(store, "hello", "basic1")
    target = Reference.parse(f"{basic_registry}/auth-{uuid.uuid4().hex[:8]}/hello")
    result = push_image(store, ref_name, target)
    assert result.digest == store.resolve(ref_name).digest
    pulled = pull_image(LayoutStore(tmp_path / "fresh"), target.with_tag("basic1"))
    assert pulled.digest == result.digest


@pytest.mark.integration
def test_basic_auth_without_credentials_says_to_log_in(basic_registry, store, docker_home):
    ref_name = write_app_image(store, "hello", "anon")
    with pytest.raises(AuthError, match=f"registry {basic_registry} needs credentials"):
        push_image(store, ref_name, Reference.parse(f"{basic_registry}/anon/hello"))


@pytest.mark.integration
def test_wrong_password_is_a_clear_error_and_never_printed(basic_registry, store, tmp_path):
    ref_name = write_app_image(store, "hello", "wrong")
    env = save_auths(tmp_path / "wrong-config", basic_registry, WRONG)
    done = imagebuild("push", ref_name, "--to", f"{basic_registry}/wrong/hello", "--store", store.root, env=env)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: registry {basic_registry} refused the credentials of user 'alice' "
                                   f"(check the password and run `imagebuild login {basic_registry}`)")
    assert_no_secret(done.stdout, done.stderr)


@pytest.mark.integration
def test_login_checks_and_saves_credentials_then_push_works(basic_registry, store, tmp_path):
    env = {"DOCKER_CONFIG": str(tmp_path / "login-config")}
    bad = imagebuild("login", basic_registry, "-u", USER, "--password-stdin", input=WRONG + "\n", env=env)
    assert bad.returncode == 2 and "refused the credentials" in bad.stderr
    assert not (tmp_path / "login-config" / "config.json").exists()
    good = imagebuild("login", basic_registry, "-u", USER, "--password-stdin", input=PASSWORD + "\n", env=env)
    assert good.returncode == 0, good.stderr
    saved = tmp_path / "login-config" / "config.json"
    assert (saved.stat().st_mode & 0o077) == 0
    ref_name = write_app_image(store, "hello", "login1")
    pushed = imagebuild("push", ref_name, "--to", f"{basic_registry}/login/hello", "--store", store.root,
                        "--json", env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["blobs_uploaded"] == 3
    assert_no_secret(bad.stdout, bad.stderr, good.stdout, good.stderr, pushed.stdout, pushed.stderr)


@pytest.mark.integration
def test_bearer_tokens_with_scopes_and_mount_needs_pull_on_the_source(token_registry, store, docker_home):
    address, server = token_registry
    save_auths(docker_home, address, PASSWORD)
    ref_name = write_app_image(store, "hello", "tok1")
    first = Reference.parse(f"{address}/tok-a-{uuid.uuid4().hex[:8]}/hello")
    second = Reference.parse(f"{address}/tok-b-{uuid.uuid4().hex[:8]}/hello")
    push_image(store, ref_name, first)
    assert {"user": USER, "scopes": [f"repository:{first.repository}:pull,push"]} in server.requests
    server.requests.clear()
    result = push_image(store, ref_name, second)
    assert result.blobs_mounted == 3 and result.blobs_uploaded == 0
    asked = [set(r["scopes"]) for r in server.requests]
    assert {f"repository:{second.repository}:pull,push", f"repository:{first.repository}:pull"} in asked


@pytest.mark.integration
def test_bearer_token_is_refreshed_on_401(token_registry, store, docker_home):
    address, server = token_registry
    save_auths(docker_home, address, PASSWORD)
    ref_name = write_app_image(store, "hello", "tok2")
    target = Reference.parse(f"{address}/tok-r-{uuid.uuid4().hex[:8]}/hello")
    push_image(store, ref_name, target)
    with RegistryClient(address) as client:
        digest = store.resolve(ref_name).digest
        assert client.get_manifest(target.repository, "tok2").digest == digest
        # The cached token goes stale (as after a server-side expiry); the next request must fetch a new one.
        for key in list(client.transport._tokens):
            client.transport._tokens[key] = server.issue(USER, [], expired=True)
        asked_before = len(server.requests)
        assert client.get_manifest(target.repository, "tok2").digest == digest
        assert len(server.requests) == asked_before + 1


@pytest.mark.integration
def test_bearer_wrong_password_and_anonymous(token_registry, store, tmp_path, docker_home):
    address, _ = token_registry
    ref_name = write_app_image(store, "hello", "tok3")
    with pytest.raises(AuthError, match=f"registry {address} needs credentials"):
        push_image(store, ref_name, Reference.parse(f"{address}/anon/hello"))
    env = save_auths(tmp_path / "wrong", address, WRONG)
    done = imagebuild("push", ref_name, "--to", f"{address}/wrong/hello", "--store", store.root, env=env)
    assert done.returncode == 2
    assert "refused the credentials of user 'alice'" in done.stderr and "Traceback" not in done.stderr
    assert_no_secret(done.stdout, done.stderr)
