"""The in-image contract: names an image and the tools that run it agree on.

The launcher inside every image, `imagebuild run`, `imagebuild deploy` and a
disk's start script all read or write these; one module keeps them from
drifting apart. Values only, no I/O.
"""

from __future__ import annotations

from typing import Mapping

# Paths inside the image
LAUNCHER_PATH = "/usr/local/bin/imagebuild-launch"   # the image's entrypoint (launcher/launch.sh)
CONFIG_DIR = "/etc/imagebuild"                       # the files the launcher reads
RUN_DIR = "/run/imagebuild"                          # where the launcher writes config.json and features.json
RUNTIME_MODULE = "imagebuild_runtime"                # the Python helper's module name

# Environments
DEFAULT_ENVIRONMENT = "default"                      # the one environment of a recipe that names none
DEFAULT_VARIABLE = "IMAGEBUILD_ENV"                  # what the launcher reads when the image names no other
DIGEST_VARIABLE = "IMAGEBUILD_IMAGE_DIGEST"          # the image's manifest digest, set by whoever starts it

# Image labels (config Labels and manifest annotations)
ANNOTATION_DIRTY = "dev.imagebuild.dirty"
ANNOTATION_ENVIRONMENTS = "dev.imagebuild.environments"
ANNOTATION_ENV_VARIABLE = "dev.imagebuild.env-variable"   # the variable that names the environment at start

# Container labels
RUN_LABEL = "dev.imagebuild.run"                     # a container `imagebuild run` started
DEPLOY_LABEL = "dev.imagebuild.deploy."              # prefix of the labels on a deployed container
KUBERNETES_LABEL = "dev.imagebuild/"                 # prefix of the labels and annotations on cluster objects


def launcher_variable(labels: Mapping[str, str] | None) -> str:
    """The variable an image's launcher reads for the environment's name, from the image's labels;
    images baked before the label existed read the default."""
    return (labels or {}).get(ANNOTATION_ENV_VARIABLE) or DEFAULT_VARIABLE
