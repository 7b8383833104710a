"""`imagebuild sbom REF`: print the SBOM attached to an image."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.common import InsecureOption, StoreOption, open_store


def sbom_command(reference: str = typer.Argument(..., help="NAME:TAG in the local store, or HOST[:PORT]/NAME[:TAG] "
                                                           "or HOST[:PORT]/NAME@sha256:... in a registry."),
                 form: str = typer.Option("spdx", "--format",
                                          help="spdx (SPDX 2.3 JSON) or cyclonedx (CycloneDX 1.6 JSON)."),
                 platform: Optional[str] = typer.Option(None, "--platform", metavar="OS/ARCH",
                                                        help="The image of a multi-platform index whose SBOM "
                                                             "to print (required for an index)."),
                 store: Optional[Path] = StoreOption, insecure: Optional[bool] = InsecureOption,
                 json_out: bool = typer.Option(False, "--json", help="The document is JSON already; with --json a "
                                                                     "failure is one JSON object on stdout too.")
                 ) -> None:
    """Print the SBOM the bake attached to an image (its Debian packages, Python distributions and commit)."""
    from imagebuild.evidence.sbom import read_sbom
    from imagebuild.oci.model import parse_platform

    wanted = parse_platform(platform) if platform is not None else None
    document = read_sbom(reference, form, open_store(store), insecure=insecure, platform=wanted)
    sys.stdout.buffer.write(document)
    sys.stdout.buffer.flush()
