"""Evidence about a baked image, attached to it by subject: its SBOMs (sbom.py, from contents.py), signing
keys, signatures, DSSE envelopes and provenance attestations."""
