"""The image's start script: what a container engine does with an image config, as PID 1 of a VM.

Everything an engine reads from the config is decided when the disk is built and
written into the script: the program and its arguments (Entrypoint + Cmd, the
program found on the image's PATH), the environment (Env), the working directory
and the user (names looked up in the image's own /etc/passwd and /etc/group). At
boot the script only adds what belongs to the machine: the network, by DHCP on
every interface, the variables a config drive gives (its `vars` file), and the
environment name the initramfs read from the kernel command line or a config
drive, in the variable the image's launcher reads (its label
dev.imagebuild.env-variable, IMAGEBUILD_ENV unless the recipe renames it). The
image's manifest digest goes in IMAGEBUILD_IMAGE_DIGEST, as `imagebuild run`
gives it, so the launcher's start-up line names it. The ACPI power button sends the app SIGTERM (SIGKILL
ten seconds later, as `docker stop` does); when the app exits the machine powers off.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from imagebuild.build.disk.initramfs import STAGE
from imagebuild.build.disk.rootfs import MergedTree
from imagebuild.errors import UserError
from imagebuild.contract import DEFAULT_VARIABLE, DIGEST_VARIABLE, launcher_variable

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STOP_SECONDS = 10            # from the stop request to SIGKILL, as `docker stop` waits
EXIT_MARKER = "imagebuild: the app exited with status"     # the start script's last line: ... N; powering off


@dataclass(frozen=True)
class Launch:
    argv: tuple[str, ...]
    program: str                 # absolute path of argv[0] inside the image
    env: tuple[str, ...]
    workdir: str
    uid: int
    gid: int
    variable: str = DEFAULT_VARIABLE     # where the launcher looks for the environment's name
    run_dirs: tuple[tuple[str, int, int, int], ...] = ()     # (path, mode, uid, gid) the image has under /run


def _table(tree: MergedTree, path: str) -> list[list[str]]:
    text = (tree.read(path) or b"").decode(errors="replace")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _user(tree: MergedTree, spec: str) -> tuple[int, int, str]:
    """(uid, gid, home) for an image config's User, as an engine resolves it."""
    name, _, group = (spec or "0").partition(":")
    passwd = _table(tree, "etc/passwd")
    entry = next((row for row in passwd if len(row) >= 6 and (row[0] == name or row[2] == name)), None)
    if name.isdigit():
        uid = int(name)
    elif entry is not None:
        uid = int(entry[2])
    else:
        raise UserError(f"the image's user {name!r} is not in its /etc/passwd; the disk cannot start it")
    gid = int(entry[3]) if entry is not None else 0
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            row = next((row for row in _table(tree, "etc/group") if row and row[0] == group), None)
            if row is None or len(row) < 3:
                raise UserError(f"the image's group {group!r} is not in its /etc/group; the disk cannot start it")
            gid = int(row[2])
    home = entry[5] if entry is not None else "/"
    return uid, gid, home


def launch_of(config: dict, tree: MergedTree, digest: str = "") -> Launch:
    """How to start the image whose config is CONFIG (and manifest digest DIGEST) on the merged TREE."""
    settings = config.get("config") or {}
    argv = tuple((settings.get("Entrypoint") or []) + (settings.get("Cmd") or []))
    if not argv:
        raise UserError("the image has neither Entrypoint nor Cmd; a disk needs a program to start")
    env = list(settings.get("Env") or [])
    names = {item.partition("=")[0] for item in env}
    path = next((item[5:] for item in env if item.startswith("PATH=")), DEFAULT_PATH)
    workdir = settings.get("WorkingDir") or "/"
    uid, gid, home = _user(tree, settings.get("User") or "")
    if "PATH" not in names:
        env.insert(0, f"PATH={path}")
    if "HOME" not in names:
        env.append(f"HOME={home}")
    if digest:
        env.append(f"{DIGEST_VARIABLE}={digest}")
    program = argv[0]
    if "/" not in program:
        found = [f"{folder.rstrip('/')}/{program}" for folder in path.split(":") if folder]
        program = next((candidate for candidate in found if tree.exists(candidate)), "")
        if not program:
            raise UserError(f"the image's program {argv[0]!r} is not on its PATH ({path})")
    elif not program.startswith("/"):
        program = f"{workdir.rstrip('/')}/{program}"
    variable = launcher_variable(settings.get("Labels"))
    return Launch(argv, program, tuple(env), workdir, uid, gid, variable, _run_dirs(tree))


