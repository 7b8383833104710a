"""Recipes: the public contract (`imagebuild.yaml`), its types, loader and stock recipes."""
