# The two front-door commands: `make demo` runs the main job, `make test` passes the tests.
# Each does all of its own set-up on a fresh Debian machine.

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup services demo test bench clean

setup:
	bash scripts/setup-system.sh

services: setup
	bash scripts/services.sh

demo: setup
	bash scripts/demo.sh

test: services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: services
	$(BIN)/python bench/layer_writer.py

clean:
	rm -rf $(VENV) build *.egg-info
