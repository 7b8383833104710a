"""Where a baked image goes besides the store: one output per sink (`oci:DIR`, `docker-archive:FILE`,
the Docker engine, the registry, a VM disk), each checked before the bake and published after it."""
