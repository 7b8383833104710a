"""The initramfs: busybox, the kernel modules a VM's disk and network need, and /init.

/init loads the modules, finds the root file system by its label, reads the
environment (kernel command line `imagebuild.env=NAME`, else a config drive: a
FAT or ISO file system labelled IMAGEBUILD holding a file `env`, and maybe a
file `vars` of NAME=VALUE lines for the app, such as secrets), mounts a tmpfs
on the root's /run holding busybox and the image's start script, and switches
root to that script. The root file system itself stays exactly the image's files.

The archive is newc cpio, written here so that every byte is fixed: entries in
name order, inode numbers counted up, owner root, one mtime for all.
"""

from __future__ import annotations

import gzip
import io

from imagebuild.build.disk.packages import Kernel

ROOT_LABEL = "imagebuild-root"
CONFIG_LABEL = "IMAGEBUILD"
STAGE = "/run/imagebuild-boot"     # busybox, the start script and what /init read, root's only; /run/imagebuild is the app's

INIT = r"""#!/bin/busybox sh
# imagebuild disk: stage 1 (initramfs)
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
export PATH=/bin
/bin/busybox --install -s /bin
fail() { echo "imagebuild: $*" >&2; sleep 5; poweroff -f; }
for module in $(cat /modules.load); do
    insmod "/lib/modules/$module.ko" 2>/dev/null
done
device=""
tries=0
while [ -z "$device" ] && [ $tries -lt 300 ]; do
    device=$(findfs LABEL=@ROOT_LABEL@ 2>/dev/null) || { tries=$((tries + 1)); usleep 100000; }
done
[ -n "$device" ] || fail "no file system labelled @ROOT_LABEL@ appeared"
mount -t ext4 -o rw,noatime "$device" /newroot || fail "cannot mount $device"
environment=""
for word in $(cat /proc/cmdline); do
    case "$word" in imagebuild.env=*) environment="${word#imagebuild.env=}" ;; esac
done
if config=$(findfs LABEL=@CONFIG_LABEL@ 2>/dev/null); then
    mkdir -p /config
    if mount -o ro "$config" /config 2>/dev/null; then
        [ -z "$environment" ] && [ -f /config/env ] && environment=$(head -n 1 /config/env | tr -d '\r\n ')
        [ -f /config/vars ] && cp /config/vars /vars
        umount /config
    fi
fi
[ -d /newroot/run ] || mkdir -p /newroot/run
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run
mkdir -p /newroot@STAGE@
cp /bin/busybox /start /dhcp /newroot@STAGE@/
printf '%s' "$environment" > /newroot@STAGE@/environment
if [ -f /vars ]; then
    (umask 077 && cp /vars /newroot@STAGE@/vars)
    rm -f /vars
fi
for point in dev proc sys; do
    [ -d /newroot/$point ] || mkdir -p /newroot/$point
    mount --move /$point /newroot/$point
done
exec switch_root /newroot @STAGE@/start
""".replace("@ROOT_LABEL@", ROOT_LABEL).replace("@CONFIG_LABEL@", CONFIG_LABEL).replace("@STAGE@", STAGE)

DHCP = r"""#!@STAGE@/busybox sh
# udhcpc events: configure the interface, the default route and the resolver
b=@STAGE@/busybox
case "$1" in
    deconfig) $b ip -4 addr flush dev "$interface"; $b ip link set "$interface" up ;;
    bound|renew)
        $b ip -4 addr flush dev "$interface"
        $b ip -4 addr add "$ip/${mask:-24}" dev "$interface"
        for gateway in $router; do $b ip -4 route add default via "$gateway" dev "$interface"; break; done
        if [ -n "$dns" ]; then
            { [ -n "$domain" ] && echo "search $domain"; for server in $dns; do echo "nameserver $server"; done; } \
                > /etc/resolv.conf 2>/dev/null
        fi
        # a name from the network (DHCP option 12) lets the launcher detect the environment by host name
        [ -n "$hostname" ] && $b hostname "$hostname"
        echo "imagebuild: $interface has $ip" ;;
esac
exit 0
""".replace("@STAGE@", STAGE)

_NEWC = "070701"


def _entry(name: str, mode: int, data: bytes, inode: int, mtime: int, rdev: tuple[int, int] = (0, 0)) -> bytes:
    encoded = name.encode() + b"\0"
    fields = [inode, mode, 0, 0, 1, mtime, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
    header = (_NEWC + "".join(f"{value:08x}" for value in fields)).encode()
    out = header + encoded
    out += b"\0" * (-len(out) % 4)
    out += data + b"\0" * (-len(data) % 4)
    return out


def newc(files: dict[str, tuple[int, bytes]], mtime: int, devices: dict[str, tuple[int, int, int]]) -> bytes:
    """A newc archive of {path: (mode, bytes)} and {path: (mode, major, minor)}, sorted by path."""
    names = sorted(set(files) | set(devices))
    out = io.BytesIO()
    for inode, name in enumerate(names, start=1):
        if name in devices:
            mode, major, minor = devices[name]
            out.write(_entry(name, mode, b"", inode, mtime, (major, minor)))
        else:
            mode, data = files[name]
            out.write(_entry(name, mode, data, inode, mtime))
    out.write(_entry("TRAILER!!!", 0, b"", 0, 0))
    return out.getvalue()


def build_initramfs(kernel: Kernel, busybox: bytes, start_script: str, mtime: int) -> bytes:
    """The gzip-compressed initramfs (gzip header without time or name, so it is fixed too)."""
    directory, executable, regular = 0o040755, 0o100755, 0o100644
    files: dict[str, tuple[int, bytes]] = {
        name: (directory, b"") for name in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules")}
    files["bin/busybox"] = (executable, busybox)
    files["init"] = (executable, INIT.encode())
    files["start"] = (executable, start_script.encode())
    files["dhcp"] = (executable, DHCP.encode())
    files["modules.load"] = (regular, "".join(f"{name}\n" for name, _ in kernel.modules).encode())
    for name, ko in kernel.modules:
        files[f"lib/modules/{name}.ko"] = (regular, ko)
    devices = {"dev/console": (0o020600, 5, 1), "dev/null": (0o020666, 1, 3)}
    return gzip.compress(newc(files, mtime, devices), compresslevel=9, mtime=0)
