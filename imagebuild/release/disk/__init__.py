"""Bootable VM disks of baked images (`imagebuild bake --format disk`).

The disk holds the image's layers applied in order as its root file system, a
Debian kernel, and an initramfs whose init brings up the network by DHCP and
starts the image's Entrypoint + Cmd as the image config says. See docs/disk.md.
"""
