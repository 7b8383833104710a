"""The distribution-API client: auth, transport, uploads, tags."""
