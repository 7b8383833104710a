"""Extra docker-registry instances with authentication, started per test module."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from tests.registry_support.images import free_port

HERE = Path(__file__).resolve().parent


class RegistryExited(RuntimeError):
    pass


class RegistryProcess:
    def __init__(self, template: str, workdir: Path, **values: str):
        workdir.mkdir(parents=True, exist_ok=True)
        # free_port() names a port that was free a moment ago; another process may take it before
        # the registry binds it, so a registry that exits at once is started again on a new port.
        for attempt in range(3):
            self._start(template, workdir, values)
            try:
                self._wait()
                return
            except RegistryExited:
                self.stop()
                if attempt == 2:
                    raise
            except BaseException:
                self.stop()  # a registry that never answered must not outlive the test run
                raise

    def _start(self, template: str, workdir: Path, values: dict[str, str]) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        text = (HERE / template).read_text()
        fill = {"ROOT": str(workdir / "data"), "ADDR": self.address, **values}
        for key, value in fill.items():
            text = text.replace(f"@{key}@", value)
        config = workdir / "config.yml"
        config.write_text(text)
        self.log = open(workdir / "registry.log", "ab")
        self.process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=self.log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def _wait(self) -> None:
        for _ in range(150):
            if self.process.poll() is not None:
                raise RegistryExited(f"docker-registry exited; see {self.log.name}")
            try:
                httpx.get(f"http://{self.address}/v2/", timeout=1)  # 200 or 401: it answers
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"docker-registry on {self.address} did not come up; see {self.log.name}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    lines = []
    for user, password in users.items():
        done = subprocess.run(["htpasswd", "-Bbn", user, password], capture_output=True, text=True, check=True)
        lines.append(done.stdout.strip())
    path.write_text("\n".join(lines) + "\n")
    return path
