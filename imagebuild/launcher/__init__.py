"""What runs inside the image: `launch.sh` (the entrypoint, POSIX sh) and `imagebuild_runtime.py`
(the stdlib helper Python apps import); `assets.py` reads them. The files the launcher reads are
generated from the recipe by imagebuild/build/launcher_files.py. See docs/launcher.md."""
