"""Promotion gates evaluated against places held in memory: the SBOM, deny list and reproduction checks,
the one-line refusal, and promotion carrying the evidence (fast; no registry).

tests/test_evidence_gates.py runs the gates against the real registry and real bakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagebuild.errors import PromotionError
from imagebuild.evidence.dsse import sign_envelope
from imagebuild.evidence.keys import generate_keypair, key_id, load_private_key
from imagebuild.evidence.policy import evaluate, same_repository_form, source_repository
from imagebuild.evidence.reproduce import reproduced_by, statement_for
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.digest import Digest
from imagebuild.recipe.model import Environment, Policy
from imagebuild.release.promote import Target, history, promote, status
from imagebuild.stores.attachments import attach, attachments
from imagebuild.stores.memory import MemoryPlace
from tests.test_promote_policy import NOW, add_image

SPDX = {"spdxVersion": "SPDX-2.3", "packages": [{"name": "libc6"}, {"name": "Flask"}, {"name": "zope.interface"}]}
CYCLONEDX = {"bomFormat": "CycloneDX", "components": [{"name": "telnetd"}]}


@pytest.fixture
def keys(tmp_path) -> Path:
    """Three key pairs under tmp_path/keys: a.pub, b.pub, c.pub (and their private halves)."""
    folder = tmp_path / "keys"
    folder.mkdir()
    for name in ("a", "b", "c"):
        generate_keypair(folder / f"{name}.key", folder / f"{name}.pub", None)
    return tmp_path


@pytest.fixture
def home() -> MemoryPlace:
    place = MemoryPlace("memory/hello")
    add_image(place, "v1")
    return place


def image(place: MemoryPlace, tag: str = "v1"):
    return place.manifest(tag)


def attest(place: MemoryPlace, root: Path, key: str, digest: str | None = None, tag: str = "v1") -> None:
    """A reproduction attestation of the image (or of `digest`), signed with keys/<key>.key."""
    private = load_private_key(root / "keys" / f"{key}.key")
    subject = image(place, tag)
    statement = statement_for("memory/hello:v1", Digest(digest or subject.digest), "ab" * 20, key_id(private),
                              "test-runner", "2026-01-02T03:04:05Z")
    envelope = sign_envelope(json.dumps(statement).encode(), mt.IN_TOTO, private)
    attach(place, subject, mt.IMAGEBUILD_REPRODUCED, envelope, mt.DSSE_ENVELOPE)


def results(place, policy, root, tag="v1"):
    return {r.name: (r.passed, r.why) for r in evaluate(place, image(place, tag), policy, root)}


def test_an_empty_policy_checks_nothing_and_reads_nothing(home, tmp_path):
    assert evaluate(home, image(home), Policy(), tmp_path) == []


def test_sbom_and_deny_read_the_attached_sbom(home, tmp_path):
    policy = Policy(sbom=True, deny=("telnetd", "zope-interface"))
    found = results(home, policy, tmp_path)
    assert found["sbom"] == (False, "no SBOM attached")
    assert found["deny"][0] is False and "no SBOM" in found["deny"][1]
    attach(home, image(home), mt.SPDX_JSON, json.dumps(SPDX).encode(), mt.SPDX_JSON)
    found = results(home, policy, tmp_path)
    assert found["sbom"][0] is True
    # Python names compare in one form: zope.interface is zope-interface.
    assert found["deny"] == (False, "the SBOM lists denied package(s) zope-interface")
    assert results(home, Policy(deny=("telnetd",)), tmp_path)["deny"][0] is True
    attach(home, image(home), mt.CYCLONEDX_JSON, json.dumps(CYCLONEDX).encode(), mt.CYCLONEDX_JSON)
    assert results(home, Policy(deny=("telnetd",)), tmp_path)["deny"] == \
        (False, "the SBOM lists denied package(s) telnetd")


def test_reproductions_count_distinct_listed_keys_of_this_digest(home, keys):
    policy = Policy(reproduced=2, reproduced_by=("keys/a.pub", "keys/b.pub"))
    assert results(home, policy, keys)["reproduced"][0] is False
    attest(home, keys, "a")
    attest(home, keys, "a")                     # the same rebuilder twice is one
    attest(home, keys, "c")                     # a key the policy does not list
    attest(home, keys, "b", digest="sha256:" + "0" * 64)   # b attested another image
    passed, why = results(home, policy, keys)["reproduced"]
    assert not passed and why.startswith("reproduced by 1 of the 2 distinct key(s)")
    attest(home, keys, "b")
    assert results(home, policy, keys)["reproduced"] == (True, "reproduced by keys/a.pub, keys/b.pub")


def test_a_reproduction_by_an_unlisted_key_counts_for_nothing(home, keys):
    attest(home, keys, "c")
    found = attachments(home, str(image(home).digest))
    assert reproduced_by(found, str(image(home).digest), []) == set()
    private_a = load_private_key(keys / "keys" / "a.key")
    from imagebuild.evidence.keys import load_public_key
    assert reproduced_by(found, str(image(home).digest), [load_public_key(keys / "keys" / "a.pub")]) == set()
    assert key_id(private_a) not in reproduced_by(found, str(image(home).digest),
                                                  [load_public_key(keys / "keys" / "c.pub")])


ENVS = (Environment("dev"), Environment("prod", policy=Policy(sbom=True, reproduced=1,
                                                              reproduced_by=("keys/a.pub",))))


def run(home, env, root, target_for=None, **kw):
    return promote(home, ENVS, "v1", env, target_for=target_for or (lambda e: Target(home, e.name)),
                   name="hello", now=lambda: NOW, root=root, **kw)


def test_a_refused_promotion_names_each_failed_check_in_one_line_and_writes_nothing(home, keys):
    run(home, "dev", keys)
    before = dict(home.tagged)
    with pytest.raises(PromotionError) as refused:
        run(home, "prod", keys)
    line = refused.value.one_line()
    assert "\n" not in line and refused.value.exit_code == 2
    assert line.startswith("policy of prod refuses v1 (")
    assert "check sbom: no SBOM attached; check reproduced: reproduced by 0 of the 1" in line
    assert "attach an SBOM" in line and "imagebuild reproduce" in line
    assert home.tagged == before                # no tag, no record
    attach(home, image(home), mt.SPDX_JSON, json.dumps(SPDX).encode(), mt.SPDX_JSON)
    before = dict(home.tagged)
    with pytest.raises(PromotionError, match="policy of prod refuses") as refused:
        run(home, "prod", keys)
    assert "sbom" not in refused.value.message
    assert home.tagged == before


def test_a_passing_promotion_records_its_checks_for_status_and_history(home, keys):
    run(home, "dev", keys)
    attach(home, image(home), mt.SPDX_JSON, json.dumps(SPDX).encode(), mt.SPDX_JSON)
    attest(home, keys, "a")
    done = run(home, "prod", keys)
    assert [c["name"] for c in done.checks] == ["sbom", "reproduced"] and all(c["passed"] for c in done.checks)
    assert home.tagged["prod"] == home.tagged["v1"]
    records = history(home, ENVS, "prod")
    assert records[0].checks == ("sbom", "reproduced")
    assert history(home, ENVS, "dev")[0].checks == ()
    rows = {row.environment: row for row in status(home, ENVS, lambda e: Target(home, e.name))}
    assert rows["prod"].checks == ("sbom", "reproduced") and rows["prod"].to_dict()["checks"] == ["sbom", "reproduced"]
    assert rows["dev"].checks == ()


def test_promotion_into_another_place_carries_every_attachment_and_the_signature_tag(home, keys):
    prod = MemoryPlace("memory/prod")
    attach(home, image(home), mt.SPDX_JSON, json.dumps(SPDX).encode(), mt.SPDX_JSON)
    attest(home, keys, "a")
    digest = Digest(home.tagged["v1"])
    signature = f"sha256-{digest.hex}.sig"
    add_image(home, "sig", tag=signature)       # stands for cosign's signature manifest
    run(home, "dev", keys)
    done = run(home, "prod", keys, target_for=lambda e: Target(prod if e.name == "prod" else home, e.name))
    assert done.action == "copy" and prod.tagged["prod"] == digest
    carried = {a.artifact_type for a in attachments(prod, str(digest))}
    assert carried == {mt.SPDX_JSON, mt.IMAGEBUILD_REPRODUCED}
    assert prod.tagged[signature] == home.tagged[signature]
    # The gate passes in the second place too: the evidence is there, not only in home.
    assert all(passed for passed, _ in results(prod, ENVS[1].policy, keys, tag="prod").values())


def test_provenance_sources_and_repository_spellings():
    source = {"name": "source", "uri": "git+https://github.com/acme/hello@" + "ab" * 20, "digest": {"gitCommit": "ab" * 20}}
    assert source_repository(source) == "https://github.com/acme/hello"
    assert source_repository({"uri": "x"}) is None
    assert same_repository_form("git+https://user:token@GitHub.com/acme/hello.git/") == \
        same_repository_form("https://github.com/acme/hello")


def test_signed_wants_a_signature_by_a_listed_key(home, keys):
    from imagebuild.evidence.signatures import sign_image

    policy = Policy(signed_by=("keys/a.pub",))
    passed, why = results(home, policy, keys)["signed"]
    assert not passed and "has no signature" in why
    digest = str(image(home).digest)
    sign_image(home, digest, "memory/hello", load_private_key(keys / "keys" / "c.key"))
    passed, why = results(home, policy, keys)["signed"]
    assert not passed and "verifies with the given key" in why
    sign_image(home, digest, "memory/hello", load_private_key(keys / "keys" / "a.key"))
    assert results(home, policy, keys)["signed"] == (True, "signed by keys/a.pub")


def provenance(commit: str, origin: str, digest: str, finished: str = "2026-01-02T03:04:05Z") -> dict:
    """A provenance statement as bake --sign writes it, cut to the fields the gates read."""
    from imagebuild.evidence.provenance import SLSA_PROVENANCE, STATEMENT_TYPE
    return {"_type": STATEMENT_TYPE, "predicateType": SLSA_PROVENANCE,
            "subject": [{"name": "memory/hello", "digest": {"sha256": Digest(digest).hex}}],
            "predicate": {"buildDefinition": {"resolvedDependencies": [
                {"name": "source", "uri": f"git+{origin}@{commit}", "digest": {"gitCommit": commit}},
                {"name": "recipe", "uri": "imagebuild.yaml", "digest": {"sha256": "0" * 64}}]},
                "runDetails": {"metadata": {"finishedOn": finished}}}}


def test_provenance_must_verify_with_a_signer_and_name_the_repository(home, keys):
    from imagebuild.evidence.provenance import attach_provenance

    policy = Policy(signed_by=("keys/a.pub",), provenance_from="https://git.example.test/acme/hello")
    digest = str(image(home).digest)
    assert "has no provenance" in results(home, policy, keys)["provenance"][1]
    attach_provenance(home, image(home), provenance("ab" * 20, "https://git.example.test/acme/hello.git", digest),
                      load_private_key(keys / "keys" / "c.key"))
    passed, why = results(home, policy, keys)["provenance"]
    assert not passed and "verif" in why         # signed, but by a key the policy does not list
    attach_provenance(home, image(home), provenance("ab" * 20, "https://git.example.test/acme/other", digest,
                                                    "2026-01-02T03:04:06Z"), load_private_key(keys / "keys" / "a.key"))
    assert results(home, policy, keys)["provenance"] == \
        (False, "the provenance names https://git.example.test/acme/other, not https://git.example.test/acme/hello")
    attach_provenance(home, image(home), provenance("ab" * 20, "https://git.example.test/acme/hello.git", digest,
                                                    "2026-01-02T03:04:07Z"), load_private_key(keys / "keys" / "a.key"))
    assert results(home, policy, keys)["provenance"] == (True, "built from https://git.example.test/acme/hello")



def test_the_gates_read_only_the_kinds_of_attachment_they_check(home, keys):
    """A referrer too large to be evidence (a VM disk names the image as its subject) is never read."""
    from imagebuild.oci.model import Descriptor
    from imagebuild.stores.attachments import MAX_PAYLOAD, attachment_manifest
    from imagebuild.stores.place import descriptor_of

    disk = attachment_manifest(image(home), mt.IMAGEBUILD_DISK,
                               Descriptor("application/octet-stream", Digest.of(b"disk"), MAX_PAYLOAD + 1))
    home.put_manifest(disk)
    home.add_referrer(str(image(home).digest), descriptor_of(disk))
    attach(home, image(home), mt.SPDX_JSON, json.dumps(SPDX).encode(), mt.SPDX_JSON)
    found = results(home, Policy(sbom=True, deny=("telnetd",)), keys)
    assert found["sbom"][0] and found["deny"][0]
