"""`imagebuild deploy`: an environment's promoted digest onto its hosts over SSH, blue/green.

ssh.py        the paramiko session: keys, agent, known_hosts (refuses unknown hosts unless told)
release.py    ENV -> digest in the registry (and `--to VERSION`, a recorded rollback)
remote_docker the host's engine through the docker CLI over that session
front.py      the per-instance nginx front whose upstream is rewritten and gracefully reloaded
rollout.py    the per-host steps, one host at a time, with their events
migrations.py expand before the swap, contract after; the phases recorded on every host
status.py     what runs where, and since when

Hosts (ssh:// targets) are parsed by imagebuild/recipe/hosts.py.
docs/deploy.md explains the choices.
"""
