"""The recipe loader: good recipes load into the frozen types; every kind of
mistake is one line naming file:line and the key."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from imagebuild.errors import RecipeError, UserError
from imagebuild.sources.git import GitFacts
from imagebuild.recipe.loader import load_recipe, stock_recipe_names, stock_recipes_dir
from imagebuild.recipe.model import Recipe

from conftest import REPO_ROOT, imagebuild

NO_GIT = {"git": GitFacts().as_context()}

MINIMAL = """\
name: hello
runtime:
  python: "3.11"
server:
  kind: gunicorn
  app: hello:app
"""


def write(directory: Path, text: str, **files: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "imagebuild.yaml"
    path.write_text(textwrap.dedent(text))
    for name, content in files.items():
        (directory / name).write_text(content)
    return path


def error_of(path: Path, context: dict | None = None) -> RecipeError:
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, context=context if context is not None else NO_GIT)
    line = caught.value.one_line()
    assert "\n" not in line
    return caught.value


def assert_error(path: Path, line: int, key: str, *fragments: str, file: Path | None = None) -> str:
    exc = error_of(path)
    text = exc.one_line()
    where = f"{file or path}:{line}:"
    assert text.startswith(where), text
    assert exc.line == line and exc.key == key, (exc.line, exc.key, text)
    for fragment in fragments:
        assert fragment in text, text
    return text


# -- good recipes -----------------------------------------------------------

def test_minimal_recipe_loads_with_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL), context=NO_GIT)
    assert isinstance(recipe, Recipe)
    assert recipe.name == "hello"
    assert recipe.runtime.python == "3.11" and recipe.runtime.language == "python"
    assert recipe.server.kind == "gunicorn" and recipe.server.port == 8000
    assert recipe.os.debian == "bookworm"
    assert recipe.source == tmp_path / "imagebuild.yaml"
    assert recipe.root == tmp_path
    assert recipe.stock_dir is None and recipe.extends is None


def test_directory_path_finds_imagebuild_yaml(tmp_path):
    write(tmp_path, MINIMAL)
    assert load_recipe(tmp_path, context=NO_GIT).name == "hello"


def test_full_recipe_from_design(tmp_path):
    path = write(tmp_path, """\
        name: hello
        registry: localhost:5000/acme
        os:
          debian: bookworm
          packages: [ca-certificates]
        runtime:
          python: "3.11"
        libraries:
          requirements: requirements.txt
        server:
          kind: gunicorn
          app: hello:app
          port: 8000
          options: {timeout: "60", log_level: debug}
        app:
          path: .
          exclude: [tests/]
        health:
          path: /health
        environments:
          - name: dev
            config: {LOG_LEVEL: debug, RETRIES: 3, VERBOSE: true}
            features: {new_checkout: true}
          - name: test
          - name: prod
            config: {LOG_LEVEL: info}
            features: {new_checkout: false}
            secrets: [DATABASE_URL]
        """, **{"requirements.txt": "flask==3.1.3 \\\n    --hash=sha256:abc123\n# comment\n"})
    recipe = load_recipe(path, context=NO_GIT)
    assert recipe.registry == "localhost:5000/acme"
    assert recipe.os.packages == ("ca-certificates",)
    assert recipe.libraries.requirements == "requirements.txt"
    assert recipe.server.options == {"timeout": "60", "log_level": "debug"}
    assert recipe.app.exclude == ("tests/",)
    assert recipe.environment_names() == ["dev", "test", "prod"]
    dev = recipe.environment("dev")
    # Numbers and booleans in config become the strings the process environment holds.
    assert dev.config == {"LOG_LEVEL": "debug", "RETRIES": "3", "VERBOSE": "true"}
    assert dev.features == {"new_checkout": True}
    assert recipe.environment("prod").secrets == ("DATABASE_URL",)
    assert recipe.environment("test").config == {}


def test_version_numbers_keep_their_text(tmp_path):
    # Unquoted 3.10 is the float 3.1 to YAML; the recipe means the string "3.10".
    path = write(tmp_path, MINIMAL.replace('python: "3.11"', "python: 3.10"))
    assert load_recipe(path, context=NO_GIT).runtime.python == "3.10"


def test_os_image_pinned_by_digest_replaces_debian(tmp_path):
    digest = "sha256:" + "a" * 64
    path = write(tmp_path, MINIMAL + f"os:\n  image: localhost:5000/base@{digest}\n")
    recipe = load_recipe(path, context=NO_GIT)
    assert recipe.os.image.endswith(digest) and recipe.os.debian is None


# -- Jinja2 rendering ---------------------------------------------------------

def test_recipe_renders_git_env_and_context(tmp_path, monkeypatch):
    monkeypatch.setenv("IB_TEST_LEVEL", "warning")
    path = write(tmp_path, MINIMAL + textwrap.dedent("""\
        environments:
          - name: dev
            config:
              COMMIT: "{{ git.short }}"
              LEVEL: "{{ env.IB_TEST_LEVEL }}"
              EXTRA: "{{ extra }}"
        """))
    context = {"git": dict(NO_GIT["git"], short="abc1234"), "extra": "yes"}
    recipe = load_recipe(path, context=context)
    assert recipe.environment("dev").config == {"COMMIT": "abc1234", "LEVEL": "warning", "EXTRA": "yes"}


def test_git_facts_are_rendered_from_the_repository(tmp_path):
    write(tmp_path, MINIMAL + "environments:\n  - name: dev\n    config: {COMMIT: '{{ git.commit }}'}\n")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e", "PATH": "/usr/bin:/bin"}
    for cmd in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "x"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert load_recipe(tmp_path).environment("dev").config["COMMIT"] == head


def test_git_facts_outside_a_repository_render_empty(tmp_path):
    write(tmp_path, MINIMAL + "environments:\n  - name: dev\n    config: {COMMIT: 'x{{ git.commit }}x'}\n")
    assert load_recipe(tmp_path).environment("dev").config["COMMIT"] == "xx"


def test_undefined_variable_names_its_line(tmp_path):
    path = write(tmp_path, MINIMAL + "environments:\n  - name: dev\n    config: {A: '{{ nope }}'}\n")
    exc = error_of(path)
    assert exc.one_line().startswith(f"{path}:9:") and "'nope' is undefined" in exc.one_line()


def test_undefined_env_variable(tmp_path):
    path = write(tmp_path, "name: '{{ env.IB_SURELY_UNSET_VARIABLE }}'\n")
    text = error_of(path).one_line()
    assert text.startswith(f"{path}:1:") and "IB_SURELY_UNSET_VARIABLE" in text


def test_undefined_env_variable_is_named_as_one(tmp_path, monkeypatch):
    monkeypatch.delenv("IB_SURELY_UNSET_VARIABLE", raising=False)
    path = write(tmp_path, MINIMAL + "registry: '{{ env.IB_SURELY_UNSET_VARIABLE }}'\n")
    text = error_of(path).one_line()
    assert text == (f"{path}:7: template error: the environment variable IB_SURELY_UNSET_VARIABLE is not set "
                    "(set it, or give the recipe a default: {{ env.NAME | default('...') }})")
    defaulted = write(tmp_path, MINIMAL + "registry: \"{{ env.IB_SURELY_UNSET_VARIABLE | default('localhost:5000') }}\"\n")
    assert load_recipe(defaulted, context=NO_GIT).registry == "localhost:5000"


def test_unknown_git_fact_lists_the_known_ones(tmp_path):
    path = write(tmp_path, MINIMAL + "registry: 'localhost:5000/{{ git.sha }}'\n")
    text = error_of(path).one_line()
    assert text.startswith(f"{path}:7: template error: git.sha is not defined; git has branch, commit,"), text


def test_jinja_syntax_error_names_its_line(tmp_path):
    path = write(tmp_path, MINIMAL + "registry: '{{ git.short '\n")
    assert error_of(path).one_line().startswith(f"{path}:7: template error")


def test_lines_stay_right_after_a_block_removes_lines(tmp_path):
    path = write(tmp_path, """\
        name: hello
        {% if false %}
        registry: localhost:5000/a
        registry2: x
        {% endif %}
        runtime:
          python: "3.11"
        server:
          kind: gunicorn
          app: hello:app
          sever: 1
        """)
    assert_error(path, 11, "server.sever", "unknown key")


# -- unknown keys and types ---------------------------------------------------

def test_top_level_typo_suggests_the_key(tmp_path):
    path = write(tmp_path, MINIMAL.replace("server:", "sever:"))
    text = assert_error(path, 4, "sever", "unknown key", "did you mean 'server'?")
    assert text.count("\n") == 0









def test_missing_name(tmp_path):
    path = write(tmp_path, MINIMAL.replace("name: hello\n", ""))
    assert error_of(path).key == "name"
    assert "name: missing, it is required" in error_of(path).one_line()


def test_invalid_yaml_names_its_line(tmp_path):
    path = write(tmp_path, MINIMAL + "os: [unclosed\n")
    text = error_of(path).one_line()
    assert text.startswith(f"{path}:") and "not valid YAML" in text


def test_empty_recipe(tmp_path):
    assert "empty" in error_of(write(tmp_path, "# nothing\n")).one_line()


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path)
    assert "no recipe at" in caught.value.one_line() and "imagebuild init" in caught.value.one_line()


# -- rules --------------------------------------------------------------------





@pytest.mark.parametrize("size, fragment", [("4 GB", "is not a size"), ("lots", "is not a size"),
                                            ("1024", "less than 1MiB")])
def test_bad_disk_max_size(tmp_path, size, fragment):
    path = write(tmp_path, MINIMAL + f"disk:\n  max_size: {size}\n")
    assert_error(path, 8, "disk.max_size", fragment)


@pytest.mark.parametrize("size, expected", [("512MiB", 512 << 20), ("16GiB", 16 << 30), ("5000000", 5000000)])
def test_disk_max_size_takes_units_or_bytes(tmp_path, size, expected):
    recipe = load_recipe(write(tmp_path, MINIMAL + f"disk:\n  max_size: {size}\n"))
    assert recipe.disk.max_bytes == expected
    assert load_recipe(write(tmp_path, MINIMAL)).disk.max_bytes == 4 << 30


@pytest.mark.parametrize("port", ["0", "70000", "-1"])
def test_bad_port(tmp_path, port):
    path = write(tmp_path, MINIMAL + f"  port: {port}\n")
    assert_error(path, 7, "server.port", "not a TCP port")







def test_unpinned_requirement_names_its_own_line(tmp_path):
    path = write(tmp_path, MINIMAL + "libraries:\n  requirements: req.txt\n",
                 **{"req.txt": "# pinned\nflask==3.1.3\nrequests>=2\n"})
    exc = error_of(path)
    assert exc.one_line().startswith(f"{tmp_path / 'req.txt'}:3: requirement 'requests' is not pinned")








def test_secret_must_not_be_baked_as_config(tmp_path):
    path = write(tmp_path, MINIMAL + "environments:\n  - name: prod\n    config: {TOKEN: x}\n"
                 "    secrets: [TOKEN]\n")
    assert_error(path, 10, "environments[0].secrets[0]", "also in config")



# Each case: (recipe text, line, key, fragments the one-line error must hold).
BAD = {
    'nested_typo_suggests_the_key': (
        MINIMAL + "health:\n  pth: /health\n",
        8, "health.pth", ("did you mean 'path'?",)),
    'environment_typo_suggests_the_key': (
        MINIMAL + "environments:\n  - name: dev\n    feature: {a: true}\n",
        9, "environments[0].feature", ("did you mean 'features'?",)),
    'wrong_type_names_the_expected_type': (
        MINIMAL + "  port: eighty\n",
        7, "server.port", ("expected a whole number", "'eighty'",)),
    'string_field_refuses_a_list': (
        MINIMAL.replace("app: hello:app", "app: [hello, app]"),
        6, "server.app", ("expected a string, got a list",)),
    'list_field_refuses_a_string': (
        MINIMAL + "os:\n  packages: curl\n",
        8, "os.packages", ("expected a list",)),
    'section_must_be_a_mapping': (
        MINIMAL + "health: /health\n",
        7, "health", ("expected a mapping",)),
    'duplicate_key': (
        MINIMAL + "name: again\n",
        7, "name", ("appears twice",)),
    'image_name_must_be_lowercase': (
        MINIMAL.replace("name: hello", "name: Hello"),
        1, "name", ("not a valid image name",)),
    'os_image_must_be_pinned_by_digest': (
        MINIMAL + "os:\n  image: debian:bookworm\n",
        8, "os.image", ("not pinned by digest", "REF@sha256",)),
    'os_image_and_debian_together': (
        MINIMAL + f"os:\n  debian: bookworm\n  image: x@sha256:{'b' * 64}\n",
        9, "os.image", ("either os.debian or os.image",)),
    'bad_server_kind_suggests_one': (
        MINIMAL.replace("kind: gunicorn", "kind: gunicron"),
        5, "server.kind", ("unknown server kind", "did you mean 'gunicorn'?",)),
    'kind_needs_its_runtime': (
        MINIMAL.replace('runtime:\n  python: "3.11"\n', ""),
        3, "server.kind", ("gunicorn needs runtime.python",)),
    'app_reference_format': (
        MINIMAL.replace("app: hello:app", "app: hello.py"),
        6, "server.app", ("MODULE:CALLABLE",)),
    'unknown_server_option': (
        MINIMAL + "  options: {timout: '5'}\n",
        7, "server.options.timout", ("did you mean 'timeout'?",)),
    'unpinned_server_package': (
        MINIMAL + "  packages: [gunicorn]\n",
        7, "server.packages[0]", ("not pinned",)),
    'missing_requirements_file': (
        MINIMAL + "libraries:\n  requirements: requirements.txt\n",
        8, "libraries.requirements", ("requirements.txt does not exist",)),
    'duplicate_environment_names': (
        MINIMAL + "environments:\n  - name: dev\n  - name: prod\n  - name: dev\n",
        10, "environments[2].name", ("listed twice",)),
    'environment_needs_a_name': (
        MINIMAL + "environments:\n  - config: {A: b}\n",
        8, "environments[0].name", ("missing",)),
    'environment_config_value_must_be_scalar': (
        MINIMAL + "environments:\n  - name: dev\n    config:\n      A: [1, 2]\n",
        10, "environments[0].config.A", ("expected a string, got a list",)),
    'environment_config_key_must_be_a_variable_name': (
        MINIMAL + "environments:\n  - name: dev\n    config:\n      log-level: x\n",
        10, "environments[0].config.log-level", ("not an environment variable name",)),
    'feature_must_be_boolean': (
        MINIMAL + "environments:\n  - name: dev\n    features:\n      new_checkout: maybe\n",
        10, "environments[0].features.new_checkout", ("expected true or false",)),
    'secret_names': (
        MINIMAL + "environments:\n  - name: prod\n    secrets: [DATABASE_URL, api-key]\n",
        9, "environments[0].secrets[1]", ("not a secret name",)),
    'bad_environment_name': (
        MINIMAL + "environments:\n  - name: Prod Env\n",
        8, "environments[0].name", ("not an environment name",)),
    'extends_replacing_lists_can_lose_nginx': (
        "name: site\nextends: static-nginx\nos:\n  packages: [curl]\n",
        4, "os.packages", ("needs nginx",)),
    'error_in_user_part_of_merged_recipe_names_user_file': (
        "name: hello\nextends: python-wsgi\nserver:\n  app: hello:app\n  port: 0\n",
        5, "server.port", ("not a TCP port",)),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_recipe_is_one_located_line(tmp_path, case):
    text, line, key, fragments = BAD[case]
    assert_error(write(tmp_path, text), line, key, *fragments)


# -- extends ----------------------------------------------------------------------

def test_stock_recipes_are_shipped():
    assert {"python-wsgi", "python-asgi", "static-nginx", "java-jar"} <= set(stock_recipe_names())


def test_extends_merges_stock_recipe(tmp_path):
    path = write(tmp_path, """\
        name: hello
        extends: python-wsgi
        os:
          packages: [curl]
        server:
          app: hello:app
          workers: 4
        """)
    recipe = load_recipe(path, context=NO_GIT)
    assert recipe.extends == "python-wsgi"
    assert recipe.stock_dir == stock_recipes_dir() / "python-wsgi"
    assert recipe.runtime.python == "3.11"                     # from the stock recipe
    assert recipe.server.kind == "gunicorn"                    # from the stock recipe
    assert recipe.server.workers == 4                          # the user's value wins
    assert recipe.server.app == "hello:app"
    assert any(p.startswith("gunicorn==") for p in recipe.server.packages)


def test_extends_lists_replace(tmp_path):
    path = write(tmp_path, "name: site\nextends: static-nginx\nos:\n  packages: [nginx, curl]\n")
    recipe = load_recipe(path, context=NO_GIT)
    assert recipe.os.packages == ("nginx", "curl")
    assert recipe.app.exclude == ("imagebuild.yaml", "imagebuild.lock")   # kept from the stock recipe



def test_unknown_stock_recipe_lists_the_stock(tmp_path):
    path = write(tmp_path, "name: hello\nextends: python-wgsi\n")
    text = assert_error(path, 2, "extends", "unknown stock recipe", "did you mean 'python-wsgi'?")
    for name in ("python-asgi", "static-nginx", "java-jar"):
        assert name in text



def test_error_in_stock_part_names_stock_file(tmp_path, monkeypatch):
    stock = tmp_path / "stock"
    write(stock / "broken", "runtime:\n  python: '3.11'\nserver:\n  kind: gunicorn\n  workerz: 2\n")
    monkeypatch.setenv("IMAGEBUILD_RECIPES", str(stock))
    app = write(tmp_path / "app", "name: hello\nextends: broken\nserver:\n  app: a:b\n")
    exc = error_of(app)
    assert exc.one_line().startswith(f"{stock / 'broken' / 'imagebuild.yaml'}:5: server.workerz")


def test_recipe_error_is_a_user_error_with_exit_code_2(tmp_path):
    exc = error_of(write(tmp_path, MINIMAL.replace("server:", "sever:")))
    assert isinstance(exc, UserError) and exc.exit_code == 2


def test_examples_load():
    names = ["flask-hello", "fastapi-hello", "static-site", "java-hello"]
    for name in names:
        recipe = load_recipe(REPO_ROOT / "examples" / name, context=NO_GIT)
        assert recipe.name == name
        assert recipe.extends is not None and recipe.stock_dir is not None
        assert recipe.health.path == "/health"
        assert recipe.environment_names() == ["dev", "test", "prod"]


def test_cli_reports_recipe_error_in_one_line(tmp_path):
    """The error reaches a user as one `error:` line and exit code 2, through init --extends."""
    result = imagebuild("init", tmp_path, "--extends", "python-wgsi")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        result.stderr.strip()] and result.stderr.startswith("error: unknown stock recipe 'python-wgsi'")


def test_recipe_that_is_not_utf8(tmp_path):
    path = tmp_path / "imagebuild.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    text = error_of(path).one_line()
    assert text.startswith(f"{path}: cannot read the recipe")


def test_yaml_anchors_and_merge_keys(tmp_path):
    path = write(tmp_path, MINIMAL + textwrap.dedent("""\
        environments:
          - name: dev
            config: &common {LOG_LEVEL: debug, REGION: eu}
          - name: prod
            config:
              <<: *common
              LOG_LEVEL: info
        """))
    recipe = load_recipe(path, context=NO_GIT)
    assert recipe.environment("dev").config == {"LOG_LEVEL": "debug", "REGION": "eu"}
    assert recipe.environment("prod").config == {"LOG_LEVEL": "info", "REGION": "eu"}


def test_bad_merge_key(tmp_path):
    path = write(tmp_path, MINIMAL + "environments:\n  - name: dev\n    config:\n      <<: 3\n")
    text = error_of(path).one_line()
    assert text.startswith(f"{path}:10: YAML merge key")
