"""Test-only services and images for the registry and promotion tests."""
