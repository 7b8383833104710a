# The two front-door commands: `make demo` runs the main job, `make test` passes the tests.
# Each does all of its own set-up on a fresh Debian machine.

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup services demo test test-unit bench bench-layer-writer bench-registry bench-bake bench-docker-load bench-deploy bench-fleet bench-migrations bench-disk bench-everyday bench-cold-runner bench-java-layers bench-lock clean

setup:
	bash scripts/setup-system.sh

services: setup
	bash scripts/services.sh

demo: setup
	bash scripts/demo.sh

test: services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast tests only: no dockerd, registry, sshd, qemu, mmdebstrap or network (see tests/conftest.py).
test-unit: setup
	$(BIN)/python -m pytest -m "not integration" -n 2 $(PYTEST_ARGS)

# Each benchmark measures imagebuild side by side with a peer tool in one run.
bench: bench-layer-writer bench-registry bench-bake bench-docker-load bench-deploy bench-fleet bench-migrations bench-disk bench-everyday bench-cold-runner bench-java-layers bench-lock

bench-layer-writer: services
	$(BIN)/python bench/layer_writer.py

bench-registry: services
	$(BIN)/python bench/registry.py

bench-everyday: services
	$(BIN)/python bench/everyday.py

bench-bake: services
	$(BIN)/python bench/bake.py

bench-docker-load: services
	$(BIN)/python bench/docker_load.py

bench-deploy: services
	$(BIN)/python bench/deploy.py

bench-fleet: services
	$(BIN)/python bench/fleet.py

bench-migrations: services
	$(BIN)/python bench/migrations.py

bench-disk: services
	$(BIN)/python bench/disk.py

bench-cold-runner: services
	$(BIN)/python bench/cold_runner.py

bench-java-layers: services
	$(BIN)/python bench/java_layers.py

# `imagebuild lock`: nothing changed, one requirement changed (and, with --debian, one Debian package).
bench-lock: setup
	$(BIN)/python bench/lock.py

clean:
	rm -rf $(VENV) build *.egg-info
