"""Bootable VM disks built from a baked image (`imagebuild bake --format disk`).

The disk holds the image's layers applied in order as its root file system, a
Debian kernel, and an initramfs whose init brings up the network by DHCP and
starts the image's Entrypoint + Cmd as the image config says. Booting a disk and
naming the environment it boots into live in `release/disk/`. See docs/disk.md.
"""
