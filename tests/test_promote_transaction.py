"""Promotion as an ordered, checked transaction, against the real registry and the local store:
tags only promotion writes, records that do not match their tag, and two promotions racing for
one environment (two real processes released together by a barrier)."""

from __future__ import annotations

import multiprocessing
import os
import uuid

import pytest

from imagebuild.errors import ImageBuildError, PromotionConflictError
from imagebuild.oci.reference import Reference
from imagebuild.recipe.model import Environment
from imagebuild.release.promote import Places, promote, read_records, record_tags
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.registry import push_image
from tests.conftest import imagebuild
from tests.registry_support.images import write_app_image
from tests.test_promote import tag_digest, write_recipe

ENVS = (Environment("dev"), Environment("test"), Environment("prod"))
ROUNDS = 10


def pushed_images(store: LayoutStore, home: str | None, count: int) -> list[str]:
    """`count` versions of one app (v0, v1, ...), pushed to `home` when given; their digests."""
    digests = []
    for index in range(count):
        ref_name = write_app_image(store, "hello", f"v{index}", message=f"message {index}")
        if home:
            push_image(store, ref_name, Reference.parse(f"{home}/hello"))
        digests.append(str(store.resolve(ref_name).digest))
    return digests


@pytest.mark.integration
def test_push_refuses_record_and_environment_tags(registry, tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    namespace = f"reserved-{uuid.uuid4().hex[:10]}"
    home = f"{registry}/{namespace}"
    recipe = write_recipe(tmp_path / "app", home)
    (digest,) = pushed_images(store, None, 1)
    forged = f"promotion-prod-000001-{digest[7:19]}"
    for tag in (forged, "prod"):
        done = imagebuild("push", "hello:v0", "--to", f"{home}/hello:{tag}", "--recipe", recipe, "--store", store.root)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
        assert "only promotion writes" in done.stderr and "imagebuild promote" in done.stderr
        assert tag_digest(registry, f"{namespace}/hello", tag) is None
    assert imagebuild("push", "hello:v0", "--recipe", recipe, "--store", store.root).returncode == 0


@pytest.mark.integration
def test_a_record_forged_under_another_tag_is_ignored(registry, tmp_path):
    """A dev record copied under a test record tag (what `push` could once do) lets nothing reach prod."""
    store = LayoutStore(tmp_path / "store").ensure()
    home = f"{registry}/forged-{uuid.uuid4().hex[:10]}"
    (v0,) = pushed_images(store, home, 1)
    recipe = write_recipe(tmp_path / "app", home)
    assert imagebuild("promote", "v0", "--to", "dev", "--recipe", recipe, "--store", store.root).returncode == 0
    places = Places("hello", home, store)
    try:
        (dev_tag,) = [tag for _, tag in record_tags(places.home.tags(), "dev")]
        forged_tag = dev_tag.replace("promotion-dev-", "promotion-test-")
        places.home.put_manifest(places.home.manifest(dev_tag), [forged_tag])
        assert read_records(places.home, "test", warn=lambda line: None) == []
    finally:
        places.close()
    refused = imagebuild("promote", "v0", "--to", "prod", "--recipe", recipe, "--store", store.root)
    assert refused.returncode == 2 and "never promoted to test" in refused.stderr
    assert f"warning: {home}/hello:{forged_tag} ignored: its content (environment dev" in refused.stderr
    assert tag_digest(registry, home.split("/", 1)[1] + "/hello", "prod") is None


# -- two promotions at once ---------------------------------------------------------------------

def _contender(barrier, home: str | None, store_root: str, image: str) -> None:
    """One promotion in its own process; exits 0, or with the code of its error (5 for a conflict)."""
    code = 0
    try:
        places = Places("hello", home, LayoutStore(store_root))
        try:
            barrier.wait(timeout=60)
            promote(places.home, ENVS, image, "dev", target_for=places.target_for, name="hello",
                    warn=lambda line: None, wait=(30.0, 0.05))
        finally:
            places.close()
    except PromotionConflictError:
        code = PromotionConflictError.exit_code
    except ImageBuildError as exc:
        print(exc.one_line())
        code = exc.exit_code
    except BaseException as exc:  # noqa: BLE001 - a crash must show as its own code, not as a conflict
        print(repr(exc))
        code = 1
    os._exit(code)


def race(home: str | None, store: LayoutStore, digests: list[str], current_tag) -> dict:
    context = multiprocessing.get_context("fork")
    raced = {"conflicts": 0, "serial": 0}
    for round_ in range(ROUNDS):
        images = [f"v{2 * round_}", f"v{2 * round_ + 1}"]
        barrier = context.Barrier(2)
        workers = [context.Process(target=_contender, args=(barrier, home, str(store.root), image))
                   for image in images]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        codes = [worker.exitcode for worker in workers]
        places = Places("hello", home, store)
        try:
            records = read_records(places.home, "dev", warn=lambda line: None)
        finally:
            places.close()
        sequences = [r.sequence for r in records]
        assert len(sequences) == len(set(sequences)), f"round {round_}: two records share a sequence: {records}"
        assert sequences == list(range(len(records), 0, -1)), f"round {round_}: sequences {sequences}"
        ours = {digests[2 * round_], digests[2 * round_ + 1]}
        new = [r for r in records if r.digest in ours]
        if sorted(codes) == [0, 5]:
            # They raced: one record for the round, the tag at the winner, the loser changed nothing.
            winner = images[codes.index(0)]
            assert [r.digest for r in new] == [digests[int(winner[1:])]], f"round {round_}: {new}"
            raced["conflicts"] += 1
        else:
            # One finished before the other read the tag: two promotions in a row, each completed.
            assert codes == [0, 0], f"round {round_}: exit codes {codes}"
            assert len(new) == 2 and new[0].previous == new[1].digest, f"round {round_}: {new}"
            raced["serial"] += 1
        assert current_tag() == records[0].digest, f"round {round_}: the tag is not at the newest record"
    return raced


@pytest.mark.integration
def test_two_promotions_racing_in_the_registry_leave_one_record_per_sequence(registry, tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    namespace = f"race-{uuid.uuid4().hex[:10]}"
    home = f"{registry}/{namespace}"
    digests = pushed_images(store, home, 2 * ROUNDS)
    outcome = race(home, store, digests, lambda: tag_digest(registry, f"{namespace}/hello", "dev"))
    print(f"registry: {outcome}")


@pytest.mark.integration
def test_two_promotions_racing_in_the_local_store_leave_one_record_per_sequence(tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    digests = pushed_images(store, None, 2 * ROUNDS)
    outcome = race(None, store, digests, lambda: str(store.resolve("hello:dev").digest))
    print(f"local store: {outcome}")
