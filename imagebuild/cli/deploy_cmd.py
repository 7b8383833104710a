"""`imagebuild deploy ENV`: roll the environment's digest onto its hosts, in waves, with no failed request."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imagebuild.cli.common import (AgentOption, IdentityOption, InsecureOption, JsonOption, KnownHostsOption, RecipeOption,
                                   StoreOption, emit_json, open_places, say, ssh_options)
from imagebuild.errors import UserError

HostOption = typer.Option(None, "--host", metavar="ssh://USER@HOST[:PORT]",
                          help="A target host (repeatable); replaces the environment's `hosts:` from the recipe.")
def targets(recipe, environment: str, given: Optional[List[str]]):
    """The hosts to act on: --host when given, else the environment's hosts in the recipe."""
    from imagebuild.recipe.hosts import parse_hosts
    from imagebuild.recipe.model import environment_index

    if given:
        return parse_hosts(given, "--host")
    index = environment_index(recipe.environments, environment)
    env = recipe.environments[index]
    if not env.hosts:
        raise UserError(f"environment {environment} has no hosts",
                        hint=f"add `hosts: [ssh://user@host]` to {environment} in the recipe, or pass --host")
    return parse_hosts(env.hosts, f"environments[{index}].hosts:")


def deploy_command(environment: str = typer.Argument(..., help="The environment whose image to deploy"),
                   to: Optional[str] = typer.Option(None, "--to", metavar="VERSION",
                                                    help="Roll back: move ENV's tag to a VERSION it ran before, "
                                                         "then deploy it"),
                   host: Optional[List[str]] = HostOption, identity: Optional[List[Path]] = IdentityOption,
                   known_hosts: Optional[Path] = KnownHostsOption, agent: bool = AgentOption,
                   accept_new_host_key: bool = typer.Option(
                       False, "--accept-new-host-key",
                       help="Trust a host not yet in known_hosts and record its key there (a changed key is "
                            "always refused)."),
                   force: bool = typer.Option(False, "--force",
                                              help="Roll back even across a contract migration that has run."),
                   recipe: Path = RecipeOption, insecure: Optional[bool] = InsecureOption,
                   store: Optional[Path] = StoreOption, json_out: bool = JsonOption) -> None:
    """Pull ENV's image by digest onto each host and swap it in behind nginx, deploy.batch hosts at a time.

    An environment that names a cluster (`kubernetes:` in the recipe) is rolled out there instead:
    expand Job, Deployment (rolled back when its pods do not become ready), contract Job.
    """
    from imagebuild.release.deploy.fleet import describe
    from imagebuild.release.deploy.rollout import check_spec, deploy
    from imagebuild.release.deploy.release import resolve_release
    from imagebuild.recipe.sql_lint import refuse_breaking_expand

    loaded, places = open_places(recipe, store, insecure)
    if _names_cluster(loaded, environment):
        if host:
            places.close()
            raise UserError(f"environment {environment} deploys to a cluster, and --host names SSH hosts",
                            hint="leave out --host, or deploy an environment that lists hosts")
        _deploy_to_cluster(loaded, places, environment, to, json_out)
        return
    try:
        hosts = targets(loaded, environment, host)
        options = ssh_options(identity, known_hosts, agent, accept_new_host_key)
        check_spec(loaded)
        refuse_breaking_expand(loaded.root, loaded.deploy.migrations.sql)
        if to is not None and not force and (loaded.deploy.expand or loaded.deploy.migrations.contract):
            _refuse_rollback_across_contract(loaded, places, environment, hosts, options, to)
        release = resolve_release(loaded, places, environment, to)
    finally:
        places.close()
    if release.rolled_back:
        say(f"moved {environment} back to {release.version} ({release.digest}); recorded as a rollback")
    say(f"deploying {release.version} ({release.digest}) to {environment}: {len(hosts)} host(s), "
        f"{describe(loaded, len(hosts))}")
    result = deploy(loaded, release, hosts, options, listener=lambda event: say(event.line()), force=force)
    if json_out:
        emit_json(result.to_dict())
        return
    for outcome in result.hosts:
        was = f" (was {outcome.previous_version})" if outcome.previous_version else ""
        typer.echo(f"{outcome.host:<40} {outcome.action:<9} {outcome.version}{was} in {outcome.container}")
    typer.echo(f"{environment}: {release.version} on {len(result.hosts)} host(s) in {result.seconds:.1f} s")


def _names_cluster(recipe, environment: str) -> bool:
    env = recipe.environment(environment)
    return env is not None and env.kubernetes is not None


def _deploy_to_cluster(recipe, places, environment: str, to: Optional[str], json_out: bool) -> None:
    from imagebuild.release.kubernetes.apply import deploy, target_label
    from imagebuild.release.kubernetes.cluster import Cluster
    from imagebuild.release.kubernetes.manifests import MANAGER
    from imagebuild.release.kubernetes.resolve import pinned_image

    spec = recipe.environment(environment).kubernetes
    try:
        # The kubeconfig is read first: a bad one stops the deploy before `--to` moves the tag.
        cluster = Cluster(spec.context, MANAGER)
    except BaseException:
        places.close()
        raise
    try:
        try:
            image, release = pinned_image(recipe, places, environment, to=to)
        finally:
            places.close()
        if release.rolled_back:
            say(f"moved {environment} back to {release.version} ({release.digest}); recorded as a rollback")
        say(f"deploying {image.version} ({release.digest}) to {environment}: {target_label(spec.context, spec.namespace)}, "
            f"{spec.replicas} replica(s)")
        result = deploy(recipe, release, image, cluster, listener=lambda event: say(event.line()))
    finally:
        cluster.close()
    if json_out:
        emit_json(result.to_dict())
        return
    was = f" (was {result.previous_version})" if result.previous_version else ""
    typer.echo(f"{result.target:<40} {result.action:<9} {image.version}{was} in Deployment {result.deployment}")
    typer.echo(f"{environment}: {image.version} on {spec.replicas} replica(s) in {result.seconds:.1f} s")


def _refuse_rollback_across_contract(recipe, places, environment: str, hosts, options, version: str) -> None:
    """Before the tag moves back: the hosts' migration records must not show a contract after VERSION."""
    from imagebuild.release.deploy.migrations import check_rollback
    from imagebuild.release.promote import resolve_image

    wanted = resolve_image(places.home, version, recipe.name)
    check_rollback(recipe, environment, hosts, options, str(wanted.digest), version)
