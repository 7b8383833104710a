"""The two rules the cluster rollout decides by, as pure functions of objects shaped as the API server
sends them: when a Deployment has rolled out (kubectl's rule), and which pod states waiting cannot
mend. The calls that fetch those objects are tested against a real cluster (test_kubernetes_apply.py)."""

from __future__ import annotations

import pytest

from imagebuild.release.kubernetes.apply import _stuck, rollout_state


def deployment(generation=2, observed=2, wanted=3, **status):
    return {"metadata": {"generation": generation}, "spec": {"replicas": wanted},
            "status": {"observedGeneration": observed, **status}}


@pytest.mark.parametrize("found,done,says", [
    (deployment(observed=1, replicas=3, updatedReplicas=3, availableReplicas=3), False, "controller"),
    (deployment(replicas=3, updatedReplicas=2, availableReplicas=3), False, "2 of 3 updated"),
    (deployment(replicas=4, updatedReplicas=3, availableReplicas=3), False, "1 old"),        # an old pod left
    (deployment(replicas=3, updatedReplicas=3, availableReplicas=2), False, "2 available"),
    (deployment(replicas=3, updatedReplicas=3, availableReplicas=3), True, "3 of 3 updated, 3 available, 0 old"),
    (deployment(wanted=2, replicas=3, updatedReplicas=3, availableReplicas=3), True, "3 of 2 updated"),  # a surge
])
def test_a_deployment_is_rolled_out_when_every_replica_is_new_and_available(found, done, says):
    state = rollout_state(found)
    assert state[0] is done and says in state[1]


def pod(reason, message="", init=False):
    statuses = [{"name": "app", "state": {"waiting": {"reason": reason, "message": message}}}]
    return {"metadata": {"name": "web-1"},
            "status": {("initContainerStatuses" if init else "containerStatuses"): statuses}}


def test_pods_that_waiting_will_not_start_are_named_with_the_reason():
    said = _stuck(pod("CreateContainerConfigError", 'secret "web-secrets" not found'))
    assert said == 'pod web-1: CreateContainerConfigError: secret "web-secrets" not found'
    assert _stuck(pod("CrashLoopBackOff", init=True)).startswith("pod web-1: CrashLoopBackOff")
    assert _stuck(pod("ImagePullBackOff")) is not None
    for passing in ("ContainerCreating", "PodInitializing", "ErrImagePull"):     # may still come right
        assert _stuck(pod(passing)) is None
    assert _stuck({"metadata": {"name": "web-1"}, "status": {}}) is None
