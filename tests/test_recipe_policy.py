"""`environments[].policy`: read into `Policy`, every key checked when the recipe loads, one line each."""

from __future__ import annotations

import pytest

from imagebuild.recipe.loader import load_recipe
from imagebuild.recipe.model import Policy
from tests.test_recipe_loader import MINIMAL, NO_GIT, error_of, write


def recipe_with(tmp_path, policy: str, **files: str):
    text = MINIMAL + "environments:\n  - name: dev\n  - name: prod\n    policy:\n" + \
        "".join(f"      {line}\n" for line in policy.strip().splitlines())
    (tmp_path / "app" / "keys").mkdir(parents=True, exist_ok=True)
    for name in ("a.pub", "b.pub"):
        (tmp_path / "app" / "keys" / name).write_text("-----BEGIN PUBLIC KEY-----\n")
    return write(tmp_path / "app", text, **files)


def test_a_full_policy_loads(tmp_path):
    path = recipe_with(tmp_path, """
signed_by: [keys/a.pub]
sbom: true
provenance_from: https://github.com/acme/hello
deny: [telnetd, pyyaml]
reproduced: 2
reproduced_by: [keys/a.pub, keys/b.pub]
""")
    recipe = load_recipe(path, context=NO_GIT)
    assert recipe.environments[0].policy == Policy() and recipe.environments[0].policy.empty
    assert recipe.environments[1].policy == Policy(
        signed_by=("keys/a.pub",), sbom=True, provenance_from="https://github.com/acme/hello",
        deny=("telnetd", "pyyaml"), reproduced=2, reproduced_by=("keys/a.pub", "keys/b.pub"))
    # Without reproduced_by, the signers are the rebuilders.
    assert Policy(signed_by=("k",), reproduced=1).rebuilder_keys == ("k",)


@pytest.mark.parametrize("policy, key, fragment", [
    ("signd_by: [keys/a.pub]", "signd_by", "did you mean 'signed_by'"),
    ("signed_by: [../outside.pub]", "signed_by[0]", "leads outside the recipe's repository"),
    ("signed_by: [/etc/ssh/key.pub]", "signed_by[0]", "must be a path relative to the recipe"),
    ("signed_by: [keys/missing.pub]", "signed_by[0]", "is not a file next to the recipe"),
    ("signed_by: [keys/a.pub, keys/a.pub]", "signed_by", "names one key twice"),
    ("sbom: yes please", "sbom", "expected true or false"),
    ("provenance_from: not a url\nsigned_by: [keys/a.pub]", "provenance_from", "is not a source repository URL"),
    ("provenance_from: https://user:secret@github.com/acme/hello\nsigned_by: [keys/a.pub]", "provenance_from",
     "is not a source repository URL"),
    ("provenance_from: https://github.com/acme/hello", "provenance_from", "needs signed_by"),
    ("deny: ['rm -rf']", "deny[0]", "is not a Debian or Python package name"),
    ("reproduced: -1\nsigned_by: [keys/a.pub]", "reproduced", "must be between 0 and 16"),
    ("reproduced: 2\nsigned_by: [keys/a.pub]", "reproduced", "signed_by lists 1"),
    ("reproduced: 3\nreproduced_by: [keys/a.pub, keys/b.pub]", "reproduced", "reproduced_by lists 2"),
    ("reproduced_by: [keys/a.pub]", "reproduced_by", "has no effect without reproduced"),
])
def test_each_bad_policy_key_is_one_line_at_its_key(tmp_path, policy, key, fragment):
    path = recipe_with(tmp_path, policy)
    if not (tmp_path / "outside.pub").exists():
        (tmp_path / "outside.pub").write_text("x")
    text = error_of(path).one_line()
    assert f"environments[1].policy.{key}:" in text and fragment in text, text
