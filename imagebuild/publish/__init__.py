"""Where a baked image is delivered outside the store: `oci:DIR` and `docker-archive:FILE` destinations."""
