# Two commands: `make demo` and `make test`. Both install what is missing
# (infra/dev/setup is idempotent) and start the services they need.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ENV_FILE := .lectern/env
# Load the connection settings written by `infra/dev/services up`.
WITH_ENV := set -a; . ./$(ENV_FILE); set +a;

.PHONY: all setup services services-down test-clients test lint fmt-check clippy nextest npm-test demo build

all: test

setup:
	infra/dev/setup

services: setup
	infra/dev/services up

services-down:
	infra/dev/services down

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

lint: fmt-check clippy

# Real third-party protocol clients the tests drive (tus-js-client, tuspy).
test-clients: setup
	ingest/tests/clients/setup

# The whole suite, against the real PostgreSQL, Redis and Garage S3 server.
nextest: services test-clients
	@$(WITH_ENV) echo "make: tests use PostgreSQL at $${DATABASE_URL}, Redis at $${REDIS_URL}, S3 (Garage) at $${LECTERN_S3_ENDPOINT} bucket $${LECTERN_S3_BUCKET}"
	$(WITH_ENV) cargo nextest run --workspace --locked --no-fail-fast

npm-test:
	@if [ -f player-sdk/package.json ] && grep -q '"test"' player-sdk/package.json; then \
		cd player-sdk && npm ci --no-audit --no-fund && npm test; \
	else echo "make: player-sdk has no npm tests yet"; fi

test: setup services lint nextest npm-test

build: setup
	cargo build --locked --bin lectern

# Embedded defaults: a private PostgreSQL under .lectern/pg, objects on local disk.
demo: build
	env -u DATABASE_URL cargo run --locked --quiet --bin lectern -- demo
