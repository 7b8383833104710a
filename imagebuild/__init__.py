"""imagebuild: bake one reproducible OCI image per commit, promote it, deploy it."""

__version__ = "0.1.0"
