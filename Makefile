VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= serve_config.yaml
export RAY_AUTH_MODE ?= disabled
# Serve's proxy reaches the ingress over gRPC rather than Ray actor calls (see the README's results); this holds
# where HAProxy is off (HAPROXY=0) and in tests/cluster
export RAY_SERVE_PROXY_USE_GRPC ?= 1
# Serve's HAProxy ingress in place of its Python proxy (README, results); `make serve HAPROXY=0` runs without it
HAPROXY ?= 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install weights system-packages serve test lint bench

install: $(STAMP) weights

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $(STAMP)

weights: $(STAMP)
	$(PY) -m app.weights prepare --config $(CONFIG)

serve: install
	$(if $(filter 1,$(HAPROXY)),env $$($(PY) -m app.haproxy --config $(CONFIG))) $(VENV)/bin/serve run $(CONFIG)

lint: $(STAMP)
	$(VENV)/bin/ruff check app deployments tests
	$(VENV)/bin/mypy app deployments

# what the tests start themselves (redis-server, promtool); apt-installed when missing
system-packages:
	bash scripts/system-packages.sh

# tests/cluster runs a two-node Ray cluster of its own, so it is a pytest session of its own
test: install system-packages lint
	$(PY) -m pytest -q -ra
	$(PY) -m pytest -q -ra tests/cluster

bench: install
	$(PY) -m bench
