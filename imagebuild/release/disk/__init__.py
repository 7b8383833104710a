"""What is done with a built disk (`build/disk/`): boot it under qemu, name the environment it boots into.

See docs/disk.md.
"""
