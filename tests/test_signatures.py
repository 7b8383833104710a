"""Signatures and provenance against the real registry, judged by another tool: Debian 13's skopeo
(containers/image) under a `sigstoreSigned` policy accepts what imagebuild signs, and imagebuild
verifies what skopeo signs; `bake --push --sign` pushes a signed image with verified provenance."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest

from imagebuild.build.images_from_dir import image_from_directory
from imagebuild.oci.reference import Reference
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.registry import push_image
from tests.bake_support import FIRST_COMMIT_TIME, bake, commit_all, example_repo, seed
from tests.conftest import imagebuild
from tests.debian_fixtures import debian_python_base  # noqa: F401
from tests.signing_support import Skopeo, trixie_skopeo_path

pytestmark = pytest.mark.integration

SECRET = "s3cret-passphrase-never-shown"


@pytest.fixture(scope="session")
def trixie_skopeo():
    return trixie_skopeo_path()


@pytest.fixture
def skopeo(trixie_skopeo, registry, tmp_path):
    return Skopeo(trixie_skopeo, registry, tmp_path / "skopeo")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """`ours` (encrypted, passphrase in $PASS) and `other`, written by `imagebuild keygen`."""
    root = tmp_path_factory.mktemp("keys")
    made = imagebuild("keygen", "--out", root / "ours", "--passphrase-env", "PASS", env={"PASS": SECRET})
    assert made.returncode == 0, made.stderr
    assert SECRET not in made.stdout + made.stderr
    assert imagebuild("keygen", "--out", root / "other").returncode == 0
    return root


def pushed_image(registry: str, tmp_path, label: str) -> str:
    """A one-file image pushed to a repository of its own: HOST/REPO:v1."""
    work = tmp_path / label
    (work / "dir").mkdir(parents=True)
    (work / "dir" / "hello.txt").write_text(label)
    store = LayoutStore(work / "store")
    image_from_directory(store, work / "dir", "tiny:v1", source_date_epoch=FIRST_COMMIT_TIME)
    reference = f"{registry}/sig-{label}-{uuid.uuid4().hex[:8]}/tiny:v1"
    push_image(store, "tiny:v1", Reference.parse(reference))
    return reference


def sign(image: str, key, *, passphrase: str | None = None):
    extra = ("--passphrase-env", "PASS") if passphrase is not None else ()
    done = imagebuild("sign", image, "--key", key, *extra, env={"PASS": passphrase} if passphrase else None)
    assert done.returncode == 0, done.stderr
    return done


def test_skopeo_accepts_an_image_signed_by_imagebuild_and_refuses_one_unsigned_or_signed_by_another_key(
        skopeo, keys, registry, tmp_path):
    signed, unsigned, foreign = (pushed_image(registry, tmp_path, label) for label in ("ours", "none", "other"))
    done = sign(signed, keys / "ours.key", passphrase=SECRET)
    assert SECRET not in done.stdout + done.stderr
    sign(foreign, keys / "other.key")
    policy = skopeo.policy(keys / "ours.pub")

    accepted = skopeo("copy", "--src-tls-verify=false", f"docker://{signed}", f"dir:{tmp_path / 'out'}",
                      policy=policy)
    assert accepted.returncode == 0, accepted.stderr
    refused = skopeo("copy", "--src-tls-verify=false", f"docker://{unsigned}", f"dir:{tmp_path / 'out2'}",
                     policy=policy)
    assert refused.returncode != 0 and "signature" in refused.stderr.lower(), refused.stderr
    refused = skopeo("copy", "--src-tls-verify=false", f"docker://{foreign}", f"dir:{tmp_path / 'out3'}",
                     policy=policy)
    assert refused.returncode != 0 and "signature verification failed" in refused.stderr, refused.stderr


def test_imagebuild_verifies_what_skopeo_signed_with_its_sigstore_key_and_refuses_another_key(
        skopeo, keys, registry, tmp_path):
    (tmp_path / "pass").write_text("skopeo-pass")
    made = skopeo("generate-sigstore-key", "--output-prefix", tmp_path / "sk", "--passphrase-file", tmp_path / "pass")
    assert made.returncode == 0, made.stderr
    source = pushed_image(registry, tmp_path, "skopeo")
    target = source.replace("/tiny:v1", "-signed/tiny:v1")
    copied = skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                    "--sign-by-sigstore-private-key", tmp_path / "sk.private",
                    "--sign-passphrase-file", tmp_path / "pass", f"docker://{source}", f"docker://{target}")
    assert copied.returncode == 0, copied.stderr

    verified = imagebuild("verify", target, "--key", tmp_path / "sk.pub", "--json")
    assert verified.returncode == 0, verified.stderr
    assert len(json.loads(verified.stdout)["verified_by"]) == 1
    refused = imagebuild("verify", target, "--key", keys / "ours.pub")
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: none of the 1 signature") and refused.stderr.count("\n") == 1
    # skopeo's encrypted private key (cosign's format) signs with imagebuild too: the same key id.
    done = imagebuild("sign", target, "--key", tmp_path / "sk.private", "--passphrase-env", "SKP", "--json",
                      env={"SKP": "skopeo-pass"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["key_id"] == json.loads(verified.stdout)["verified_by"][0]
    wrong = imagebuild("sign", target, "--key", tmp_path / "sk.private", "--passphrase-env", "SKP",
                       env={"SKP": "not-it"})
    assert wrong.returncode == 2 and "not-it" not in wrong.stdout + wrong.stderr


@pytest.fixture
def flask_repo(tmp_path, debian_python_base):  # noqa: F811
    return example_repo(tmp_path, "flask-hello", lock=debian_python_base.lock_path)


def test_bake_push_sign_pushes_a_signed_image_with_verified_provenance(flask_repo, debian_python_base,  # noqa: F811
                                                                       registry, keys, skopeo, tmp_path):
    store = seed(tmp_path / "store", debian_python_base)
    repository = f"signed-bake-{uuid.uuid4().hex[:8]}"
    recipe = flask_repo / "imagebuild.yaml"
    recipe.write_text(recipe.read_text().replace("name: flask-hello", f"name: {repository}\nregistry: {registry}"))
    commit = commit_all(flask_repo, "registry", FIRST_COMMIT_TIME + 60)
    sign_args = ("--push", "--sign", keys / "ours.key", "--passphrase-env", "PASS")

    wrong = bake(flask_repo, store.root, *sign_args, env={"PASS": "wrong-one"})
    assert wrong.returncode == 2, wrong.stderr
    assert "does not open private key" in wrong.stderr and "wrong-one" not in wrong.stdout + wrong.stderr
    assert "layer" not in wrong.stderr      # refused before anything was built

    done = bake(flask_repo, store.root, "--json", *sign_args, env={"PASS": SECRET})
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["signed"]["identity"] == f"{registry}/{repository}"

    verified = imagebuild("verify", result["image"], "--key", keys / "ours.pub")
    assert verified.returncode == 0, verified.stderr
    accepted = skopeo("copy", "--src-tls-verify=false", f"docker://{result['image']}", f"dir:{tmp_path / 'out'}",
                      policy=skopeo.policy(keys / "ours.pub"))
    assert accepted.returncode == 0, accepted.stderr

    shown = imagebuild("provenance", result["image"], "--key", keys / "ours.pub")
    assert shown.returncode == 0, shown.stderr
    statement = json.loads(shown.stdout)
    assert statement["subject"] == [{"name": f"{registry}/{repository}",
                                     "digest": {"sha256": result["digest"].removeprefix("sha256:")}}]
    dependencies = {d["name"]: d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert dependencies["source"]["digest"] == {"gitCommit": commit}
    assert dependencies["source"]["annotations"] == {"clean": True}
    assert dependencies["recipe"]["digest"]["sha256"] == hashlib.sha256(recipe.read_bytes()).hexdigest()
    assert dependencies["lock"]["digest"]["sha256"] == \
        hashlib.sha256((flask_repo / "imagebuild.lock").read_bytes()).hexdigest()
    assert statement["predicate"]["buildDefinition"]["externalParameters"]["outputs"] == ["push"]

    forged = imagebuild("provenance", result["image"], "--key", keys / "other.pub")
    assert forged.returncode == 2 and forged.stdout == ""
