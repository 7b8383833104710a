"""A recipe is input to refuse, not to trust: paths stay inside its repository, templates and
YAML are bounded in time, size and depth, and every value is checked when the recipe loads.
Each refusal is one RecipeError line (exit code 2) naming the file and, where there is one, the line."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from imagebuild.build.dockerfile_export import render_dockerfile
from imagebuild.errors import RecipeError
from imagebuild.sources.git import GitFacts
from imagebuild.build.layers import dockerfile_base
from imagebuild.recipe import loader
from imagebuild.recipe.loader import load_recipe

from conftest import imagebuild
from test_recipe_loader import MINIMAL, NO_GIT, write

SECRET = "TOPSECRET-c0ntent-from-outside"


def refusal(path: Path, cpu_seconds: float = 10.0) -> RecipeError:
    # CPU time, not the clock: a busy machine must not fail a guard against super-linear work.
    started = time.process_time()
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, context=NO_GIT)
    assert time.process_time() - started < cpu_seconds
    exc = caught.value
    text = exc.one_line()
    assert "\n" not in text and exc.exit_code == 2
    assert text.startswith(f"{path}:") or text.startswith(str(exc.file or "")), text
    assert SECRET not in text and "root:" not in text, text
    return exc


def refused_at(path: Path, line: int, *fragments: str) -> str:
    exc = refusal(path)
    text = exc.one_line()
    assert text.startswith(f"{path}:{line}: "), text
    for fragment in fragments:
        assert fragment in text, text
    return text


# -- paths stay inside the recipe's repository ---------------------------------

@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file next to the app's directory, outside it: an unpinned line that must never be shown,
    and a pinned one that must never be accepted."""
    (tmp_path / "outside_req.txt").write_text(f"{SECRET} >= 1\n")
    (tmp_path / "pinned_outside.txt").write_text("flask==3.1.3\n")
    (tmp_path / "outside_dir").mkdir()
    (tmp_path / "outside_dir" / "Dockerfile").write_text("FROM scratch\n")
    return tmp_path


@pytest.mark.parametrize("value", ["../../../../../../../../etc/passwd", "../outside_req.txt",
                                   "../pinned_outside.txt", "/proc/self/environ",
                                   "../../../../../../../../proc/self/environ", "link.txt", "sub/../../outside_req.txt"])
def test_requirements_outside_the_app_are_refused_without_their_content(outside, value):
    app = outside / "app"
    app.mkdir()
    (app / "link.txt").symlink_to(outside / "outside_req.txt")
    path = write(app, MINIMAL + f"libraries:\n  requirements: {value}\n")
    refused_at(path, 8, "libraries.requirements")


def test_requirements_symlink_to_proc_is_refused(tmp_path):
    (tmp_path / "env.txt").symlink_to("/proc/self/environ")
    path = write(tmp_path, MINIMAL + "libraries:\n  requirements: env.txt\n")
    refused_at(path, 8, "libraries.requirements", "outside")


def test_requirements_elsewhere_in_the_same_repository_are_accepted(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "requirements.txt").write_text("flask==3.1.3\n")
    path = write(tmp_path / "app", MINIMAL + "libraries:\n  requirements: ../requirements.txt\n")
    assert load_recipe(path, context=NO_GIT).libraries.requirements == "../requirements.txt"


@pytest.mark.parametrize("line", ["-r /etc/passwd", "--requirement=../x.txt", "-c c.txt", "-e .",
                                  "--find-links /tmp", "x @ file:///etc/passwd"])
def test_requirements_options_that_read_other_files_are_refused(tmp_path, line):
    (tmp_path / "requirements.txt").write_text(f"flask==3.1.3\n{line}\n")
    path = write(tmp_path, MINIMAL + "libraries:\n  requirements: requirements.txt\n")
    assert refusal(path).one_line().startswith(f"{tmp_path / 'requirements.txt'}:2: ")


