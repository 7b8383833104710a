"""Provenance statements: their shape (in-toto Statement v1, SLSA provenance v1), the runner read from CI
variables, and reading them back only when a key verifies them and they are about the image."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from imagebuild.errors import EvidenceError
from imagebuild.evidence.dsse import sign_envelope
from imagebuild.evidence.provenance import (BUILD_TYPE, SLSA_PROVENANCE, STATEMENT_TYPE, BakeRun, attach_provenance,
                                            read_provenance, runner_of, source_of, statement)
from imagebuild.oci import mediatypes as mt
from imagebuild.stores.attachments import attach
from imagebuild.stores.memory import MemoryPlace
from tests.evidence_support import small_image

KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _statement(digest, finished=datetime(2026, 1, 1, 12, 5, tzinfo=timezone.utc), clean=True):
    run = BakeRun(datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc), finished, "urn:uuid:1", "urn:imagebuild:host:h", "h")
    return statement("reg/acme/hello", str(digest), recipe_path="imagebuild.yaml", recipe_sha256="aa" * 32,
                     lock_path="imagebuild.lock", lock_sha256="bb" * 32, source_uri="https://git.example/acme/hello",
                     commit=COMMIT, clean=clean, version="abc1234", source_date_epoch=1_750_000_000,
                     outputs=["push"], platform="linux/amd64", allow_dirty=False, run=run)


def test_the_statement_is_in_toto_v1_with_a_slsa_v1_predicate():
    document = _statement("sha256:" + "cd" * 32)
    assert document["_type"] == STATEMENT_TYPE and document["predicateType"] == SLSA_PROVENANCE
    assert document["subject"] == [{"name": "reg/acme/hello", "digest": {"sha256": "cd" * 32}}]
    definition = document["predicate"]["buildDefinition"]
    assert definition["buildType"] == BUILD_TYPE
    assert definition["externalParameters"] == {"recipe": "imagebuild.yaml", "outputs": ["push"],
                                                "platform": "linux/amd64", "allowDirty": False}
    assert [d["name"] for d in definition["resolvedDependencies"]] == ["source", "recipe", "lock"]
    assert source_of(document) == {"name": "source", "uri": f"git+https://git.example/acme/hello@{COMMIT}",
                                   "digest": {"gitCommit": COMMIT}, "annotations": {"clean": True}}
    details = document["predicate"]["runDetails"]
    assert details["metadata"] == {"invocationId": "urn:uuid:1", "startedOn": "2026-01-01T12:00:00Z",
                                   "finishedOn": "2026-01-01T12:05:00Z"}
    assert set(details["builder"]["version"]) == {"imagebuild", "runner"}


@pytest.mark.parametrize("env, builder, runner, invocation", [
    ({"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/hello",
      "GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "2", "RUNNER_NAME": "GitHub Actions 7",
      "RUNNER_ENVIRONMENT": "github-hosted"},
     "https://github.com/actions/runner/github-hosted", "GitHub Actions 7",
     "https://github.com/acme/hello/actions/runs/42/attempts/2"),
    ({"GITLAB_CI": "true", "CI_SERVER_URL": "https://gitlab.example", "CI_RUNNER_ID": "17",
      "CI_RUNNER_DESCRIPTION": "shared-1", "CI_JOB_URL": "https://gitlab.example/acme/hello/-/jobs/9"},
     "https://gitlab.example/-/runners/17", "shared-1", "https://gitlab.example/acme/hello/-/jobs/9"),
])
def test_the_runner_comes_from_the_ci_variables(env, builder, runner, invocation):
    assert runner_of(env) == (builder, runner, invocation)


def test_outside_ci_the_runner_is_this_host_and_the_invocation_a_fresh_uuid():
    builder, runner, invocation = runner_of({})
    assert builder == f"urn:imagebuild:host:{runner}" and invocation is None
    run = BakeRun.observe(datetime.now(timezone.utc), {})
    assert run.invocation_id.startswith("urn:uuid:") and run.finished_on >= run.started_on


def test_attached_provenance_reads_back_only_with_a_key_that_verifies_it():
    place = MemoryPlace()
    image = small_image(place)
    attach_provenance(place, image, _statement(image.digest), KEY)
    assert source_of(read_provenance(place, image.digest, [KEY.public_key()]))["digest"]["gitCommit"] == COMMIT
    with pytest.raises(EvidenceError, match="no given key verifies") as failure:
        read_provenance(place, image.digest, [OTHER.public_key()])
    assert failure.value.exit_code == 2
    # Unverified, for showing only.
    assert read_provenance(place, image.digest, None)["subject"][0]["name"] == "reg/acme/hello"


def test_of_several_statements_the_last_finished_that_verifies_wins():
    place = MemoryPlace()
    image = small_image(place)
    attach_provenance(place, image, _statement(image.digest, clean=False), KEY)
    attach_provenance(place, image, _statement(image.digest, datetime(2026, 1, 2, tzinfo=timezone.utc)), KEY)
    attach_provenance(place, image, _statement(image.digest, datetime(2026, 1, 3, tzinfo=timezone.utc)), OTHER)
    found = read_provenance(place, image.digest, [KEY])
    assert found["predicate"]["runDetails"]["metadata"]["finishedOn"] == "2026-01-02T00:00:00Z"


def test_a_signed_statement_about_another_image_is_refused():
    place = MemoryPlace()
    image, other = small_image(place), small_image(place, b"other")
    # A genuine statement about `other`, attached to `image`: signed, but not evidence about it.
    attach_provenance(place, image, _statement(other.digest), KEY)
    with pytest.raises(EvidenceError, match="about another image"):
        read_provenance(place, image.digest, [KEY])


def test_an_envelope_of_another_payload_type_is_refused():
    place = MemoryPlace()
    image = small_image(place)
    envelope = sign_envelope(json.dumps(_statement(image.digest)).encode(), "text/plain", KEY)
    attach(place, image, mt.IN_TOTO, envelope, mt.DSSE_ENVELOPE)
    with pytest.raises(EvidenceError, match="not an in-toto statement"):
        read_provenance(place, image.digest, [KEY])


def test_an_image_without_provenance_is_refused():
    place = MemoryPlace()
    image = small_image(place)
    with pytest.raises(EvidenceError, match="has no provenance"):
        read_provenance(place, image.digest, [KEY])
