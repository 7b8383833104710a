"""Promotion dev -> test -> prod against the real registry, watched by a counting proxy."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from imagebuild.errors import PromotionError
from imagebuild.oci.reference import Reference
from imagebuild.release.promote import EMPTY_DESCRIPTOR, Places, history, promote, status
from imagebuild.recipe.model import Environment
from imagebuild.registry.client import RegistryClient
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.registry import push_image
from tests.conftest import imagebuild, run
from tests.registry_support.images import write_app_image
from tests.registry_support.proxy import FaultProxy

ENVS = (Environment("dev"), Environment("test"), Environment("prod"))


@pytest.fixture
def proxy(registry):
    with FaultProxy(registry) as running:
        yield running


@pytest.fixture
def pushed(proxy, tmp_path):
    """Two versions of one app, pushed to a fresh namespace through the proxy."""
    store = LayoutStore(tmp_path / "store").ensure()
    namespace = f"promo-{uuid.uuid4().hex[:10]}"
    home = f"{proxy.address}/{namespace}"
    digests = {}
    for version, message in (("v1", "one"), ("v2", "two")):
        ref_name = write_app_image(store, "hello", version, message=message)
        push_image(store, ref_name, Reference.parse(f"{home}/hello"))
        digests[version] = str(store.resolve(ref_name).digest)
    proxy.log.clear()
    return {"store": store, "home": home, "namespace": namespace, "digests": digests}


def run_promote(places: Places, envs, image: str, env: str, **kw):
    return promote(places.home, envs, image, env, target_for=places.target_for, name="hello", **kw)


def tag_digest(host: str, repository: str, tag: str) -> str | None:
    with RegistryClient(host) as client:
        found = client.get_manifest(repository, tag)
    return str(found.digest) if found else None


def upload_digests(proxy: FaultProxy) -> set[str]:
    out = set()
    for exchange in proxy.log.blob_uploads():
        query = parse_qs(urlparse(exchange.path).query)
        out.update(query.get("digest", []) + query.get("mount", []))
    return out


@pytest.mark.integration
def test_promotion_keeps_the_digest_and_moves_no_blob(pushed, proxy):
    places = Places("hello", pushed["home"], pushed["store"])
    v1 = pushed["digests"]["v1"]
    for env in ("dev", "test", "prod"):
        result = run_promote(places, ENVS, "v1", env)
        assert result.digest == v1 and result.action == "retag"
        assert tag_digest(proxy.address, f"{pushed['namespace']}/hello", env) == v1
    # The only blob that ever travelled is the 2-byte empty descriptor the records share.
    assert upload_digests(proxy) <= {EMPTY_DESCRIPTOR.digest}
    manifest_size = len(pushed["store"].read_blob(v1))
    env_puts = [e for e in proxy.log.matching("PUT", "/manifests/(dev|test|prod)$")]
    assert len(env_puts) == 3 and all(e.sent == manifest_size for e in env_puts)
    skopeo = run(["skopeo", "inspect", "--tls-verify=false", f"docker://{pushed['home']}/hello:prod"])
    assert json.loads(skopeo.stdout)["Digest"] == v1


@pytest.mark.integration
def test_skipping_an_environment_is_refused(pushed):
    places = Places("hello", pushed["home"], pushed["store"])
    run_promote(places, ENVS, "v1", "dev")
    with pytest.raises(PromotionError, match=r"rule 'promotion order'.*never promoted to test"):
        run_promote(places, ENVS, "v1", "prod")
    with pytest.raises(PromotionError, match=r"never promoted to dev"):
        run_promote(places, ENVS, "v2", "test")
    assert tag_digest(places.home.client.host, places.home.repository, "prod") is None


@pytest.mark.integration
def test_dirty_images_are_never_promoted(proxy, tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    home = f"{proxy.address}/dirty-{uuid.uuid4().hex[:10]}"
    ref_name = write_app_image(store, "hello", "abc1234-dirty")
    push_image(store, ref_name, Reference.parse(f"{home}/hello"))
    places = Places("hello", home, store)
    with pytest.raises(PromotionError, match=r"rule 'clean images only': abc1234-dirty"):
        run_promote(places, ENVS, "abc1234-dirty", "dev")


@pytest.mark.integration
def test_promotion_into_a_second_repository_mounts(pushed, proxy):
    prod_repo = f"{pushed['namespace']}-prod"
    envs = (Environment("dev"), Environment("test"), Environment("prod", registry=f"{proxy.address}/{prod_repo}"))
    places = Places("hello", pushed["home"], pushed["store"])
    run_promote(places, envs, "v1", "dev")
    run_promote(places, envs, "v1", "test")
    proxy.log.clear()
    result = run_promote(places, envs, "v1", "prod")
    assert result.action == "copy"
    assert result.blobs["blobs_mounted"] == 3 and result.blobs["blobs_uploaded"] == 0
    mounts = [e for e in proxy.log.matching("POST", "mount=") if e.status == 201]
    assert len(mounts) == 3
    assert not proxy.log.matching("PATCH") and not [e for e in proxy.log.matching("PUT", "/blobs/uploads/")
                                                     if "digest=" + EMPTY_DESCRIPTOR.digest not in e.path.replace("%3A", ":")]
    assert tag_digest(proxy.address, f"{prod_repo}/hello", "prod") == pushed["digests"]["v1"]


@pytest.mark.integration
def test_promoting_again_to_the_same_environment_changes_nothing(pushed, proxy):
    places = Places("hello", pushed["home"], pushed["store"])
    first = run_promote(places, ENVS, "v1", "dev")
    proxy.log.clear()
    again = run_promote(places, ENVS, "v1", "dev")
    assert again.action == "none" and again.record == first.record and "nothing to do" in again.messages[0]
    assert not proxy.log.matching("PUT", "/manifests/")
    assert [r.sequence for r in history(places.home, ENVS, "dev")] == [1]


@pytest.mark.integration
def test_a_moved_tag_is_put_back_by_promoting_again(pushed):
    places = Places("hello", pushed["home"], pushed["store"])
    v1, v2 = pushed["digests"]["v1"], pushed["digests"]["v2"]
    run_promote(places, ENVS, "v1", "dev")
    places.home.put_manifest(places.home.manifest(v2), ["dev"])  # someone retagged by hand
    again = run_promote(places, ENVS, "v1", "dev")
    assert again.action == "retag" and again.sequence == 2
    assert tag_digest(places.home.client.host, places.home.repository, "dev") == v1


@pytest.mark.integration
def test_promoting_an_older_version_is_a_rollback(pushed):
    places = Places("hello", pushed["home"], pushed["store"])
    v1, v2 = pushed["digests"]["v1"], pushed["digests"]["v2"]
    for version in ("v1", "v2"):
        for env in ("dev", "test", "prod"):
            run_promote(places, ENVS, version, env)
    result = run_promote(places, ENVS, "hello:v1", "prod")
    assert result.rollback and result.previous == v2
    assert tag_digest(places.home.client.host, places.home.repository, "prod") == v1
    rows = {row.environment: row for row in status(places.home, ENVS, places.target_for)}
    assert (rows["prod"].digest, rows["prod"].version) == (v1, "v1")
    assert (rows["test"].digest, rows["test"].version) == (v2, "v2")
    assert [(r.sequence, r.version) for r in history(places.home, ENVS, "prod")] == [(3, "v1"), (2, "v2"), (1, "v1")]


def write_recipe(directory: Path, registry: str | None, extra_env: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["name: hello"]
    if registry:
        lines.append(f"registry: {registry}")
    lines += ["server:", "  kind: command", '  command: ["/bin/busybox", "echo", "hello"]',
              "environments:", "  - name: dev", "  - name: test", "  - name: prod", extra_env]
    path = directory / "imagebuild.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.integration
def test_cli_status_and_history_from_a_fresh_machine(pushed, tmp_path):
    recipe = write_recipe(tmp_path / "app", pushed["home"])
    store = pushed["store"].root
    v1, v2 = pushed["digests"]["v1"], pushed["digests"]["v2"]
    for version, envs in (("v1", ("dev", "test", "prod")), ("v2", ("dev", "test"))):
        for env in envs:
            done = imagebuild("promote", version, "--to", env, "--recipe", recipe, "--store", store)
            assert done.returncode == 0, done.stderr
            assert f"promoted {version}" in done.stdout
    refused = imagebuild("promote", "v2", "--to", "prod", "--recipe", recipe, "--store", store, "--dry-run", "--json")
    assert refused.returncode == 0 and json.loads(refused.stdout)["dry_run"] is True
    skipped = imagebuild("promote", "hello@" + v1, "--to", "test", "--recipe", recipe, "--store", store)
    assert skipped.returncode == 0

    # A fresh machine: no store, no cache, a different home directory.
    fresh = {"HOME": str(tmp_path / "elsewhere"), "IMAGEBUILD_STORE": str(tmp_path / "elsewhere" / "store")}
    shown = imagebuild("status", "--recipe", recipe, "--json", env=fresh)
    assert shown.returncode == 0, shown.stderr
    rows = {r["environment"]: r for r in json.loads(shown.stdout)["environments"]}
    assert (rows["dev"]["digest"], rows["dev"]["version"]) == (v2, "v2")
    assert (rows["test"]["digest"], rows["test"]["version"]) == (v1, "v1")
    assert (rows["prod"]["digest"], rows["prod"]["version"]) == (v1, "v1")
    assert all(r["promoted_at"] for r in rows.values())
    assert not Path(fresh["IMAGEBUILD_STORE"]).exists()  # nothing was read from or written to a local file

    listed = imagebuild("history", "test", "--recipe", recipe, "--json", env=fresh)
    promotions = json.loads(listed.stdout)["promotions"]
    assert [(p["sequence"], p["digest"]) for p in promotions] == [(3, v1), (2, v2), (1, v1)]
    text = imagebuild("history", "prod", "--recipe", recipe, env=fresh)
    assert text.returncode == 0 and "v1" in text.stdout and "v2" not in text.stdout


@pytest.mark.integration
def test_cli_refusals_say_which_rule(pushed, tmp_path):
    recipe = write_recipe(tmp_path / "app", pushed["home"])
    store = pushed["store"].root
    empty = imagebuild("history", "dev", "--recipe", recipe, "--store", store)
    assert empty.returncode == 0 and empty.stdout == "" and empty.stderr == "no promotions to dev yet\n"
    assert imagebuild("promote", "v1", "--to", "dev", "--recipe", recipe, "--store", store).returncode == 0
    skipped = imagebuild("promote", "v1", "--to", "prod", "--recipe", recipe, "--store", store)
    assert skipped.returncode == 2
    assert skipped.stderr.startswith("error: rule 'promotion order' (dev -> test -> prod)")
    assert "promote it to test first" in skipped.stderr
    dry = imagebuild("promote", "v1", "--to", "test", "--dry-run", "--recipe", recipe, "--store", store)
    assert dry.returncode == 0 and "would promote v1" in dry.stdout
    assert tag_digest(pushed["home"].split("/")[0], f"{pushed['namespace']}/hello", "test") is None
    unknown = imagebuild("promote", "v1", "--to", "staging", "--recipe", recipe, "--store", store)
    assert unknown.returncode == 2 and "no environment 'staging'" in unknown.stderr


def test_local_store_promotion_without_a_registry(tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    v1 = str(store.resolve(write_app_image(store, "hello", "v1")).digest)
    write_app_image(store, "hello", "v2-dirty")
    recipe = write_recipe(tmp_path / "app", None)
    for env in ("dev", "test"):
        done = imagebuild("promote", "hello:v1", "--to", env, "--recipe", recipe, "--store", store.root)
        assert done.returncode == 0, done.stderr
    assert store.resolve("hello:test").digest == v1
    skipped = imagebuild("promote", "v1", "--to", "prod", "--recipe", recipe, "--store", store.root)
    assert skipped.returncode == 0  # v1 reached test, so prod takes it
    dirty = imagebuild("promote", "v2-dirty", "--to", "dev", "--recipe", recipe, "--store", store.root)
    assert dirty.returncode == 2 and "clean images only" in dirty.stderr
    shown = json.loads(imagebuild("status", "--recipe", recipe, "--store", store.root, "--json").stdout)
    assert [(r["environment"], r["digest"]) for r in shown["environments"]] == [
        ("dev", v1), ("test", v1), ("prod", v1)]
    listed = json.loads(imagebuild("history", "dev", "--recipe", recipe, "--store", store.root, "--json").stdout)
    assert [p["version"] for p in listed["promotions"]] == ["v1"]
    # The promotion records live in the store as artifacts: `images` lists them only with --all.
    images = json.loads(imagebuild("images", "--store", store.root, "--json").stdout)["images"]
    assert [row["image"] for row in images] == ["hello:dev", "hello:prod", "hello:test", "hello:v1", "hello:v2-dirty"]
    assert {row["kind"] for row in images} == {"image"}
    everything = json.loads(imagebuild("images", "--all", "--store", store.root, "--json").stdout)["images"]
    records = [row["image"] for row in everything if row["kind"] == "artifact"]
    assert len(records) == 3 and all(":promotion-" in name for name in records)
    refused = imagebuild("export", records[0], f"docker-archive:{tmp_path / 'record.tar'}", "--store", store.root)
    assert refused.returncode == 2 and refused.stderr.startswith(f"error: {records[0]} is an artifact")
    assert not (tmp_path / "record.tar").exists()


@pytest.fixture(scope="module")
def second_registry(tmp_path_factory):
    from tests.registry_support.services import RegistryProcess

    process = RegistryProcess("plain.yml", tmp_path_factory.mktemp("second-registry"))
    yield process.address
    process.stop()


@pytest.mark.integration
def test_promotion_into_another_registry_copies_by_digest(pushed, second_registry):
    prod = f"acme-prod-{uuid.uuid4().hex[:10]}"
    envs = (Environment("dev"), Environment("prod", registry=f"{second_registry}/{prod}"))
    places = Places("hello", pushed["home"], pushed["store"])
    run_promote(places, envs, "v1", "dev")
    with FaultProxy(second_registry) as far:
        envs = (envs[0], Environment("prod", registry=f"{far.address}/{prod}"))
        result = run_promote(places, envs, "v1", "prod")
        assert result.action == "copy" and result.digest == pushed["digests"]["v1"]
        assert (result.blobs["blobs_uploaded"], result.blobs["blobs_mounted"]) == (3, 0)
        manifest = pushed["store"].read_manifest(result.digest)
        blob_bytes = sum(b.size for b in manifest.blobs())
        assert far.log.bytes_sent == blob_bytes + len(manifest.raw)
        assert len(far.log.matching("HEAD", "/blobs/")) == 3  # each blob checked before it travels
        far.log.clear()
        again = run_promote(places, envs, "v1", "prod")
        assert (again.action, again.sequence, again.record) == ("none", result.sequence, result.record)
        assert not far.log.blob_uploads() and not far.log.matching("PUT", "/manifests/")
    assert tag_digest(second_registry, f"{prod}/hello", "prod") == pushed["digests"]["v1"]
    inspected = run(["skopeo", "inspect", "--tls-verify=false", f"docker://{second_registry}/{prod}/hello:prod"])
    assert json.loads(inspected.stdout)["Digest"] == pushed["digests"]["v1"]


def test_history_marks_a_rollback(tmp_path):
    # Going back to a digest the environment had before is a rollback; history says so, in text and JSON.
    store = LayoutStore(tmp_path / "store").ensure()
    for version, message in (("v1", "one"), ("v2", "two")):
        write_app_image(store, "hello", version, message=message)
    recipe = write_recipe(tmp_path / "app", None)
    for version in ("v1", "v2", "v1", "v2"):
        done = imagebuild("promote", f"hello:{version}", "--to", "dev", "--recipe", recipe, "--store", store.root)
        assert done.returncode == 0, done.stderr
    listed = json.loads(imagebuild("history", "dev", "--recipe", recipe, "--store", store.root, "--json").stdout)
    assert [(p["sequence"], p["version"], p["rollback"]) for p in listed["promotions"]] == [
        (4, "v2", True), (3, "v1", True), (2, "v2", False), (1, "v1", False)]
    text = imagebuild("history", "dev", "--recipe", recipe, "--store", store.root)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert [line.rstrip().endswith("rollback") for line in lines] == [True, True, False, False]


@pytest.mark.integration
def test_a_repeat_promotion_sends_only_the_requests_its_checks_need(pushed, proxy):
    """Within one repository, once the environment has a record: 10 requests, the writes in their order
    (record, read back, rivals listed, tag compared, tag moved), and no HEAD of the records' empty
    config, which the record just read proves present."""
    places = Places("hello", pushed["home"], pushed["store"])
    run_promote(places, ENVS, "v1", "dev")
    proxy.log.clear()
    run_promote(places, ENVS, "v2", "dev")
    sent = [(e.method, e.path.split("?")[0].rsplit("/", 2)[-2:]) for e in proxy.log.exchanges]
    assert len(sent) == 10, sent
    assert not proxy.log.matching("HEAD", str(EMPTY_DESCRIPTOR.digest))
    record_put = next(i for i, (m, p) in enumerate(sent) if m == "PUT" and p[1].startswith("promotion-dev-000002"))
    assert [(m, p[1].split("-0")[0]) for m, p in sent[record_put:]] == [
        ("PUT", "promotion-dev"), ("GET", "promotion-dev"), ("GET", "list"), ("GET", "dev"), ("PUT", "dev")]