def test_requirements_index_options_and_hashes_are_accepted(tmp_path):
    (tmp_path / "requirements.txt").write_text(
        "--index-url https://pypi.org/simple\nflask==3.1.3 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    load_recipe(write(tmp_path, MINIMAL + "libraries:\n  requirements: requirements.txt\n"), context=NO_GIT)


def test_an_unpinned_requirement_inside_the_app_is_still_quoted(tmp_path):
    (tmp_path / "requirements.txt").write_text("flask>=3\n")
    path = write(tmp_path, MINIMAL + "libraries:\n  requirements: requirements.txt\n")
    assert "'flask'" in refusal(path).one_line()


@pytest.mark.parametrize("section, key, value", [
    ("app", "path", "link"), ("app", "path", "../outside_dir"),
    ("os", "dockerfile", "../outside_dir/Dockerfile"), ("os", "dockerfile", "/etc/passwd"),
    ("os", "dockerfile", "link/Dockerfile")])
def test_directories_and_dockerfiles_outside_the_app_are_refused(outside, section, key, value):
    app = outside / "app"
    app.mkdir()
    (app / "link").symlink_to(outside / "outside_dir")
    path = write(app, MINIMAL + f"{section}:\n  {key}: {value}\n")
    refused_at(path, 8, f"{section}.{key}")


@pytest.mark.parametrize("value", ["--chown=0", "./--from=x", "sub/-x"])
def test_a_path_part_that_reads_as_an_option_is_refused(tmp_path, value):
    (tmp_path / "sub").mkdir()
    (tmp_path / value).write_text("flask==3.1.3\n")
    path = write(tmp_path, MINIMAL + f"libraries:\n  requirements: {value}\n")
    refused_at(path, 8, "libraries.requirements", "starts with -")


def test_the_printed_dockerfile_copies_recipe_paths_in_json_form(tmp_path):
    (tmp_path / "my app").mkdir()
    (tmp_path / "my reqs.txt").write_text("flask==3.1.3\n")
    path = write(tmp_path, MINIMAL + "libraries:\n  requirements: my reqs.txt\napp:\n  path: my app\n  dest: /srv/my app\n")
    text = render_dockerfile(load_recipe(path, context=NO_GIT), facts=GitFacts())
    assert 'COPY ["my reqs.txt", "/imagebuild/requirements.txt"]' in text
    assert 'COPY ["my app/", "/srv/my app/"]' in text


@pytest.mark.parametrize("value", ["../python-wsgi", "/etc", "python-wsgi/../python-asgi"])
def test_extends_names_a_stock_recipe_not_a_path(tmp_path, value):
    path = write(tmp_path, f"name: hello\nextends: {value}\nserver:\n  app: a:b\n")
    refused_at(path, 2, "extends")


# -- templates are bounded -------------------------------------------------------

TEMPLATES = {
    "include_itself": "{% include 'imagebuild.yaml' %}",
    "import_itself": "{% import 'imagebuild.yaml' as x %}",
    "from_import": "{% from 'imagebuild.yaml' import y %}",
    "extends_itself": "{% extends 'imagebuild.yaml' %}",
    "include_a_file": "{% include '/etc/passwd' %}",
    "division_by_zero": "{{ 1/0 }}",
    "pop_empty": "{{ [].pop() }}",
    "truncate_negative": "{{ 'abc'|truncate(-1) }}",
    "huge_range": "{{ range(10**9)|list|length }}",
    "huge_repeat": "{{ 'a'*10**10 }}",
    "huge_percent": "{{ '%*d' % (10**9, 1) }}",
    "huge_indent": "{{ 'a\\nb'|indent(10**9) }}",
    "huge_power": "{{ 10**(10**10) }}",
    "huge_format": "{{ '{:>1000000000}'.format(1) }}",
    "nested_loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "doubling": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "captured_output": "{% set s = 'x' * 1000000 %}{% set t %}{% for i in range(2000) %}{{ s }}{% endfor %}"
                       "{% endset %}{{ t|length }}",
    "macro_output": "{% set s = 'x' * 1000000 %}{% macro m() %}{% for i in range(2000) %}{{ s }}{% endfor %}"
                    "{% endmacro %}{{ m()|length }}",
    "recursive_macro": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "lipsum": "{{ lipsum(10**6) }}",
    "int_from_text": "{{ int('x') }}",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(TEMPLATES))
def test_template_mistakes_and_bombs_are_one_located_line(tmp_path, case):
    path = write(tmp_path, MINIMAL + "registry: x\n# " + TEMPLATES[case] + "\n")
    refused_at(path, 8, "template")


@pytest.mark.parametrize("text, line", [("FROM {{ base }}\n{% include 'base.Dockerfile' %}\n", 2),
                                        ("FROM {{ base }}\nRUN echo {{ 1/0 }}\n", 2),
                                        ("FROM {{ base }}\n{% for i in range(10**6) %}{% endfor %}\n", 2)])
def test_an_os_dockerfile_template_is_bounded_too(tmp_path, text, line):
    name = str(tmp_path / "base.Dockerfile")
    with pytest.raises(RecipeError) as caught:
        dockerfile_base.render(text, name, {"base": "debian", "os": {}, "runtime": {}})
    assert caught.value.one_line().startswith(f"{name}:{line}: template error: ")


def test_template_output_is_bounded(tmp_path):
    path = write(tmp_path, MINIMAL + "# {% for i in range(5000) %}{{ 'x' * 1000 }}{% endfor %}\n")
    refused_at(path, 7, "template")


def test_ordinary_template_use_still_works(tmp_path, monkeypatch):
    monkeypatch.setenv("TAG_PREFIX", "v")
    path = write(tmp_path, MINIMAL + "environments:\n"
                 "{% for name in ['dev', 'test', 'prod'] %}"
                 "  - name: {{ name }}\n    config: {N: '{{ '%03d' % loop.index }}', P: '{{ env.TAG_PREFIX ~ name|upper }}'}\n"
                 "{% endfor %}")
    recipe = load_recipe(path, context=NO_GIT)
    assert recipe.environment("prod").config == {"N": "003", "P": "vPROD"}


# -- YAML is bounded ------------------------------------------------------------

def alias_bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


YAML = {
    "alias_bomb": (MINIMAL + "x:\n" + "".join("  " + line + "\n" for line in alias_bomb(9).splitlines()), None),
    "recursive_alias": (MINIMAL + "environments: &e\n  - name: dev\n    config: *e\n", 9),
    "recursive_mapping": (MINIMAL + "deploy: &d {port: *d}\n", 7),
    "deep_flow": (MINIMAL + "os: " + "[" * 2000 + "]" * 2000 + "\n", 7),
    "deep_block": (MINIMAL + "".join(" " * level + "k:\n" for level in range(1500)), None),
    "nul": (MINIMAL + "registry: a\x00b\n", 7),
    "escape_char": (MINIMAL + "registry: a\x1bb\n", 7),
    "escaped_nul": (MINIMAL + 'registry: "a\\0b"\n', 7),
    "lone_surrogate_config": (MINIMAL + 'environments:\n  - name: dev\n    config: {A: "\\ud800"}\n', 9),
    "bad_int_tag": (MINIMAL.replace("gunicorn\n", "gunicorn\n  port: !!int abc\n"), 6),
    "bad_bool_tag": (MINIMAL + "environments:\n  - name: dev\n    features: {a: !!bool perhaps}\n", 9),
    "huge_int": (MINIMAL.replace("gunicorn\n", "gunicorn\n  port: " + "9" * 5000 + "\n"), 6),
    "too_big": (MINIMAL + "# " + "x" * (1024 * 1024) + "\n", None),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(YAML))
def test_yaml_bombs_depth_and_bad_characters_are_one_line(tmp_path, case):
    text, line = YAML[case]
    path = write(tmp_path, text)
    exc = refusal(path)
    if line is not None:
        assert exc.one_line().startswith(f"{path}:{line}: "), exc.one_line()


def test_raw_lone_surrogate_from_a_template_is_refused(tmp_path):
    path = write(tmp_path, MINIMAL + "registry: \"{{ '\\ud800' }}\"\n")
    refusal(path)


def test_a_few_aliases_still_work(tmp_path):
    path = write(tmp_path, MINIMAL + "environments:\n  - name: dev\n    config: &c {A: '1'}\n"
                 "  - name: prod\n    config: *c\n")
    assert load_recipe(path, context=NO_GIT).environment("prod").config == {"A": "1"}


# -- line numbers in linear time ----------------------------------------------------

def long_recipe(lines: int) -> str:
    config = "".join(f"      KEY_{n}: '{{{{ {n} }}}}'\n" for n in range(lines))
    return MINIMAL + "{% if true %}\n{% endif %}\nenvironments:\n  - name: dev\n    config:\n" + config


def test_line_map_is_linear():
    """Many equal lines made difflib's matching quadratic: 20,000 took minutes."""
    packages = "".join(f"    - p{n % 3}\n" for n in range(20000))
    source = "{% if true %}\n{% endif %}\nname: x\nos:\n  packages:\n" + packages
    rendered = "\nname: x\nos:\n  packages:\n" + packages
    started = time.process_time()
    line_of = loader._line_map(source, rendered)
    lines = [line_of(line) for line in range(len(rendered.splitlines()))]
    assert time.process_time() - started < 2
    assert lines[1:5] == [3, 4, 5, 6] and lines[-1] == len(source.splitlines())


def test_line_map_is_made_only_for_an_error(tmp_path, monkeypatch):
    def refuse(*_):
        raise AssertionError("the line map was made for a recipe without errors")

    monkeypatch.setattr(loader, "_line_map", refuse)
    load_recipe(write(tmp_path, long_recipe(50)), context=NO_GIT)


@pytest.mark.timeout(120)
def test_an_error_in_a_long_recipe_names_its_line(tmp_path):
    text = long_recipe(20000) + "  - name: Bad Name\n"
    refused_at(write(tmp_path, text), len(text.splitlines()), "not an environment name")


# -- values are checked when the recipe loads -------------------------------------

VALUES = {
    "dest_newline": ("app:\n  dest: \"/app\\nRUN touch /x\"\n", "app.dest"),
    "dest_double_slash": ("app:\n  dest: //\n", "app.dest"),
    "dest_dotdot": ("app:\n  dest: /../..\n", "app.dest"),
    "dest_not_normal": ("app:\n  dest: /srv/../app\n", "app.dest"),
    "deploy_port_zero": ("deploy:\n  port: 0\n", "deploy.port"),
    "deploy_port_big": ("deploy:\n  port: 70000\n", "deploy.port"),
    "deploy_drain": ("deploy:\n  drain: -5\n", "deploy.drain"),
    "deploy_health_timeout": ("deploy:\n  health_timeout: 0\n", "deploy.health_timeout"),
    "deploy_listen": ("deploy:\n  listen: \"0.0.0.0; touch /tmp/x\"\n", "deploy.listen"),
    "deploy_listen_name": ("deploy:\n  listen: localhost\n", "deploy.listen"),
    "deploy_state_dir": ("deploy:\n  state_dir: var/lib/x\n", "deploy.state_dir"),
    "deploy_state_dir_dotdot": ("deploy:\n  state_dir: /var/../etc\n", "deploy.state_dir"),
    "deploy_env_file": ("deploy:\n  env_file: env\n", "deploy.env_file"),
    "deploy_migrate_option": ("deploy:\n  migrate: []\n  env_file: \"/a b\"\n", "deploy.env_file"),
    "kernel_option": ("disk:\n  kernel: \"--customize-hook=touch /x\"\n", "disk.kernel"),
    "kernel_not_a_kernel": ("disk:\n  kernel: bash\n", "disk.kernel"),
    "kernel_bad_version": ("disk:\n  kernel: \"linux-image-amd64=1 2\"\n", "disk.kernel"),
    "package_option": ("os:\n  packages: [\"-oAPT::x=1\"]\n", "os.packages[0]"),
    "package_bad_version": ("os:\n  packages: [\"curl=7.88.1-10+deb12u5 x\"]\n", "os.packages[0]"),
    "architecture": ("os:\n  architecture: \"amd64,--foo\"\n", "os.architecture"),
    "mirror": ("os:\n  mirror: \"--foo\"\n", "os.mirror"),
    "mirror_space": ("os:\n  mirror: \"http://x/ bookworm main\"\n", "os.mirror"),
    "suite": ("os:\n  debian: \"-x\"\n", "os.debian"),
    "detect_file": ("detect:\n  variable: APP_ENV\nenvironments:\n  - name: dev\n    detect: {file: \"/a/../b\"}\n",
                    "environments[0].detect.file"),
    "health_retries": ("health:\n  retries: 0\n", "health.retries"),
    "health_interval_overflow": ("health:\n  interval: 99999999999\n", "health.interval"),
    "deploy_drain_huge": ("deploy:\n  drain: 99999999999\n", "deploy.drain"),
    "exclude_newline": ("app:\n  exclude: [\"a\\nb\"]\n", "app.exclude[0]"),
    "command_control": ("registry: \"a\\tb\"\n", "registry"),
    # `$` in a pattern also matches before a final newline
    "environment_newline": ("environments:\n  - name: \"dev\\n\"\n", "environments[0].name"),
    "variable_newline": ("detect:\n  variable: \"APP_ENV\\n\"\n", "detect.variable"),
    "user_newline": ("app:\n  user: \"10001\\n\"\n", "app.user"),
    "config_key_newline": ("environments:\n  - name: dev\n    config: {\"A\\n\": b}\n",
                           "environments[0].config.A\n"),
    "package_second_line": ("libraries:\n  packages: [\"flask==3.1.3 ; x\\nevil\"]\n", "libraries.packages[0]"),
}


@pytest.mark.parametrize("case", list(VALUES))
def test_bad_values_are_refused_when_the_recipe_loads(tmp_path, case):
    text, key = VALUES[case]
    exc = refusal(write(tmp_path, MINIMAL + text))
    assert exc.key == key, exc.one_line()


def test_an_error_quoting_a_long_value_stays_short(tmp_path):
    text = refusal(write(tmp_path, MINIMAL + "health:\n  retries: '" + "x" * 100000 + "'\n")).one_line()
    assert len(text) < 1000 and "health.retries" in text


def test_server_host_is_an_ip_address(tmp_path):
    path = write(tmp_path, MINIMAL + "  options: {host: \"0.0.0.0 --x\"}\n")
    assert refusal(path).key == "server.options.host"


def test_good_values_still_load(tmp_path):
    path = write(tmp_path, MINIMAL + "app:\n  dest: /srv/app\ndeploy:\n  listen: \"::\"\n  port: 443\n"
                 "  state_dir: /var/lib/x\n  env_file: /etc/app.env\ndisk:\n  kernel: linux-image-amd64=6.1.0-1\n"
                 "os:\n  packages: [curl, \"libc6=2.36-9+deb12u4\", \"g++\"]\n  mirror: http://deb.debian.org/debian\n")
    recipe = load_recipe(path, context=NO_GIT)
    assert recipe.deploy.listen == "::" and recipe.app.dest == "/srv/app"


# -- through the real CLI --------------------------------------------------------

CLI_CASES = {
    "requirements_outside": MINIMAL + "libraries:\n  requirements: ../../../../../../../../etc/passwd\n",
    "include_itself": MINIMAL + "# {% include 'imagebuild.yaml' %}\n",
    "division_by_zero": MINIMAL + "registry: '{{ 1/0 }}'\n",
    "alias_bomb": MINIMAL + "x:\n" + "".join("  " + line + "\n" for line in alias_bomb(9).splitlines()),
    "deep_nesting": MINIMAL + "os: " + "[" * 2000 + "]" * 2000 + "\n",
    "nul": MINIMAL + "registry: a\x00b\n",
    "bad_int_tag": MINIMAL + "health:\n  retries: !!int abc\n",
    "dest_newline": MINIMAL + "app:\n  dest: \"/app\\nRUN touch /x\"\n",
    "listen_command": MINIMAL + "deploy:\n  listen: \"0.0.0.0; touch /tmp/x\"\n",
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_refuses_a_bad_recipe_with_one_line_and_exit_2(tmp_path, case):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    path = write(tmp_path / "app", CLI_CASES[case])
    result = imagebuild("dockerfile", "--recipe", path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}:"), result.stderr
    assert "root:" not in result.stderr and result.stdout == ""
