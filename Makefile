# The two commands of the README, and what they need. Everything installs
# itself: a fresh clone needs only Rust, Python 3 and network access to the
# package registries.

VENV        := .venv
PYTHON      ?= python3
MOTO        := moto[server]==5.2.5
MOTO_SERVER := $(abspath $(VENV))/bin/moto_server

.PHONY: demo test

## demo: run the Lambda binary against moto server: Create, Update, Delete
demo: $(MOTO_SERVER)
	cargo build --locked
	$(VENV)/bin/python scripts/demo.py --binary target/debug/reverse-privatelink --moto-server $(MOTO_SERVER)

## test: all tests (unit, moto integration, protocol, binary through a Runtime API)
test: $(MOTO_SERVER)
	MOTO_SERVER=$(MOTO_SERVER) cargo test --locked

$(MOTO_SERVER):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check '$(MOTO)'
