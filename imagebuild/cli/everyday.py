"""The everyday commands' work and output, without typer: `images`, `status`, `history`, `promote`, `push`.

Their typer commands (`*_cmd.py`) call these, and so does the fast path (cli/fast_path.py), which
runs a simple command line of them without importing typer or click: the same function, the same
output, the same errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from imagebuild.cli.helpers import echo, emit_json, load_recipe_for, open_places, open_store, say, ssh_options
from imagebuild.errors import UserError

if TYPE_CHECKING:
    from imagebuild.oci.reference import Reference
    from imagebuild.stores.registry import PushResult


def images(store: Optional[Path], all_kinds: bool, json_out: bool) -> None:
    local = open_store(store)
    # An empty or missing directory is a store yet to be made; anything else is a wrong path.
    if local.root.exists() and not local.exists() and not (local.root.is_dir() and not any(local.root.iterdir())):
        raise UserError(f"{local.root} is not an imagebuild store (it has no index.json)",
                        hint="point --store or IMAGEBUILD_STORE at the store's directory")
    refs = local.refs() if local.exists() else {}
    rows = [{"image": name, "digest": str(d.digest), "size": d.size, "kind": local.kind_of(d)}
            for name, d in sorted(refs.items())]
    for row in rows:
        if row["kind"] == "index":    # a multi-platform image: the platforms it offers
            row["platforms"] = local.platforms_of(row["digest"])
    if not all_kinds:
        rows = [row for row in rows if row["kind"] not in ("artifact", "referrers")]
    if json_out:
        emit_json({"store": str(local.root), "images": rows})
        return
    if not rows:
        # stderr: stdout holds one line per image, so `| wc -l` counts them
        say(f"no images in {local.root}")
    for row in rows:
        shown_kind = f"\t{row['kind']}" if row["kind"] in ("artifact", "disk", "referrers") else ""
        if row.get("platforms"):
            shown_kind = "\t" + ",".join(row["platforms"])
        echo(f"{row['image']}\t{row['digest']}{shown_kind}")


def status(recipe: Path, insecure: Optional[bool], store: Optional[Path], json_out: bool, hosts: bool,
           identity: Optional[List[Path]], known_hosts: Optional[Path], agent: bool) -> None:
    from imagebuild.release.promote import status
    loaded, places = open_places(recipe, store, insecure)
    try:
        rows = status(places.home, loaded.environments, places.target_for)
    finally:
        places.close()
    # SSH (and paramiko) only when some environment has hosts to ask.
    with_hosts = hosts and any(env.hosts for env in loaded.environments)
    on_hosts = _hosts_of(loaded, ssh_options(identity, known_hosts, agent)) if with_hosts else {}
    # The Kubernetes client only when some environment names a cluster.
    on_clusters = {env.name: _cluster_of(loaded, env.name) for env in loaded.environments
                   if hosts and env.kubernetes is not None}
    if json_out:
        environments = []
        for row in rows:
            entry = row.to_dict()
            entry["hosts"] = [h.to_dict() for h in on_hosts.get(row.environment, [])]
            entry["serving"], entry["mixed"] = _serving(on_hosts.get(row.environment, []))
            if row.environment in on_clusters:
                entry["cluster"] = on_clusters[row.environment].to_dict()
            environments.append(entry)
        emit_json({"image": loaded.name, "home": places.home.label, "environments": environments})
        return
    for row in rows:
        line = f"{row.environment:<12} {row.version or '-':<20} {row.digest or '-':<71} {row.promoted_at or '-'}"
        if row.checks:
            line += f"  checks: {', '.join(row.checks)}"
        if row.note:
            line += f"  ({row.note})"
        echo(line)
        rows_here = on_hosts.get(row.environment, [])
        if _serving(rows_here)[1]:
            echo("  " + _mixed_line(rows_here))
        for host in rows_here:
            echo("  " + host_line(host, row.digest, row.version))
        if row.environment in on_clusters:
            echo("  " + _cluster_line(on_clusters[row.environment], row.digest, row.version))


def _hosts_of(recipe, options) -> dict:
    from imagebuild.release.deploy.status import hosts_status
    from imagebuild.recipe.hosts import parse_hosts

    wanted = {env.name: parse_hosts(env.hosts, f"environments[{index}].hosts:")
              for index, env in enumerate(recipe.environments) if env.hosts}
    return hosts_status(recipe, wanted, options)


def _serving(rows) -> tuple[dict, bool]:
    """Which hosts serve which digest, and whether that is more than one (no import of SSH without hosts)."""
    if not rows:
        return {}, False
    from imagebuild.release.deploy.status import is_mixed, serving
    return serving(rows), is_mixed(rows)


def _mixed_line(rows) -> str:
    versions = {row.digest: row.version for row in rows}
    parts = [f"{len(hosts)} host(s) on {versions.get(digest) or '-'} ({digest[:19]})"
             for digest, hosts in _serving(rows)[0].items()]
    return "MIXED: " + ", ".join(parts)


def host_line(host, promoted_digest: str | None, promoted_version: str | None = None) -> str:
    from imagebuild.release.deploy.status import migration_phases

    what = f"{host.version or '-'} ({host.digest[:19] if host.digest else '-'}) since {host.since or '-'}"
    facts = [f"port {host.port}"]
    if host.container:
        facts.append(f"{host.container} {host.state or 'gone'}" + (f" ({host.health})" if host.health else ""))
    if host.front:
        facts.append(f"front {host.front}")
    if host.digest and promoted_digest and host.digest != promoted_digest:
        # A refused release leaves the host here too, and deploying it again would only retry it.
        env = host.environment
        facts.append(f"behind the promoted {promoted_version or promoted_digest[:19]}: `imagebuild deploy {env}` "
                     f"rolls it out; if its deploy was refused, promote a fixed version, or keep "
                     f"{host.version or 'this one'} with `imagebuild deploy {env} --to {host.version or 'VERSION'}`")
    if host.rolled_back:
        facts.append(f"rolled back from {host.rolled_back.get('from_version')} at {host.rolled_back.get('at')}: "
                     f"{host.rolled_back.get('reason')}")
    phases = migration_phases(host)
    if phases:
        facts.append(phases)
    if host.note:
        facts.append(host.note)
    return f"{host.host:<40} {what:<50} {', '.join(facts)}"


def _cluster_of(recipe, environment: str):
    from imagebuild.release.kubernetes.status import cluster_status

    return cluster_status(recipe, environment)


def _cluster_line(found, promoted_digest: str | None, promoted_version: str | None) -> str:
    what = f"{found.version or '-'} since {found.since or '-'}"
    facts = [f"Deployment {found.deployment}"]
    if found.replicas is not None:
        facts.append(f"{found.ready}/{found.replicas} ready" + ("" if found.rolled_out else ", rolling out"))
    if found.digest and promoted_digest and found.digest != promoted_digest:
        facts.append(f"behind the promoted {promoted_version or promoted_digest[:19]}: "
                     f"`imagebuild deploy {found.environment}` rolls it out")
    if found.note:
        facts.append(found.note)
    return f"{found.target:<40} {what:<50} {', '.join(facts)}"


def history(environment: str, recipe: Path, insecure: Optional[bool], store: Optional[Path], json_out: bool) -> None:
    from imagebuild.release.promote import history
    loaded, places = open_places(recipe, store, insecure)
    try:
        records = history(places.home, loaded.environments, environment, places.target_for)
    finally:
        places.close()
    if json_out:
        emit_json({"environment": environment, "promotions": [r.to_dict() for r in records]})
        return
    if not records:
        # stderr: stdout holds one line per promotion
        say(f"no promotions to {environment} yet")
    for record in records:
        mark = ("  rollback" if record.rollback else "") + (f"  checks: {','.join(record.checks)}" if record.checks else "")
        echo(f"{record.sequence:>6}  {record.time}  {record.version:<20} {record.digest}{mark}")


def promote(image: str, to: str, dry_run: bool, recipe: Path, insecure: Optional[bool], store: Optional[Path],
            json_out: bool) -> None:
    from imagebuild.release.promote import promote
    loaded, places = open_places(recipe, store, insecure)
    try:
        result = promote(places.home, loaded.environments, image, to, target_for=places.target_for,
                         name=loaded.name, dry_run=dry_run, root=loaded.root)
    finally:
        places.close()
    if json_out:
        emit_json(result.to_dict())
        return
    if result.action == "none":
        echo(f"{result.version} ({result.digest}) is already in {result.environment}")
        for line in result.messages:
            echo(f"  {line}")
        return
    what = "would promote" if dry_run else ("rolled back" if result.rollback else "promoted")
    echo(f"{what} {result.version} ({result.digest}) to {result.environment}")
    for check in result.checks:
        echo(f"  check {check['name']} passed: {check['why']}")
    for line in result.messages:
        echo(f"  {'would ' if dry_run else ''}{line}")
    if result.blobs:
        echo(f"  blobs: {result.blobs['blobs_mounted']} mounted, {result.blobs['blobs_uploaded']} uploaded, "
                   f"{result.blobs['blobs_skipped']} already there")


def push_target(image: str, to: Optional[str], recipe_path: Path, recipe=None) -> Reference:
    """`--to` when given, else the recipe's registry plus the image's name and tag (`recipe`: already loaded)."""
    from imagebuild.oci.reference import Reference
    if to:
        target = Reference.parse(to)
        if not target.registry:
            raise UserError(f"--to {to!r} names no registry", hint="use HOST[:PORT]/NAME[:TAG]")
        return target
    if recipe is None:
        recipe = load_recipe_for(recipe_path, required=False)
    if recipe is None or not recipe.registry:
        raise UserError("no registry to push to",
                        hint="pass --to HOST[:PORT]/NAME[:TAG] or set `registry:` in imagebuild.yaml")
    local = Reference.parse(image)
    return Reference.parse(f"{recipe.registry.rstrip('/')}/{local.repository.rsplit('/', 1)[-1]}")


def push_summary(result: PushResult) -> str:
    return (f"pushed {result.reference}@{result.digest}: uploaded {result.blobs_uploaded} blobs "
            f"({result.bytes_uploaded} bytes with the manifest), skipped {result.blobs_skipped}, "
            f"mounted {result.blobs_mounted}, {result.requests} requests")


def push(image: str, to: Optional[str], recipe: Path, insecure: Optional[bool], parallel: int,
         store: Optional[Path], json_out: bool) -> None:
    from imagebuild.stores.registry import push_image
    # Read once: it names the target (without --to) and the environment tags, which are promotion's
    # alone whichever way the target was named.
    local = open_store(store)
    loaded = load_recipe_for(recipe, required=False, remember_in=local)
    target = push_target(image, to, recipe, loaded)
    result = push_image(local, image, target, insecure=insecure, parallel=parallel,
                        progress=None if json_out else say,
                        environments=loaded.environment_names() if loaded is not None else ())
    if json_out:
        emit_json(result.to_dict())
    else:
        echo(push_summary(result))
