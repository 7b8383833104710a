"""`imagebuild reproduce`: its refusals before any rebuild, one line and exit 2 each (no services).

tests/test_evidence_gates.py rebuilds for real."""

from __future__ import annotations

import pytest

from imagebuild.evidence.keys import generate_keypair
from tests.conftest import imagebuild
from tests.test_recipe_loader import MINIMAL


@pytest.fixture
def app(tmp_path):
    (tmp_path / "imagebuild.yaml").write_text(MINIMAL + "environments:\n  - name: dev\n")
    generate_keypair(tmp_path / "ci.key", tmp_path / "ci.pub", None)
    return tmp_path


def one_error(done) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == "" and done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    return done.stderr


@pytest.mark.parametrize("args, fragment", [
    (("--key", "missing.key"), "missing.key"),
    (("--key", "ci.key"), "no key to verify the provenance with (pass --provenance-key KEY.pub"),
    (("--key", "ci.key", "--provenance-key", "ci.pub"), "no image 'v1' in"),
    (("--key", "ci.key", "--provenance-key", "ci.pub", "--passphrase-env", "UNSET_VARIABLE"), "UNSET_VARIABLE"),
])
def test_refusals_are_one_line(app, args, fragment):
    done = imagebuild("reproduce", "v1", *args, "--store", app / "store", cwd=app)
    assert fragment in one_error(done)


def test_an_image_without_provenance_is_not_rebuilt(app):
    from imagebuild.stores.layout import LayoutStore
    from imagebuild.stores.place import LayoutPlace
    from tests.bake_support import FIRST_COMMIT_TIME, commit_all, git
    from tests.evidence_support import small_image

    git(app, "init", "-q", "-b", "main")
    commit_all(app, "first", FIRST_COMMIT_TIME)
    image = small_image(LayoutPlace(LayoutStore(app / "store").ensure(), "hello"), tag="v1")
    done = imagebuild("reproduce", "v1", "--key", "ci.key", "--provenance-key", "ci.pub", "--store", app / "store",
                      cwd=app)
    assert f"image {image.digest} in" in one_error(done) and "has no provenance" in done.stderr


@pytest.mark.parametrize("args", [("--key", "missing.key"), ("--key", "ci.key", "--provenance-key", "ci.pub")],
                         ids=["no-key", "no-image"])
def test_a_refusal_with_json_is_one_json_object_on_stdout(app, args):
    import json

    done = imagebuild("reproduce", "v1", *args, "--json", "--store", app / "store", cwd=app)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert json.loads(done.stdout)["error"]["exit_code"] == 2     # one object, nothing after it
