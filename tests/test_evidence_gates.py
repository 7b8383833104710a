"""Promotion gates and reproduction with a real bake, the real registry and the real CLI.

One flask-hello commit is baked and pushed once per module (its Debian layers from the shared test cache);
prod's policy wants a signature by keys/release.pub, provenance from the app's origin, an SBOM without
telnetd, and one reproduction by keys/rebuilder.pub, and prod lives in a second repository.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from imagebuild.errors import BuildError
from imagebuild.evidence.keys import generate_keypair, load_private_key, load_public_key
from imagebuild.evidence.provenance import attach_provenance, read_provenance
from imagebuild.evidence.reproduce import reproduce
from imagebuild.evidence.signatures import sign_image, verify_image
from imagebuild.oci import mediatypes as mt
from imagebuild.registry.client import RegistryClient
from imagebuild.stores.attachments import attach, attachments
from imagebuild.stores.place import RegistryPlace
from tests.bake_support import FIRST_COMMIT_TIME, bake_json, commit_all, example_repo, git, seed
from tests.conftest import REGISTRY, imagebuild
from tests.debian_fixtures import debian_python_base  # noqa: F401

pytestmark = pytest.mark.integration

ORIGIN = "https://git.example.test/acme/flask-hello.git"
CHECKS = ["signed", "sbom", "provenance", "deny", "reproduced"]
SPDX = {"spdxVersion": "SPDX-2.3", "packages": [{"name": "flask"}, {"name": "libc6"}]}


def policy_recipe(repo: Path, namespace: str) -> None:
    """The example's recipe with a registry, prod in a second repository, and prod's policy."""
    recipe = repo / "imagebuild.yaml"
    text = recipe.read_text().replace('    detect: {hostname: "prod-*"}\n', f'''    detect: {{hostname: "prod-*"}}
    registry: {REGISTRY}/{namespace}-prod
    policy:
      signed_by: [keys/release.pub]
      sbom: true
      provenance_from: {ORIGIN}
      deny: [telnetd]
      reproduced: 1
      reproduced_by: [keys/rebuilder.pub]
''')
    recipe.write_text(text + f"registry: {REGISTRY}/{namespace}\n")


@pytest.fixture(scope="module")
def baked(tmp_path_factory, debian_python_base, registry):  # noqa: F811
    """The commit baked and pushed; the private keys outside the repository."""
    root = tmp_path_factory.mktemp("gates")
    private = root / "private"
    private.mkdir()
    namespace = f"gates-{uuid.uuid4().hex[:10]}"

    def prepare(repo: Path):
        (repo / "keys").mkdir()
        for name in ("release", "rebuilder"):
            generate_keypair(private / f"{name}.key", repo / "keys" / f"{name}.pub", None)
        generate_keypair(private / "stranger.key", private / "stranger.pub", None)
        policy_recipe(repo, namespace)
        git(repo, "remote", "add", "origin", ORIGIN)

    repo = example_repo(root, "flask-hello", lock=debian_python_base.lock_path, prepare=prepare)
    result = bake_json(repo, seed(root / "store", debian_python_base).root, "--push")
    client = RegistryClient(REGISTRY)
    home = RegistryPlace(client, f"{namespace}/flask-hello")
    yield {"repo": repo, "private": private, "namespace": namespace, "result": result, "home": home,
           "prod": RegistryPlace(client, f"{namespace}-prod/flask-hello"), "store": root / "store",
           "base": debian_python_base}
    client.close()


def cli(baked, *args: str):
    return imagebuild(*args, "--recipe", baked["repo"] / "imagebuild.yaml", "--store", baked["store"])


def refused(done) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: policy of prod refuses"), done.stderr
    return lines[0]


def no_prod(baked) -> None:
    """No tag moved, no record claims the promotion."""
    assert baked["prod"].manifest("prod") is None
    assert not [t for t in baked["home"].tags() if t.startswith("promotion-prod-")]


def test_prod_refuses_until_signed_and_reproduced_then_promotes_with_the_evidence(baked):
    version, digest = baked["result"]["version"], baked["result"]["digest"]
    home, prod = baked["home"], baked["prod"]
    for env in ("dev", "test"):     # no policy: as before
        assert cli(baked, "promote", version, "--to", env).returncode == 0
    attach(home, home.manifest(digest), mt.SPDX_JSON, json.dumps(SPDX).encode(), mt.SPDX_JSON)

    line = refused(cli(baked, "promote", version, "--to", "prod"))
    assert "check signed:" in line and "has no signature" in line and "check reproduced:" in line
    assert "check provenance:" in line and "has no provenance" in line
    assert "check sbom" not in line and "check deny" not in line
    no_prod(baked)

    sign_image(home, digest, f"{REGISTRY}/{baked['namespace']}/flask-hello",
               load_private_key(baked["private"] / "stranger.key"))
    line = refused(cli(baked, "promote", version, "--to", "prod"))
    assert "check signed:" in line and "verifies with the given key" in line
    no_prod(baked)

    # The same commit baked again with --sign: the same digest, now signed with its provenance attached.
    again = bake_json(baked["repo"], baked["store"], "--push", "--sign", str(baked["private"] / "release.key"))
    assert again["digest"] == digest
    line = refused(cli(baked, "promote", version, "--to", "prod"))
    assert "check signed" not in line and "check provenance" not in line
    assert "check reproduced: reproduced by 0 of the 1" in line
    no_prod(baked)

    # The rebuilder's rebuild (through the library: its fresh store gets only the Debian layers).
    reproduce_with(baked, "rebuilder")

    dry = cli(baked, "promote", version, "--to", "prod", "--dry-run")
    assert "check signed passed: signed by keys/release.pub" in dry.stdout
    assert "check reproduced passed: reproduced by keys/rebuilder.pub" in dry.stdout
    no_prod(baked)
    done = cli(baked, "promote", version, "--to", "prod", "--json")
    assert done.returncode == 0, done.stderr
    promoted = json.loads(done.stdout)
    assert [c["name"] for c in promoted["checks"]] == CHECKS
    assert prod.manifest("prod").digest == digest

    # Every piece of evidence was carried into the second repository, and reads back there.
    release = load_public_key(baked["repo"] / "keys" / "release.pub")
    assert verify_image(prod, digest, [release])
    assert read_provenance(prod, digest, [release])["predicate"]["buildDefinition"]["resolvedDependencies"]
    kinds = sorted(a.artifact_type for a in attachments(prod, digest))
    assert mt.SPDX_JSON in kinds and mt.IMAGEBUILD_REPRODUCED in kinds and mt.IN_TOTO in kinds

    status = cli(baked, "status", "--json")
    rows = {row["environment"]: row for row in json.loads(status.stdout)["environments"]}
    assert rows["prod"]["checks"] == CHECKS and rows["dev"]["checks"] == []
    assert "checks: signed, sbom, provenance, deny, reproduced" in cli(baked, "status").stdout
    history = cli(baked, "history", "prod")
    assert "checks: signed,sbom,provenance,deny,reproduced" in history.stdout
    assert json.loads(cli(baked, "history", "prod", "--json").stdout)["promotions"][0]["checks"] == CHECKS


def reproduce_with(baked, key: str):
    """`imagebuild reproduce` as the library runs it, the fresh store seeded with the Debian layers only."""
    home, digest = baked["home"], baked["result"]["digest"]
    return reproduce(home, home.manifest(digest), baked["result"]["image"], repository=baked["repo"],
                     recipe_path="imagebuild.yaml", key=load_private_key(baked["private"] / f"{key}.key"),
                     provenance_keys=[load_public_key(baked["repo"] / "keys" / "release.pub")],
                     fresh_store=lambda path: seed(path, baked["base"]))


def test_a_commit_one_byte_away_is_not_a_reproduction_and_attaches_nothing(baked):
    """The provenance points at a commit whose app file differs by one byte: its rebuild is another image."""
    repo, home, digest = baked["repo"], baked["home"], baked["result"]["digest"]
    release = load_private_key(baked["private"] / "release.key")
    before = attachments(home, digest, mt.IMAGEBUILD_REPRODUCED)
    hello = repo / "hello.py"
    hello.write_bytes(hello.read_bytes().replace(b"Hello", b"hello", 1))
    changed = commit_all(repo, "one byte", FIRST_COMMIT_TIME + 60)
    statement = read_provenance(home, digest, [release])
    source = next(d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"] if d["name"] == "source")
    source["digest"]["gitCommit"] = changed
    statement["predicate"]["runDetails"]["metadata"]["finishedOn"] = "2099-01-01T00:00:00Z"   # the newest
    attach_provenance(home, home.manifest(digest), statement, release)
    try:
        with pytest.raises(BuildError, match=rf"not reproduced: commit {changed[:12]} rebuilt in a fresh store "
                                             rf"gives sha256:[0-9a-f]{{64}}, but .* is {digest}; nothing attached") \
                as caught:
            reproduce_with(baked, "rebuilder")
        assert caught.value.exit_code == 3
    finally:
        git(repo, "reset", "-q", "--hard", "HEAD~1")
    assert attachments(home, digest, mt.IMAGEBUILD_REPRODUCED) == before
    # The temporary checkout is gone from the repository's work trees.
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
