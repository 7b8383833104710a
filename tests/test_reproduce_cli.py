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
])
def test_refusals_are_one_line(app, args, fragment):
    done = imagebuild("reproduce", "v1", *args, "--store", app / "store", cwd=app)
    assert fragment in one_error(done)
