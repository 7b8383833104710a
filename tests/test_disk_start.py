"""The start script reads the image config as an engine does: program on PATH, user and group names
from the image's own files, Env, WorkingDir; what it cannot start is refused before anything is built."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from imagebuild.build.disk.initramfs import STAGE
from imagebuild.release.disk.qemu import check_app_exit
from imagebuild.build.disk.rootfs import MergedTree
from imagebuild.build.disk.start import launch_of, start_script
from imagebuild.errors import BuildError, UserError

PASSWD = b"root:x:0:0:root:/root:/bin/sh\napp:x:10001:10002:app:/home/app:/bin/sh\n"
GROUP = b"root:x:0:\nweb:x:2000:\napp:x:10002:\n"


@pytest.fixture
def tree(tmp_path: Path):
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        for name, data in (("etc/passwd", PASSWD), ("etc/group", GROUP), ("usr/bin/python3", b"\x7fELF")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with MergedTree([layer]) as merged:
        yield merged


def config(**settings) -> dict:
    return {"config": {"Env": ["PATH=/usr/local/bin:/usr/bin", "PORT=8000"], **settings}}


def test_names_are_looked_up_in_the_image_and_the_program_on_its_path(tree):
    launch = launch_of(config(Entrypoint=["python3"], Cmd=["-m", "http.server"], User="app:web",
                              WorkingDir="/srv"), tree)
    assert launch.program == "/usr/bin/python3"
    assert launch.argv == ("python3", "-m", "http.server")
    assert (launch.uid, launch.gid, launch.workdir) == (10001, 2000, "/srv")
    assert launch.env == ("PATH=/usr/local/bin:/usr/bin", "PORT=8000", "HOME=/home/app")


def test_numeric_users_need_no_entry_and_an_empty_user_is_root(tree):
    assert (launch_of(config(Cmd=["/usr/bin/python3"], User="4242:4343"), tree).uid, ) == (4242, )
    launch = launch_of(config(Cmd=["/usr/bin/python3"]), tree)
    assert (launch.uid, launch.gid, launch.workdir) == (0, 0, "/")
    assert "HOME=/root" in launch.env


@pytest.mark.parametrize("settings, words", [
    ({"Cmd": ["python3"], "User": "nobody"}, "nobody"),
    ({"Cmd": ["python3"], "User": "app:nogroup"}, "nogroup"),
    ({"Cmd": ["gunicorn"]}, "gunicorn"),
    ({}, "Entrypoint"),
])
def test_what_cannot_start_is_refused(tree, settings, words):
    with pytest.raises(UserError) as refused:
        launch_of(config(**settings), tree)
    assert words in refused.value.one_line()


def test_the_start_script_is_valid_shell_and_hands_every_argument_over_unchanged(tree):
    args = ["-c", "print(\"it's $HOME; `x`\")", "two words", "*"]
    launch = launch_of(config(Entrypoint=["python3"], Cmd=args), tree)
    script = start_script(launch, "web")
    assert subprocess.run(["busybox", "sh", "-n"], input=script, text=True).returncode == 0
    line = next(line for line in script.splitlines() if line.strip().startswith("-a "))
    words = line.split(" -- ", 1)[1].removesuffix(" > $output 2>&1 &")
    # in / a glob would expand, had the script left it unquoted
    echoed = subprocess.run(["busybox", "sh", "-c", f'printf "%s\\n" {words}'], capture_output=True, text=True,
                            cwd="/")
    assert echoed.stdout.splitlines() == args


def app_environment(launch, stage: Path) -> dict[str, str]:
    """Run what the start script does from reading the environment's name to starting the app, with the
    stage in a scratch folder and `env` in place of the app: the variables the app would get."""
    stage.mkdir()
    (stage / "environment").write_text("test")
    (stage / "vars").write_text("SECRET=s3\n")
    lines = start_script(launch, "web").replace(STAGE, str(stage)).splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("environment="))
    end = next(n for n, line in enumerate(lines) if line.startswith("cd "))
    app = next(line for line in lines if "env -i" in line).split(" $b start-stop-daemon")[0]
    part = "\n".join(["b=busybox", *lines[start:end], f"{app} $b env"])
    shown = subprocess.run(["busybox", "sh", "-c", part], capture_output=True, text=True, check=True).stdout
    return dict(line.partition("=")[::2] for line in shown.splitlines() if "=" in line)


def test_the_environment_goes_in_the_images_own_variable_beside_its_digest(tree, tmp_path):
    digest = "sha256:" + "ab" * 32
    settings = config(Cmd=["python3"])
    settings["config"]["Labels"] = {"dev.imagebuild.env-variable": "APP_STAGE"}
    env = app_environment(launch_of(settings, tree, digest), tmp_path / "stage")
    assert env["APP_STAGE"] == "test"
    assert "IMAGEBUILD_ENV" not in env
    assert env["IMAGEBUILD_IMAGE_DIGEST"] == digest
    assert (env["SECRET"], env["PORT"]) == ("s3", "8000")


def test_without_the_label_the_launchers_default_variable_is_used(tree, tmp_path):
    env = app_environment(launch_of(config(Cmd=["python3"]), tree, "sha256:" + "cd" * 32), tmp_path / "stage")
    assert env["IMAGEBUILD_ENV"] == "test"
    assert env["IMAGEBUILD_IMAGE_DIGEST"] == "sha256:" + "cd" * 32


def test_the_images_run_directories_are_made_again_and_the_app_writes_to_a_fifo_of_its_own(tmp_path):
    layer = tmp_path / "run-layer.tar"
    with tarfile.open(layer, "w") as tar:
        for name, data in (("etc/passwd", PASSWD), ("usr/bin/python3", b"\x7fELF")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, mode, owner in (("run", 0o755, 0), ("run/imagebuild", 0o700, 10001), ("run/lock", 0o1777, 0)):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, mode, owner, owner
            tar.addfile(info)
    with MergedTree([layer]) as tree:
        launch = launch_of(config(Cmd=["python3"], User="app"), tree)
    assert launch.run_dirs == (("/run/imagebuild", 0o700, 10001, 10001), ("/run/lock", 0o1777, 0, 0))
    script = start_script(launch, "web")
    assert "$b mkdir -p /run/imagebuild && $b chown 10001:10001 /run/imagebuild && $b chmod 700 /run/imagebuild" \
        in script
    assert "$b chmod 1777 /run/lock" in script
    assert STAGE != "/run/imagebuild"                   # the stage is root's; /run/imagebuild is the app's
    # the app's stdout and stderr: a FIFO its own user owns (so /dev/stdout reopens), relayed by root
    assert "$b chown 10001:10002 $output" in script
    assert "$b cat $output &" in script
    assert "$b ln -sf /proc/self/fd/1 /dev/stdout" in script       # devtmpfs has no /dev/stdout
    assert "> $output 2>&1 &" in script


@pytest.mark.parametrize("console, status", [
    ("gunicorn stopped\nimagebuild: the app exited with status 0; powering off\n", None),
    ("imagebuild-launch: SECRET_KEY is missing\r\nimagebuild: the app exited with status 64; powering off\r\n"
     "[   11.98] reboot: Power down\r\n", 64),
    ("Kernel panic - not syncing: VFS\n", "stopped"),
])
def test_disk_boot_reads_the_apps_exit_status_off_the_console(console, status):
    if status is None:
        check_app_exit(console)
        return
    with pytest.raises(BuildError) as failed:
        check_app_exit(console)
    line = failed.value.one_line()
    if status == "stopped":
        assert failed.value.exit_code == 3 and "stopped before its app exited" in line and "Kernel panic" in line
    else:
        assert failed.value.exit_code == status
        assert line == ("the app exited with code 64 (last console lines: imagebuild-launch: SECRET_KEY is missing)")
