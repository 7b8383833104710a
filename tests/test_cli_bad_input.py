"""Bad command lines through the real CLI: each is one `error:` line and exit 2 (or the documented
code), never exit 1 (a bug) and never a traceback, whatever the input: bad references, options,
paths, empty strings, control characters, very long values, unknown environments."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO_ROOT, imagebuild

RECIPE = REPO_ROOT / "examples" / "flask-hello"
LONG = "a" * 100_000
# Longer than NAME_MAX (255 bytes) for one path component on Linux.
LONG_COMPONENT = "n" * 300
# No line of an error may grow with the input: a 100 kB value is shown shortened.
MAX_LINE = 600


def one_line_exit(done, exit_code: int = 2) -> str:
    assert done.returncode == exit_code, (done.returncode, done.stdout[:500], done.stderr[:2000])
    assert "Traceback" not in done.stderr, done.stderr[:2000]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[:2000]
    assert len(lines[0]) <= MAX_LINE, lines[0][:200]
    return lines[0]


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict:
    """A store holding one image (t:1), a directory to make images from, and a plain file."""
    root = tmp_path_factory.mktemp("bad-input")
    tree = root / "tree"
    tree.mkdir()
    (tree / "hello.txt").write_text("hello\n")
    store = root / "store"
    made = imagebuild("image", "from-dir", tree, "t:1", "--store", store)
    assert made.returncode == 0, made.stderr
    return {"root": root, "tree": tree, "store": store, "file": tree / "hello.txt"}


# -- the cases found one by one --------------------------------------------------------

@pytest.mark.parametrize("reference, fragment", [
    ("127.0.0.1:abc/x", "port"),
    ("127.0.0.1:99999/x", "port"),
    ("127.0.0.1:0/x", "port"),
    ("[::1/x", "registry"),
    ("exa mple.com/x", "registry"),
    (LONG, "100000 characters"),
    ("127.0.0.1:5000/" + "a" * 300, "at most 255"),
    ("x:" + LONG, "characters"),
])
def test_a_bad_reference_to_pull_is_a_user_error(places, reference, fragment):
    line = one_line_exit(imagebuild("pull", reference, "--store", places["store"]))
    assert fragment in line, line


def test_a_too_long_export_path_is_a_user_error(places):
    target = places["root"] / LONG_COMPONENT
    line = one_line_exit(imagebuild("export", "t:1", f"oci:{target}", "--store", places["store"]))
    assert "too long" in line
    assert sorted(p.name for p in places["root"].iterdir()) == ["store", "tree"]


def test_an_unclosed_ipv6_deploy_host_is_a_user_error(places):
    line = one_line_exit(imagebuild("deploy", "prod", "--recipe", RECIPE, "--host", "ssh://u@[::1",
                                    "--store", places["store"]))
    assert "ssh://u@[::1" in line


@pytest.mark.parametrize("workdir", ["relative", "", "app/../x", "/a\x01b"])
def test_a_relative_or_garbled_workdir_is_refused(places, workdir):
    line = one_line_exit(imagebuild("image", "from-dir", places["tree"], "w:1", "--workdir", workdir,
                                    "--store", places["store"]))
    assert "workdir" in line
    assert imagebuild("export", "w:1", f"oci:{places['root'] / 'w'}", "--store", places["store"]).returncode == 2


def test_an_absolute_workdir_is_kept(places):
    done = imagebuild("image", "from-dir", places["tree"], "w:2", "--workdir", "/srv/app", "--store", places["store"])
    assert done.returncode == 0, done.stderr


# -- the sweep ---------------------------------------------------------------------------

def sweep_cases():
    """(id, argv with {tree} {store} {file} {root} placeholders, expected exit code)."""
    R = str(RECIPE)
    cases = [
        # references
        ("pull-empty", ["pull", ""], 2),
        ("pull-no-registry", ["pull", "hello:1"], 2),
        ("pull-scheme", ["pull", "https://127.0.0.1:5000/x"], 2),
        ("pull-upper", ["pull", "127.0.0.1:5000/Hello"], 2),
        ("pull-control", ["pull", "127.0.0.1:5000/a\x01b"], 2),
        ("pull-bad-digest", ["pull", "127.0.0.1:5000/x@sha256:zz"], 2),
        ("pull-long-tag", ["pull", "127.0.0.1:5000/x:" + "t" * 129], 2),
        ("pull-port-letters", ["pull", "127.0.0.1:abc/x"], 2),
        ("pull-port-range", ["pull", "127.0.0.1:65536/x"], 2),
        ("pull-very-long", ["pull", "127.0.0.1:5000/" + LONG], 2),
        ("push-to-bad-port", ["push", "t:1", "--to", "127.0.0.1:abc/x", "--store", "{store}"], 2),
        ("push-to-no-registry", ["push", "t:1", "--to", "x/y:1", "--store", "{store}"], 2),
        ("push-empty-image", ["push", "", "--to", "127.0.0.1:5000/x", "--store", "{store}"], 2),
        ("push-bad-parallel", ["push", "t:1", "--parallel", "-1"], 2),
        # export destinations and images
        ("export-long-name", ["export", "t:1", "oci:{root}/" + LONG_COMPONENT, "--store", "{store}"], 2),
        ("export-long-archive", ["export", "t:1", f"docker-archive:{{root}}/{LONG_COMPONENT}/x.tar",
                                 "--store", "{store}"], 2),
        ("export-empty-path", ["export", "t:1", "docker-archive:", "--store", "{store}"], 2),
        ("export-unknown-kind", ["export", "t:1", "zip:{root}/x", "--store", "{store}"], 2),
        ("export-under-a-file", ["export", "t:1", "oci:{file}/sub", "--store", "{store}"], 2),
        ("export-empty-image", ["export", "", "oci:{root}/e", "--store", "{store}"], 2),
        ("export-newline-image", ["export", "t:1\n", "oci:{root}/e", "--store", "{store}"], 2),
        ("export-very-long-image", ["export", LONG, "oci:{root}/e", "--store", "{store}"], 2),
        # image from-dir
        ("from-dir-long-dir", ["image", "from-dir", "{root}/" + LONG_COMPONENT, "t:2", "--store", "{store}"], 2),
        ("from-dir-missing", ["image", "from-dir", "{root}/missing", "t:2", "--store", "{store}"], 2),
        ("from-dir-bad-name", ["image", "from-dir", "{tree}", "Bad Name", "--store", "{store}"], 2),
        ("from-dir-empty-name", ["image", "from-dir", "{tree}", "", "--store", "{store}"], 2),
        ("from-dir-env", ["image", "from-dir", "{tree}", "t:2", "--env", "NOEQUALS", "--store", "{store}"], 2),
        ("from-dir-prefix", ["image", "from-dir", "{tree}", "t:2", "--prefix", "../up", "--store", "{store}"], 2),
        ("from-dir-cmd", ["image", "from-dir", "{tree}", "t:2", "--cmd", "'open", "--store", "{store}"], 2),
        ("from-dir-workdir", ["image", "from-dir", "{tree}", "t:2", "--workdir", "rel", "--store", "{store}"], 2),
        # stores
        ("images-long-store", ["images", "--store", "{root}/" + LONG_COMPONENT], 2),
        ("gc-store-is-a-file", ["gc", "--store", "{file}"], 2),
        ("rm-empty", ["rm", "", "--store", "{store}"], 2),
        ("rm-unknown", ["rm", "nothing:here", "--store", "{store}"], 2),
        # recipes and environments
        ("dockerfile-long-recipe", ["dockerfile", "--recipe", f"{R}/{LONG_COMPONENT}"], 2),
        ("bake-missing", ["bake", "{root}/missing"], 2),
        ("bake-format", ["bake", R, "--format", "vhd"], 2),
        ("promote-unknown-env", ["promote", "v1", "--to", "staging", "--recipe", R, "--store", "{store}"], 2),
        ("history-empty-env", ["history", "", "--recipe", R, "--store", "{store}"], 2),
        ("history-control-env", ["history", "pr\x1bod", "--recipe", R, "--store", "{store}"], 2),
        ("status-missing-recipe", ["status", "--recipe", "{root}/missing"], 2),
        ("deploy-unknown-env", ["deploy", "staging", "--recipe", R, "--store", "{store}"], 2),
        ("deploy-ipv6-open", ["deploy", "prod", "--recipe", R, "--host", "ssh://u@[::1", "--store", "{store}"], 2),
        ("deploy-port-range", ["deploy", "prod", "--recipe", R, "--host", "ssh://u@h:99999", "--store", "{store}"], 2),
        ("deploy-empty-host", ["deploy", "prod", "--recipe", R, "--host", "", "--store", "{store}"], 2),
        ("deploy-long-host", ["deploy", "prod", "--recipe", R, "--host", "ssh://u@" + LONG, "--store", "{store}"], 2),
        ("run-unknown-image", ["run", "nothing:here", "--store", "{store}"], 2),
        ("disk-boot-forward", ["disk", "boot", "{file}", "--forward", "abc"], 2),
        ("login-bad-port", ["login", "127.0.0.1:abc", "-u", "x", "--password-stdin"], 2),
        ("login-open-ipv6", ["login", "[::1", "-u", "x", "--password-stdin"], 2),
        ("login-empty-host", ["login", "", "-u", "x", "--password-stdin"], 2),
        ("unknown-command", ["bakee"], 2),
        ("unknown-option", ["images", "--color"], 2),
    ]
    return [pytest.param(argv, code, id=name) for name, argv, code in cases]


@pytest.mark.parametrize("argv, exit_code", sweep_cases())
def test_a_bad_command_line_is_one_error_line(places, argv, exit_code):
    args = [arg.format(**places) if "{" in arg and LONG not in arg else arg for arg in argv]
    # login reads a password from stdin: give it one so the host is what gets judged.
    one_line_exit(imagebuild(*args, input="secret\n", env={"IMAGEBUILD_STORE": str(places["store"]),
                                                         "DOCKER_CONFIG": str(places["root"] / "docker")}),
                  exit_code)
