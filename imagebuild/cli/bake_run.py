"""`imagebuild bake`'s work and output, without typer.

The typer command (cli/bake_cmd.py) calls `bake`, and so does the fast path (cli/fast_path.py),
which runs a simple `bake` command line without importing typer or click: the same function, the
same output, the same errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from imagebuild.cli.helpers import collect_from_here, echo, emit_json, is_ci, open_store, say
from imagebuild.errors import UserError


def bake(path: Path, store: Optional[Path], allow_dirty: bool, output: List[str], load: bool, push: bool,
         cache_from: Optional[str], cache_to: Optional[str], insecure: Optional[bool], form: str,
         sign: Optional[Path], passphrase_env: Optional[str], json_out: bool) -> None:
    """Bake the commit checked out at `path` into an image in the local store (and its outputs)."""
    from imagebuild.build.bake import bake as bake_source, read_input
    from imagebuild.evidence.sbom import attach_sboms
    from imagebuild.progress import Progress
    from imagebuild.publish.disk import DiskOutput
    from imagebuild.publish.output import parse_outputs
    from imagebuild.publish.registry import RegistryOutput
    from imagebuild.stores.engine import EngineSession

    if passphrase_env is not None and sign is None:
        raise UserError("--passphrase-env names the passphrase of the --sign key", hint="add --sign KEY")
    engine = EngineSession()      # one connection for --load and an os.dockerfile base
    remote = None
    try:
        outputs = parse_outputs(output, load=load, push=push, form=form, insecure=insecure, engine=engine)
        the_store = open_store(store)
        source = read_input(path, allow_dirty=allow_dirty)
        for item in outputs:      # every refusal before anything is built or written
            item.check(source)
        key = None
        if sign is not None:      # a wrong passphrase is refused before the bake, not after it
            from imagebuild.evidence.keys import load_private_key
            key = load_private_key(sign, passphrase_env)
        if push or cache_from or cache_to:     # else no layer cache: the registry client is not imported
            from imagebuild.build.remote_cache import open_remote_cache
            remote = open_remote_cache(source.recipe.registry, source.recipe.name, push=push,
                                       cache_from=cache_from, cache_to=cache_to, insecure=insecure)
        for item in outputs:
            if isinstance(item, RegistryOutput):
                item.remote = remote
        started_on = None
        if key is not None:
            from imagebuild.evidence.provenance import now
            started_on = now()
        collect_from_here()
        result = bake_source(source, the_store, Progress.for_terminal(ci=is_ci()), engine=engine, remote=remote)
        lent = {str(layer.result.digest): layer for layer in result.remote}

        warned = []

        def fetch(layer) -> None:     # an os layer the registry's cache lent, for its packages
            if remote is not None and str(layer.digest) in lent:
                from imagebuild.build.remote_cache import fetch_layers
                if not warned and any(one.debian is not None for one in result.images or (result,)):
                    # with the lock's package records the SBOM reads no layer: this download is avoidable
                    warned.append(layer)
                    say("warning: imagebuild.lock has no package records, so the SBOM downloads the base layers "
                        "the registry's cache lent; run `imagebuild lock` and commit it")
                fetch_layers(remote, the_store, [lent[str(layer.digest)]])

        attach_sboms(the_store, result, fetch)   # before the outputs: a push carries them with the image
        signed = None
        if key is not None:
            from imagebuild.evidence.baked import sign_bake
            signed = sign_bake(result, source, the_store, key, outputs=_outputs_named(output, load, push, form),
                               allow_dirty=allow_dirty, started_on=started_on)
            say(f"signed {result.digest} as {signed.identity} with key {signed.key_id}, provenance attached")
        if remote is not None and result.remote and any(not isinstance(item, RegistryOutput) for item in outputs):
            from imagebuild.build.remote_cache import fetch_layers
            fetch_layers(remote, the_store, result.remote)   # the outputs that read the layers' bytes
        for item in outputs:
            # a progress of its own: a terminal's bar is not restarted once the bake's has ended
            item.publish(result, the_store, Progress.for_terminal(ci=is_ci()))
    finally:
        engine.close()
        if remote is not None:
            remote.client.close()
    if remote is not None:
        result = result.with_warnings(remote.warnings)
    pushed = next((item.reference for item in outputs if isinstance(item, RegistryOutput)), None)
    result = result.pushed_as(pushed) if pushed else result
    disk = next((item.disk for item in outputs if isinstance(item, DiskOutput)), None)
    if json_out:
        emit_json({**result.to_json(), **({"disk": disk.to_json()} if disk else {}),
                   **({"signed": signed.to_json()} if signed else {})})
        return
    echo(f"{result.image} {result.digest}")
    if disk:
        from imagebuild.progress import human_size
        echo(f"{disk.reference} {disk.digest} (raw disk {disk.raw_digest}; qcow2 {human_size(disk.qcow2_size)}, "
             f"raw {human_size(disk.raw_size)}; container image {human_size(disk.image_size)})")


def _outputs_named(output: List[str], load: bool, push: bool, form: str) -> list[str]:
    """The outputs as the provenance records them."""
    return [*output, *(["load"] if load else []), *(["push"] if push else []), *([form] if form != "image" else [])]
