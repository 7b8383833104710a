"""One module per place where image bytes live: layout (local store), archive, the Docker engine, registry."""
