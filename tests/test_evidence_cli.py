"""`keygen`, `sign`, `verify` and `provenance` through the real CLI on the local store: exit codes, one-line
errors, and a passphrase that never shows."""

from __future__ import annotations

import json

import pytest

from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.lease import release_lease
from tests.conftest import imagebuild
from tests.registry_support.images import write_app_image

SECRET = "pass-word-that-never-shows"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("evidence-cli")
    store = LayoutStore(root / "store").ensure()
    write_app_image(store, "hello", "v1")
    release_lease(store.root)
    for name, extra in (("ours", ("--passphrase-env", "PASS")), ("other", ())):
        made = imagebuild("keygen", "--out", root / name, *extra, env={"PASS": SECRET})
        assert made.returncode == 0, made.stderr
        assert SECRET not in made.stdout + made.stderr
    return root


def cli(app, *args, env=None):
    return imagebuild(*args, "--store", app / "store", env=env)


def one_error_line(done) -> str:
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


def test_sign_then_verify_an_image_of_the_local_store(app):
    signed = cli(app, "sign", "hello:v1", "--key", app / "ours.key", "--passphrase-env", "PASS", "--json",
                 env={"PASS": SECRET})
    assert signed.returncode == 0, signed.stderr
    assert SECRET not in signed.stdout + signed.stderr
    result = json.loads(signed.stdout)
    assert result["identity"] == "hello"
    verified = cli(app, "verify", "hello:v1", "--key", app / "other.pub", "--key", app / "ours.pub", "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["verified_by"] == [result["key_id"]]
    assert "none of" in one_error_line(cli(app, "verify", "hello:v1", "--key", app / "other.pub"))


@pytest.mark.parametrize("args, env, message", [
    (("sign", "hello:v1", "--key", "{app}/ours.key"), None, "is encrypted"),
    (("sign", "hello:v1", "--key", "{app}/ours.key", "--passphrase-env", "PASS"), {"PASS": "guess"},
     "does not open"),
    (("verify", "hello:v1", "--key", "{app}/missing.pub"), None, "does not exist"),
    (("verify", "nothing:v9", "--key", "{app}/ours.pub"), None, "no image"),
    (("provenance", "hello:v1", "--key", "{app}/ours.pub"), None, "has no provenance"),
])
def test_a_mistake_is_one_line_and_exit_2(app, args, env, message):
    # Each kind of mistake is tested in the library (test_evidence_keys.py ...); here, that the CLI makes one line.
    done = cli(app, *(arg.format(app=app) for arg in args), env=env)
    assert message in one_error_line(done)
    assert "guess" not in done.stdout + done.stderr


def test_keygen_never_replaces_a_key(app):
    before = (app / "ours.key").read_bytes()
    assert "exists already" in one_error_line(imagebuild("keygen", "--out", app / "ours"))
    assert (app / "ours.key").read_bytes() == before


def test_bake_refuses_a_passphrase_variable_without_a_key(tmp_path):
    done = imagebuild("bake", tmp_path, "--passphrase-env", "PASS")
    assert "--sign" in one_error_line(done)


# -- --json: exactly one JSON object on stdout, whether the command succeeds or fails -----------------------

def one_json_object(done, code: int) -> dict:
    assert done.returncode == code, done.stderr
    found = json.loads(done.stdout)      # refuses a second object, or anything after the first
    assert isinstance(found, dict)
    if code:
        assert found["error"]["exit_code"] == code and done.stderr.startswith("error: ")
        assert done.stderr.count("\n") == 1
    return found


def test_every_evidence_command_prints_one_json_object_also_when_it_fails(app, tmp_path):
    import shutil

    app = shutil.copytree(app, tmp_path / "app")     # it signs and attaches: the other tests' image stays as it is
    from imagebuild.evidence.keys import load_private_key
    from imagebuild.evidence.provenance import attach_provenance
    from imagebuild.stores.place import LayoutPlace
    from tests.test_evidence_provenance import _statement as provenance_statement

    made = one_json_object(imagebuild("keygen", "--out", tmp_path / "fresh", "--json"), 0)
    assert made["public_key"] == str(tmp_path / "fresh.pub") and not made["encrypted"]
    assert "exists already" in one_json_object(imagebuild("keygen", "--out", tmp_path / "fresh", "--json"), 2)["error"]["message"]

    sign = ("sign", "hello:v1", "--key", app / "other.key", "--json")
    assert one_json_object(cli(app, *sign), 0)["identity"] == "hello"
    one_json_object(cli(app, "sign", "hello:v1", "--key", app / "ours.key", "--json"), 2)   # encrypted, no passphrase
    assert one_json_object(cli(app, "verify", "hello:v1", "--key", app / "other.pub", "--json"), 0)["verified_by"]
    one_json_object(cli(app, "verify", "hello:v1", "--key", tmp_path / "fresh.pub", "--json"), 2)
    one_json_object(cli(app, "verify", "nothing:v9", "--key", app / "other.pub", "--json"), 2)

    one_json_object(cli(app, "provenance", "hello:v1", "--json"), 2)   # none attached yet
    store = LayoutStore(app / "store")
    place = LayoutPlace(store, "hello")
    image = place.manifest(str(store.refs()["hello:v1"].digest))
    attach_provenance(place, image, provenance_statement(image.digest), load_private_key(app / "other.key", None))
    release_lease(store.root)
    shown = one_json_object(cli(app, "provenance", "hello:v1", "--key", app / "other.pub", "--json"), 0)
    assert shown["subject"][0]["digest"]["sha256"] == image.digest.hex
    one_json_object(cli(app, "provenance", "hello:v1", "--key", tmp_path / "fresh.pub", "--json"), 2)
