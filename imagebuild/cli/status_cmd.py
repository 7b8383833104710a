"""`imagebuild status`: what each environment runs, read from the registry, and on its hosts."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imagebuild.cli.common import (AgentOption, IdentityOption, InsecureOption, JsonOption, KnownHostsOption, RecipeOption,
                                   StoreOption, emit_json, open_places, ssh_options)


def status_command(recipe: Path = RecipeOption, insecure: Optional[bool] = InsecureOption,
                   store: Optional[Path] = StoreOption, json_out: bool = JsonOption,
                   hosts: bool = typer.Option(True, "--hosts/--no-hosts",
                                              help="Also ask each environment's hosts (over SSH) or cluster what "
                                                   "runs there."),
                   identity: Optional[List[Path]] = IdentityOption, known_hosts: Optional[Path] = KnownHostsOption,
                   agent: bool = AgentOption) -> None:
    """Each environment's current digest, version and promotion time, and what runs on its hosts since when."""
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
        typer.echo(line)
        rows_here = on_hosts.get(row.environment, [])
        if _serving(rows_here)[1]:
            typer.echo("  " + _mixed_line(rows_here))
        for host in rows_here:
            typer.echo("  " + _host_line(host, row.digest, row.version))
        if row.environment in on_clusters:
            typer.echo("  " + _cluster_line(on_clusters[row.environment], row.digest, row.version))


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


def _host_line(host, promoted_digest: str | None, promoted_version: str | None = None) -> str:
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
