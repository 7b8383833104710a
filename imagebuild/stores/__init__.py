"""One module per place where image bytes live: layout (local store), archive, daemon, registry."""
