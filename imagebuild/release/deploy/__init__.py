"""`imagebuild deploy`: an environment's promoted digest onto its hosts over SSH, blue/green.

ssh.py        the paramiko session: keys, agent, known_hosts (refuses unknown hosts unless told)
hosts.py      ssh://user@host:port[?port=PUBLIC] targets
release.py    ENV -> digest in the registry (and `--to VERSION`, a recorded rollback)
remote_docker the host's engine through the docker CLI over that session
front.py      the per-instance nginx front whose upstream is rewritten and gracefully reloaded
rollout.py    the per-host steps, one host at a time, with their events
status.py     what runs where, and since when

docs/deploy.md explains the choices.
"""

from imagebuild.deploy.hosts import Host, parse_host, parse_hosts
from imagebuild.deploy.release import Release, resolve_release
from imagebuild.deploy.rollout import DeployResult, Event, check_spec, deploy
from imagebuild.deploy.ssh import SshOptions, UnknownHostKeyError
from imagebuild.deploy.status import HostStatus, host_status

__all__ = ["DeployResult", "Event", "Host", "HostStatus", "Release", "SshOptions", "UnknownHostKeyError",
           "check_spec", "deploy", "host_status", "parse_host", "parse_hosts", "resolve_release"]
