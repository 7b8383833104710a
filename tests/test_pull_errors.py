"""Pull refuses what is no image, and references written as URLs, in one line; the store stays as it was."""

from __future__ import annotations

import json
import uuid

import pytest

from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.registry import push_image
from imagebuild.oci.reference import Reference

from tests.conftest import REGISTRY, imagebuild
from tests.registry_support.images import write_app_image
from tests.test_export_errors import assert_one_line_error
from tests.test_promote import write_recipe


@pytest.mark.integration
def test_an_artifact_such_as_a_promotion_record_is_not_pulled(tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    home = f"{REGISTRY}/pull-{uuid.uuid4().hex[:10]}"
    push_image(store, write_app_image(store, "hello", "v1"), Reference.parse(f"{home}/hello"))
    recipe = write_recipe(tmp_path / "app", home)
    promoted = imagebuild("promote", "v1", "--to", "dev", "--recipe", recipe, "--store", store.root, "--json")
    assert promoted.returncode == 0, promoted.stderr
    record = f"{home}/hello:{json.loads(promoted.stdout)['record']}"

    fresh = tmp_path / "fresh"
    done = imagebuild("pull", record, "--store", fresh)
    assert_one_line_error(done, f"{record} is not a container image",
                          "'application/vnd.oci.empty.v1+json'", "not an artifact")
    assert not fresh.exists()
    # The image itself still pulls.
    pulled = imagebuild("pull", f"{home}/hello:dev", "--store", fresh, "--json")
    assert pulled.returncode == 0, pulled.stderr


def test_a_url_is_not_a_reference(tmp_path):
    done = imagebuild("pull", f"http://{REGISTRY}/acme/hello:v1", "--store", tmp_path / "store")
    assert_one_line_error(done, "is a URL; an image reference has no scheme", "--insecure")
    assert not (tmp_path / "store").exists()
