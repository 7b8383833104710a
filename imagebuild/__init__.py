"""imagebuild: bake one reproducible OCI image per commit and promote it by digest."""

__version__ = "0.1.0"
