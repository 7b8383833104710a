"""The expand phase's SQL linted by the real squawk binary, through the real CLI; and the migration record's
rules (what a rollback may cross), which need no host."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, imagebuild
from imagebuild.errors import RecipeError, UserError
from imagebuild.recipe.loader import load_recipe
from imagebuild.recipe.sql_lint import lint_expand, refuse_breaking_expand
from imagebuild.release.deploy.migrations import Ledger, describe, refuse_crossing_contract

EXAMPLE = REPO_ROOT / "examples" / "flask-surname"


def app_with_sql(tmp_path: Path, expand: str, contract: str = "") -> Path:
    """The example's recipe (hosts added, so deploy gets as far as the lint) with these SQL files."""
    root = tmp_path / "app"
    shutil.copytree(EXAMPLE, root)
    recipe = yaml.safe_load((root / "imagebuild.yaml").read_text())
    recipe["registry"] = "127.0.0.1:9/none"
    recipe["environments"][0]["hosts"] = ["ssh://deploy@127.0.0.1:9"]
    (root / "imagebuild.yaml").write_text(yaml.safe_dump(recipe))
    (root / "migrations" / "expand" / "003_change.sql").write_text(expand)
    (root / "migrations" / "contract" / "003_change.sql").write_text(contract)
    return root


DROP = "-- surname goes\nALTER TABLE people ADD COLUMN IF NOT EXISTS nickname text;\nALTER TABLE people DROP COLUMN surname;\n"


@pytest.mark.parametrize("command", ["bake", "deploy"])
def test_drop_column_in_expand_is_refused_with_file_and_line(tmp_path, command):
    root = app_with_sql(tmp_path, DROP)
    args = ["bake", root] if command == "bake" else ["deploy", "dev", "--recipe", root, "--store", tmp_path / "s"]
    done = imagebuild(*args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: migrations/expand/003_change.sql:3: DROP COLUMN"), lines[0]
    assert "contract/" in lines[0]


def test_the_same_statements_pass_in_contract_and_the_example_passes(tmp_path):
    root = app_with_sql(tmp_path, "SELECT 1;\n", contract=DROP)
    assert lint_expand(root, "migrations") == []
    refuse_breaking_expand(root, "migrations")
    assert lint_expand(EXAMPLE, "migrations") == []


def test_each_breaking_change_is_named(tmp_path):
    root = app_with_sql(tmp_path, "ALTER TABLE people RENAME COLUMN surname TO last_name;\n"
                                  "ALTER TABLE people ALTER COLUMN id TYPE int;\n"
                                  "ALTER TABLE people ADD COLUMN age bigint NOT NULL;\n"
                                  "ALTER TABLE people ADD COLUMN born date NOT NULL DEFAULT '2000-01-01';\n")
    found = [(f.line, f.rule) for f in lint_expand(root, "migrations") if f.file.endswith("003_change.sql")]
    assert found == [(1, "renaming-column"), (2, "changing-column-type"), (3, "adding-required-field")]
    with pytest.raises(UserError, match=r"003_change.sql:1: RENAME COLUMN.*\(and 2 more\)"):
        refuse_breaking_expand(root, "migrations")


def test_an_sql_directory_outside_the_repository_is_refused(tmp_path):
    root = app_with_sql(tmp_path, "SELECT 1;\n")
    text = (root / "imagebuild.yaml").read_text().replace("sql: migrations", "sql: ../..")
    (root / "imagebuild.yaml").write_text(text)
    with pytest.raises(RecipeError, match=r"deploy.migrations.sql: '../..' leads outside"):
        load_recipe(root)


@pytest.mark.parametrize("deploy, says", [
    ({"migrate": ["a"], "migrations": {"expand": ["b"]}}, "deploy.migrate is the short form of deploy.migrations.expand"),
    ({"migrations": {"contract_when": "later"}}, "'later' is not one of after-swap, next-deploy"),
    ({"migrations": {"sql": "people.py"}}, "'people.py' is not a directory"),
])
def test_bad_migration_settings_name_their_key(tmp_path, deploy, says):
    root = app_with_sql(tmp_path, "SELECT 1;\n")
    recipe = yaml.safe_load((root / "imagebuild.yaml").read_text())
    recipe["deploy"] = deploy
    (root / "imagebuild.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match="deploy.migrations") as refused:
        load_recipe(root)
    assert says in refused.value.one_line()


def test_migrate_is_the_short_form_of_expand(tmp_path):
    root = app_with_sql(tmp_path, "SELECT 1;\n")
    recipe = yaml.safe_load((root / "imagebuild.yaml").read_text())
    recipe["deploy"] = {"migrate": ["python3", "manage.py", "migrate"]}
    (root / "imagebuild.yaml").write_text(yaml.safe_dump(recipe))
    loaded = load_recipe(root)
    assert loaded.deploy.expand == ("python3", "manage.py", "migrate") and loaded.deploy.migrations.contract == ()


def release(digest: str, version: str, *phases: str, failed: tuple[str, ...] = ()) -> dict:
    return {"digest": digest, "version": version, "phases": {p: {"at": f"t-{p}", "host": "h"} for p in phases},
            "failed": {p: {"at": "t", "host": "h", "exit": 3} for p in failed}}


def test_a_rollback_may_cross_an_expand_but_not_a_contract():
    ledger = Ledger([release("d1", "v1", "expand", "contract"), release("d2", "v2", "expand")])
    refuse_crossing_contract(ledger, "d1", "v1", "dev")                  # v2's contract has not run
    ledger.releases[1]["phases"]["contract"] = {"at": "t2", "host": "h"}
    with pytest.raises(UserError, match="back to v1: the contract phase of v2 ran"):
        refuse_crossing_contract(ledger, "d1", "v1", "dev")
    refuse_crossing_contract(ledger, "d2", "v2", "dev")                  # its own contract is no obstacle
    # A release the record lacks: new, in a forward deploy; older than the record, for `--to`.
    refuse_crossing_contract(ledger, "d3", "v3", "dev")
    with pytest.raises(UserError, match="contract phase of v1"):
        refuse_crossing_contract(ledger, "d0", "v0", "dev", unrecorded_is_older=True)


def test_records_of_two_hosts_merge_in_order_and_a_phase_that_ran_is_not_failed():
    first = Ledger([release("d1", "v1", "expand"), release("d2", "v2", failed=("expand",))])
    second = Ledger([release("d1", "v1", "expand", "contract"), release("d2", "v2", "expand"),
                     release("d3", "v3")])
    first.merge(second)
    assert [r["version"] for r in first.releases] == ["v1", "v2", "v3"]
    assert first.ran("d1", "contract") and first.ran("d2", "expand") and not first.releases[1]["failed"]
    assert describe(first.find("d2")) == "migrations: expand ran t-expand, contract pending"
    assert Ledger.parse("not json").releases == [] and Ledger.parse(Ledger(first.releases).text()) == first
