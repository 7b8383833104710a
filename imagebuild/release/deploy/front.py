"""The front: one nginx master per app, environment and public port on each host.

It listens on the public port and proxies to the one container named in
upstream.conf. Moving traffic is: write the new upstream.conf, `nginx -t`,
`nginx -s reload`. On reload the master starts new workers with the new
upstream and tells the old ones to stop accepting and finish what they hold,
so no request is refused and none in flight is cut. The listening socket
belongs to the master and never closes. The swap is complete when every old
worker has exited; only then is the old container stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

from imagebuild.release.deploy.ssh import SshSession
from imagebuild.errors import DeployError

POLL = 0.1                 # seconds between looks at the master's workers
EXTRA_WAIT = 10            # seconds past worker_shutdown_timeout before a stuck old worker is an error
START_WAIT = 10            # seconds for a newly started master to show its workers

# `worker PID` for each process whose parent is the process `m`, from the /proc/PID/status files named as
# arguments. A process that exits between the shell's glob and awk's read leaves a name that cannot be
# opened: awk's own reading of its input files would stop there (mawk, Debian's awk, gives up on the
# first), and the workers after it would be missed, so a deploy could see no old workers to wait for and
# stop the container they still send requests to. getline skips such a file instead.
CHILDREN_AWK = r"""
BEGIN {
    for (i = 1; i < ARGC; i++) {
        pid = ""
        while ((getline line < ARGV[i]) > 0) {
            split(line, field)
            if (field[1] == "Pid:") pid = field[2]
            else if (field[1] == "PPid:") { if (field[2] == m && pid != "") print "worker " pid; break }
        }
        close(ARGV[i])
    }
}
"""

# The master's pid when it runs (checked against /proc, so a stale pid file is not trusted), then its
# workers, from /proc rather than ps: a minimal host may lack procps.
PROCESSES = r"""
pid=$(cat "$1" 2>/dev/null) && kill -0 "$pid" 2>/dev/null && grep -q nginx "/proc/$pid/cmdline" || exit 0
echo "master $pid"
awk -v m="$pid" "$2" /proc/[0-9]*/status
"""

# Replace upstream.conf and nginx.conf (write beside, then rename) and let nginx check them. One command
# per line: `set -e` ignores a failure on the left of `&&`, and a write that failed must stop the switch.
WRITE_AND_TEST = r"""
set -e
mkdir -p "$1/tmp"
printf '%s' "$2" > "$1/upstream.conf.new"
mv -f "$1/upstream.conf.new" "$1/upstream.conf"
printf '%s' "$3" > "$1/nginx.conf.new"
mv -f "$1/nginx.conf.new" "$1/nginx.conf"
nginx -q -t -p "$1" -c "$1/nginx.conf" -e "$1/error.log"
"""

# Reload (or start) nginx and, only when that worked, move the new record into place.
APPLY_AND_RECORD = r"""
set -e
umask 077
printf '%s' "$3" > "$1/current.json.new"
if [ "$2" = start ]; then
    nginx -p "$1" -c "$1/nginx.conf" -e "$1/error.log"
else
    nginx -p "$1" -c "$1/nginx.conf" -e "$1/error.log" -s reload
