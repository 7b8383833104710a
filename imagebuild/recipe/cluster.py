"""An environment's Kubernetes target (`environments[].kubernetes`): its names, checked when the recipe loads.

The API server would refuse most of these values too, but only at the first deploy and in its own words;
here each one is a recipe line. No I/O.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Callable, NoReturn

from imagebuild.recipe.model import Environment, Recipe

Fail = Callable[..., NoReturn]

# RFC 1123 label (namespaces) and subdomain (Secrets); RFC 1035 label (Services: must start with a letter).
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
# A Job's name is NAME-contract-<12 hex>, and the pods' job-name label holds it: at most 63 characters.
MAX_NAME = 63 - len("-contract-") - 12
RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
MAX_REPLICAS = 1000
MAX_SECONDS = 86_400
_QUANTITY = re.compile(r"^(?P<number>[0-9]+(\.[0-9]+)?|\.[0-9]+)(?P<suffix>[numkMGTPE]|Ki|Mi|Gi|Ti|Pi|Ei)?\Z")
_SUFFIX = {None: Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
           "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
           "P": Decimal(10) ** 15, "E": Decimal(10) ** 18, "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20,
           "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60}


def object_name(recipe: Recipe, env: Environment) -> str:
    """The name of the environment's Deployment and Service (its Jobs add a suffix): kubernetes.name,
    else NAME-ENV with the image name's `/`, `.` and `_` as `-`."""
    if env.kubernetes is not None and env.kubernetes.name:
        return env.kubernetes.name
    return re.sub(r"[/._]+", "-", recipe.name) + "-" + env.name


def quantity(text: str) -> Decimal | None:
    """A Kubernetes quantity's value (`250m` -> 0.25, `1Gi` -> 1073741824), None when it is none."""
    found = _QUANTITY.match(text)
    if not found:
        return None
    try:
        return Decimal(found.group("number")) * _SUFFIX[found.group("suffix")]
    except InvalidOperation:
        return None


def check_kubernetes(recipe: Recipe, fail: Fail) -> None:
    for index, env in enumerate(recipe.environments):
        if env.kubernetes is not None:
            _check_one(recipe, env, f"environments[{index}]", fail)


def _check_one(recipe: Recipe, env: Environment, where: str, fail: Fail) -> None:
    spec = env.kubernetes
    key = f"{where}.kubernetes"
    if env.hosts:
        fail(key, f"environment {env.name!r} names both hosts and a cluster; it deploys to one of them",
             "keep hosts: for SSH, or kubernetes: for the cluster")
    if not _DNS_LABEL.match(spec.namespace) or len(spec.namespace) > 63:
        fail(f"{key}.namespace", f"{spec.namespace!r} is not a namespace name",
             "lowercase letters, digits and -, at most 63 characters, e.g. shop")
    if spec.context is not None and (not spec.context or not spec.context.isprintable()
                                     or any(c.isspace() for c in spec.context) or len(spec.context) > 253):
        fail(f"{key}.context", f"{spec.context!r} is not a kubeconfig context name",
             "the name `kubectl config get-contexts` shows")
    name = object_name(recipe, env)
    if not _DNS_1035.match(name) or len(name) > MAX_NAME:
        written = f"{key}.name" if spec.name else key
        fail(written, f"{name!r} cannot name the Deployment, Service and Jobs",
             f"a lowercase letter, then letters, digits and -, at most {MAX_NAME} characters"
             + ("" if spec.name else "; set kubernetes.name"))
    if not 1 <= spec.replicas <= MAX_REPLICAS:
        fail(f"{key}.replicas", f"must be 1 to {MAX_REPLICAS}")
    for label, value in (("secret", spec.secret), ("pull_secret", spec.pull_secret)):
        if value is not None and (not _DNS_SUBDOMAIN.match(value) or len(value) > 253):
            fail(f"{key}.{label}", f"{value!r} is not the name of a Secret",
                 "the Secret's name only, e.g. shop-prod; its values stay in the cluster")
    if env.secrets and spec.secret is None:
        fail(f"{key}.secret", f"missing: environment {env.name!r} needs {', '.join(env.secrets)} at run time, and "
             "only a Secret can give them to its pods", "name the Secret that holds them, e.g. secret: shop-prod")
    _check_resources(spec.resources, f"{key}.resources", fail)
    if not 1 <= spec.service.port <= 65535:
        fail(f"{key}.service.port", f"{spec.service.port} is not a TCP port", "use 1-65535, e.g. 80")
    if spec.service.type not in SERVICE_TYPES:
        fail(f"{key}.service.type", f"{spec.service.type!r} is not a Service type", f"use {', '.join(SERVICE_TYPES)}")
    for label in ("rollout_timeout", "job_timeout"):
        if not 1 <= getattr(spec, label) <= MAX_SECONDS:
            fail(f"{key}.{label}", f"must be 1 to {MAX_SECONDS} seconds")


def _check_resources(resources, key: str, fail: Fail) -> None:
    values: dict[str, dict[str, Decimal]] = {}
    for kind in ("requests", "limits"):
        values[kind] = {}
        for name, text in getattr(resources, kind).items():
            if name not in RESOURCE_NAMES:
                fail(f"{key}.{kind}.{name}", f"{name!r} is not a container resource", f"use {', '.join(RESOURCE_NAMES)}")
            amount = quantity(text)
            if amount is None or amount <= 0:
                fail(f"{key}.{kind}.{name}", f"{text!r} is not a positive Kubernetes quantity",
                     "e.g. 250m or 1 for cpu, 256Mi or 1Gi for memory")
            values[kind][name] = amount
    for name, request in values["requests"].items():
        limit = values["limits"].get(name)
        if limit is not None and request > limit:
            fail(f"{key}.requests.{name}", f"{resources.requests[name]} is more than its limit "
                 f"{resources.limits[name]}", "a request must not exceed the limit")
