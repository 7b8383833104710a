"""`imagebuild reproduce REF --key KEY`: rebake the commit REF's provenance names; attest a match."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imagebuild.cli.common import (InsecureOption, JsonOption, PassphraseEnvOption, RecipeOption, StoreOption,
                                   emit_json, open_places, say)


def reproduce_command(reference: str = typer.Argument(..., help="The image: a version (abc1234), NAME:VERSION, a "
                                                                "digest, or REGISTRY/NAME:TAG"),
                      key: Path = typer.Option(..., "--key", metavar="KEY",
                                               help="The rebuilder's private key: it signs the attestation"),
                      passphrase_env: Optional[str] = PassphraseEnvOption,
                      provenance_keys: List[Path] = typer.Option(
                          [], "--provenance-key", metavar="KEY.pub",
                          help="A public key the provenance is verified with (repeatable). Default: every "
                               "signed_by key of the recipe's policies"),
                      recipe: Path = RecipeOption, insecure: Optional[bool] = InsecureOption,
                      store: Optional[Path] = StoreOption, json_out: bool = JsonOption) -> None:
    """Rebake REF's source commit in a fresh store; on the same digest, attach a signed attestation to REF."""
    from imagebuild.errors import UserError
    from imagebuild.evidence.keys import load_private_key, load_public_key
    from imagebuild.evidence.reproduce import reproduce
    from imagebuild.oci.reference import Reference
    from imagebuild.release.promote import resolve_image
    from imagebuild.sources.git import require_git, git_facts
    from imagebuild.stores.place import RegistryPlace

    private = load_private_key(key, passphrase_env)
    loaded, places = open_places(recipe, store, insecure)
    try:
        trusted = [load_public_key(p) for p in provenance_keys] or \
            [load_public_key(loaded.root / p) for p in dict.fromkeys(
                path for env in loaded.environments for path in env.policy.signed_by)]
        if not trusted:
            raise UserError("no key to verify the provenance with",
                            hint="pass --provenance-key KEY.pub, or list the signer under an environment's "
                                 "policy.signed_by")
        place, manifest = places.home, None
        parsed = Reference.parse(reference) if "/" in reference else None
        if parsed is not None and parsed.registry:
            place = RegistryPlace(places.client(parsed.registry), parsed.repository)
            manifest = place.manifest(parsed.digest or parsed.tag or "latest")
            if manifest is None:
                raise UserError(f"no image {reference} in {place.label}", hint="push it first")
        else:
            manifest = resolve_image(places.home, reference, loaded.name)
        toplevel = Path(require_git(loaded.root, git_facts(loaded.root)).toplevel)
        done = reproduce(place, manifest, reference, repository=toplevel,
                         recipe_path=str(loaded.source.resolve().relative_to(toplevel.resolve())),
                         key=private, provenance_keys=trusted, say=say)
    finally:
        places.close()
    if json_out:
        emit_json(done.to_dict())
        return
    typer.echo(f"reproduced {reference} ({done.digest}) from commit {done.commit}")
    typer.echo(f"  attestation {done.attestation} signed by {done.key_id}")
