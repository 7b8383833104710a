"""The OCI image model (no I/O) and the reproducible layer writer."""
