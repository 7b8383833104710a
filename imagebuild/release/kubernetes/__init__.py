"""`imagebuild deploy` and `status` for an environment that names a cluster (`environments[].kubernetes`).

manifests.py  the Deployment, Service and migration Jobs of an environment at one digest (pure)
apply.py      server-side apply through the official client: expand Job, rollout, rollback, contract Job
status.py     what the cluster runs for the environment

docs/deploy.md ("When you outgrow SSH") says what was tested where.
"""