def _run_dirs(tree: MergedTree) -> tuple[tuple[str, int, int, int], ...]:
    """The image's directories under /run (e.g. /run/imagebuild, owned by the app's user, where the launcher
    writes): the VM mounts a tmpfs on /run, so the start script makes them again, parents first."""
    found = [("/" + path, member.info.mode & 0o7777, member.info.uid, member.info.gid)
             for path, member in tree.members.items()
             if path.startswith("run/") and member.info.isdir()]
    return tuple(sorted(found, key=lambda row: row[0].split("/")))


def start_script(launch: Launch, hostname: str) -> str:
    quote = shlex.quote
    env = " ".join(quote(item) for item in launch.env)
    args = " ".join(quote(arg) for arg in launch.argv[1:])
    run_dirs = "".join(f"$b mkdir -p {quote(path)} && $b chown {uid}:{gid} {quote(path)} && "
                       f"$b chmod {mode:o} {quote(path)}\n" for path, mode, uid, gid in launch.run_dirs)
    return f"""#!{STAGE}/busybox sh
# imagebuild disk: stage 2, PID 1 on the image's root file system
b={STAGE}/busybox
$b mkdir -p /dev/pts /dev/shm
$b mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
$b mount -t tmpfs -o mode=1777,nosuid,nodev shm /dev/shm
# what an engine's /dev holds and devtmpfs does not (udev would make them): an app opening /dev/stdout
# with O_CREAT, as nginx does, would otherwise try to create a file in root's /dev
$b ln -sfn /proc/self/fd /dev/fd
$b ln -sf /proc/self/fd/0 /dev/stdin
$b ln -sf /proc/self/fd/1 /dev/stdout
$b ln -sf /proc/self/fd/2 /dev/stderr
$b hostname {quote(hostname)}
# the tmpfs on /run hides the image's own directories there: make them again, with their owners and modes
{run_dirs}$b ip link set lo up
for path in /sys/class/net/*; do
    interface=${{path##*/}}
    [ "$interface" = lo ] && continue
    $b ip link set "$interface" up
    $b udhcpc -i "$interface" -s {STAGE}/dhcp -t 30 -T 1 -n -x hostname:{quote(hostname)} \\
        || echo "imagebuild: no DHCP lease on $interface"
done
environment=$($b cat {STAGE}/environment)
set --
if [ -f {STAGE}/vars ]; then
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in [A-Za-z_]*=*) set -- "$@" "$line" ;; esac
    done < {STAGE}/vars
fi
if [ -n "$environment" ]; then
    set -- "$@" {quote(launch.variable + "=")}"$environment"
    echo "imagebuild: environment $environment"
fi
cd {quote(launch.workdir)} || echo "imagebuild: no working directory {launch.workdir}"
# the ACPI power button (a hypervisor's or cloud's "stop") asks the app to stop, as `docker stop` does
stop() {{
    echo "imagebuild: power button: stopping the app"
    kill -TERM $app 2>/dev/null
    ( $b sleep {STOP_SECONDS}; kill -KILL $app 2>/dev/null ) &
}}
trap stop TERM
$b mkdir -p {STAGE}/acpi/PWRF
printf '#!{STAGE}/busybox sh\nexec {STAGE}/busybox kill -TERM 1\n' > {STAGE}/acpi/PWRF/00000080
$b chmod 0755 {STAGE}/acpi/PWRF/00000080
$b acpid -c {STAGE}/acpi -l /dev/null 2>/dev/null
# The app's stdout and stderr: a FIFO owned by the app's user, relayed to the serial console. The console
# itself belongs to root, so an app that reopens /dev/stdout (nginx's access_log) could not open it, as
# it could not open a root-owned pipe either (an engine hands the container user its stdio for the same reason).
output={STAGE}/output
$b rm -f $output
$b mkfifo -m 0620 $output
$b chown {launch.uid}:{launch.gid} $output
$b cat $output &
relay=$!
$b env -i {env} "$@" $b start-stop-daemon -S -c {launch.uid}:{launch.gid} -x {quote(launch.program)} \\
    -a {quote(launch.argv[0])} -- {args} > $output 2>&1 &
app=$!
while :; do
    wait $app
    status=$?
    kill -0 $app 2>/dev/null || break
done
# let the relay pass on the app's last lines (bounded: a child of the app may hold the FIFO open)
tries=0
while kill -0 $relay 2>/dev/null && [ $tries -lt 20 ]; do
    $b usleep 100000
    tries=$((tries + 1))
done
# `imagebuild disk boot` reads this line off the console for the app's exit status
echo "{EXIT_MARKER} $status; powering off"
$b sync
$b poweroff -f
"""
