"""The Kubernetes API calls a deploy and `status` make, through the official client, as plain JSON.

The client (PyPI `kubernetes`, the `imagebuild[kubernetes]` extra) is imported only here and only when
a command talks to a cluster. Every answer is the JSON the API server sent, not the client's models, so
a template read from a ReplicaSet can be put back exactly (the rollback). Errors become one line: the
API server's own message (a Status never carries a Secret's values), or that it cannot be reached.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from imagebuild.errors import DeployError, UserError

REQUEST_TIMEOUT = 30          # seconds one API request may take
APPLY = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"
_MESSAGE = 300                # characters of an API server's message kept in an error line


class Cluster:
    """One kubeconfig context (None: the kubeconfig's current one; inside a pod, its service account)."""

    def __init__(self, context: str | None, field_manager: str):
        try:
            from kubernetes import client, config
        except ImportError:
            raise UserError("talking to a cluster needs the Kubernetes client, which is not installed",
                            hint="pip install 'imagebuild[kubernetes]'") from None
        self.field_manager = field_manager
        try:
            api = config.new_client_from_config(context=context, persist_config=False)
        except config.ConfigException as exc:
            api = self._in_cluster(client, config, context, exc)
        except Exception as exc:  # the client fails on a malformed file with whatever it meets first
            raise UserError(f"cannot read the kubeconfig {_kubeconfig_names()}: {_malformed(exc)}",
                            hint="check it with `kubectl config view`") from None
        self.server = api.configuration.host
        self.context = context
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self._api = api

    @staticmethod
    def _in_cluster(client, config, context: str | None, exc: Exception):
        """No kubeconfig: inside a pod, its service account (only when no context was asked for)."""
        if context is None:
            try:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                return client.ApiClient(configuration)
            except config.ConfigException:
                pass
        wanted = f"context {context!r}" if context else "a current context"
        raise UserError(f"no kubeconfig with {wanted}: {' '.join(str(exc).split())[:_MESSAGE]}",
                        hint="set KUBECONFIG, or name an existing context in kubernetes.context") from None

    def close(self) -> None:
        self._api.close()

    # -- plain calls ---------------------------------------------------------------------------

    def call(self, what: str, method: Callable[..., Any], *args: Any, missing_ok: bool = True,
             raw: bool = False, **kwargs: Any) -> Any:
        """`method`'s answer as JSON (or text with `raw`); None for 404 when `missing_ok`."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            answer = method(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as exc:
            if exc.status == 404 and missing_ok:
                return None
            raise DeployError(f"{what}: the API server at {self.server} answered {exc.status} "
                              f"{exc.reason}: {_status_message(exc.body)}") from None
        except (HTTPError, OSError) as exc:
            raise DeployError(f"{what}: cannot reach the API server at {self.server} ({_why(exc)})",
                              hint="check the cluster and the kubeconfig's server address") from None
        data = answer.data
        if raw:
            return data.decode("utf-8", "replace")
        return json.loads(data)

    def read(self, kind: str, namespace: str, name: str) -> dict | None:
        method = {"Deployment": self.apps.read_namespaced_deployment, "Service": self.core.read_namespaced_service,
                  "Job": self.batch.read_namespaced_job}[kind]
        return self.call(f"read {kind} {namespace}/{name}", method, name, namespace)

    def apply(self, document: dict) -> dict:
        """Server-side apply, conflicts forced: imagebuild owns the fields it writes."""
        kind, meta = document["kind"], document["metadata"]
        method = {"Deployment": self.apps.patch_namespaced_deployment, "Service": self.core.patch_namespaced_service,
                  "Job": self.batch.patch_namespaced_job}[kind]
        return self.call(f"apply {kind} {meta['namespace']}/{meta['name']}", method, meta["name"], meta["namespace"],
                         document, field_manager=self.field_manager, force=True, _content_type=APPLY,
                         missing_ok=False)

    def replace_template(self, namespace: str, name: str, template: dict) -> dict:
        """The Deployment's pod template replaced whole (a JSON patch), as `kubectl rollout undo` does."""
        patch = [{"op": "replace", "path": "/spec/template", "value": template}]
        return self.call(f"roll back Deployment {namespace}/{name}", self.apps.patch_namespaced_deployment, name,
                         namespace, patch, field_manager=self.field_manager, _content_type=JSON_PATCH,
                         missing_ok=False)

    def delete_job(self, namespace: str, name: str) -> None:
        self.call(f"delete Job {namespace}/{name}", self.batch.delete_namespaced_job, name, namespace,
                  propagation_policy="Background")

    def replica_sets(self, namespace: str, selector: str) -> list[dict]:
        found = self.call(f"list ReplicaSets in {namespace}", self.apps.list_namespaced_replica_set, namespace,
                          label_selector=selector, missing_ok=False)
        return found.get("items") or []

    def pods(self, namespace: str, selector: str) -> list[dict]:
        found = self.call(f"list pods in {namespace}", self.core.list_namespaced_pod, namespace,
                          label_selector=selector, missing_ok=False)
        return found.get("items") or []

    def last_event(self, namespace: str, pod: str) -> str | None:
        """The newest warning about a pod (a failed probe says what it saw), or None."""
        found = self.call(f"list events of pod {namespace}/{pod}", self.core.list_namespaced_event, namespace,
                          field_selector=f"involvedObject.name={pod},type=Warning") or {}
        events = sorted(found.get("items") or [], key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return _one_line(events[-1].get("message")) if events else None

    def log_tail(self, namespace: str, pod: str, container: str) -> str | None:
        """The last line a container wrote, or None."""
        text = self.call(f"read the log of pod {namespace}/{pod}", self.core.read_namespaced_pod_log, pod, namespace,
                         container=container, tail_lines=5, raw=True)
        lines = [line for line in (text or "").splitlines() if line.strip()]
        return _one_line(lines[-1]) if lines else None


def _kubeconfig_names() -> str:
    return os.environ.get("KUBECONFIG") or "~/.kube/config"


def _malformed(exc: Exception) -> str:
    """What is wrong with a kubeconfig, without quoting it: its lines can hold tokens."""
    import yaml

    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        return f"not valid YAML (line {exc.problem_mark.line + 1})"
    if isinstance(exc, yaml.YAMLError):
        return "not valid YAML"
    return f"not a kubeconfig ({type(exc).__name__})"


def _why(exc: BaseException) -> str:
    """The innermost reason a connection failed (`Connection refused`), else the error's kind."""
    seen, found = set(), None
    pending = [exc]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            found = current.strerror
        pending += [getattr(current, "reason", None), current.__cause__, current.__context__]
    return found or type(exc).__name__


def _status_message(body: Any) -> str:
    try:
        message = json.loads(body).get("message")
    except (TypeError, ValueError, AttributeError):
        message = None
    return _one_line(message or "no message")


def _one_line(text: Any) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _MESSAGE else line[:_MESSAGE] + "..."
