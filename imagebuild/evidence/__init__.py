"""Evidence about a baked image: signing keys, signatures, DSSE envelopes and provenance attestations."""