fi
mv -f "$1/current.json.new" "$1/current.json"
"""

NGINX_CONF = """\
# Written by imagebuild deploy on every deploy; edits are overwritten.
daemon on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_processes 2;
# Old workers get this long to finish their requests after a reload.
worker_shutdown_timeout {drain}s;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server_tokens off;

    upstream app {{
        include {dir}/upstream.conf;
        keepalive 16;
    }}

    server {{
        # One socket shared by old and new workers (no reuseport: a closing per-worker socket would
        # reset the connections still queued on it).
        listen {listen}:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


class NotSwitched(DeployError):
    """The front refused the new config before any traffic moved: the old state can be put back."""


@dataclass(frozen=True)
class Front:
    session: SshSession
    directory: str
    listen: str
    port: int
    drain: int

    def read_state(self) -> dict | None:
        result = self.session.run(["cat", f"{self.directory}/current.json"])
        if not result.ok:
            return None
        try:
            return json.loads(result.stdout)
        except ValueError:
            return None

    def processes(self) -> tuple[int | None, set[int]]:
        """The running master's pid (None: no pid file, or a stale one) and its workers' pids."""
        result = self.session.run(["sh", "-c", PROCESSES, "processes", f"{self.directory}/nginx.pid", CHILDREN_AWK])
        master, workers = None, set()
        for line in result.stdout.splitlines():
            kind, _, pid = line.partition(" ")
            if pid.isdigit():
                if kind == "master":
                    master = int(pid)
                else:
                    workers.add(int(pid))
        return master, workers

    def master(self) -> int | None:
        return self.processes()[0]

    def point_to(self, upstream_port: int) -> None:
        """Write the config for `upstream_port` and check it (one round trip); nothing running changes yet."""
        upstream = f"server 127.0.0.1:{upstream_port} max_fails=0;\n"
        conf = NGINX_CONF.format(dir=self.directory, listen=self.listen, port=self.port, drain=self.drain)
        result = self.session.run(["sh", "-c", WRITE_AND_TEST, "configure", self.directory, upstream, conf])
        if not result.ok:
            raise NotSwitched(f"{self.session.host}: nginx rejects the front's configuration: {result.said()}")

    def switch(self, record: dict, on_reload: Callable[[str], None] = lambda _: None) -> str:
        """Apply the written config: reload a running master (then wait out its old workers), or start one.

        `record` becomes current.json in the same remote command that reloads or starts nginx, so the record
        names the container traffic goes to even if this process dies right after.
        """
        master, old = self.processes()
        if master is None:
            return self._start(record)
        on_reload(f"nginx {master}: reload; old workers {sorted(old)} finish their requests")
        result = self._apply("reload", record)
        if not result.ok:
            raise NotSwitched(f"{self.session.host}: nginx reload failed: {result.said()}")
        deadline = time.monotonic() + self.drain + EXTRA_WAIT
        while True:
            now_master, current = self.processes()
            if now_master == master and current and not (current & old):
                return f"nginx {master} reloaded; its {len(old)} old workers finished their requests"
            if now_master != master:
                raise DeployError(f"{self.session.host}: the nginx front (pid {master}) died during the reload; "
                                  f"see {self.directory}/error.log on the host")
            if time.monotonic() > deadline:
                raise DeployError(f"{self.session.host}: old nginx workers {sorted(current & old)} still run "
                                  f"{self.drain + EXTRA_WAIT}s after the reload; see {self.directory}/error.log")
            time.sleep(POLL)

    def _apply(self, how: str, record: dict):
        text = json.dumps(record, indent=2, sort_keys=True) + "\n"
        return self.session.run(["sh", "-c", APPLY_AND_RECORD, "apply", self.directory, how, text])

    def _start(self, record: dict) -> str:
        result = self._apply("start", record)
        if not result.ok:
            # nginx retries a busy port and ends with "still could not bind()"; the first error says why.
            emerg = [line.strip() for line in result.stderr.splitlines() if "[emerg]" in line]
            raise NotSwitched(f"{self.session.host}: the nginx front cannot start on {self.listen}:{self.port}: "
                              f"{emerg[0] if emerg else result.said()}",
                              hint="is another program using that port? set deploy.port or ?port= in the host's URL")
        deadline = time.monotonic() + START_WAIT
        while True:
            master, workers = self.processes()
            if master is not None and workers:
                return f"nginx {master} started on {self.listen}:{self.port}"
            if time.monotonic() > deadline:
                raise DeployError(f"{self.session.host}: the nginx front did not come up; "
                                  f"see {self.directory}/error.log on the host")
            time.sleep(POLL)
