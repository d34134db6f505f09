# Mainstay recipes. Run them through ./dev, which installs the tools and syncs .venv first.

set shell := ["bash", "-euo", "pipefail", "-c"]

python := ".venv/bin/python"

# list the recipes
default:
    @just --list

# start the embedded broker, PostgreSQL and every service (idempotent)
up:
    {{python}} -m mainstay_common.devstack up

# stop exactly what `up` started
down:
    {{python}} -m mainstay_common.devstack down

# show each component as up/down with its address
status:
    {{python}} -m mainstay_common.devstack status

# print the logs of one component (broker, postgres or a service), or of all
logs svc="":
    {{python}} -m mainstay_common.devstack logs {{svc}}

# start the mesh if needed and run a real workload through it
demo:
    {{python}} -m mainstay_common.devstack demo

# lint, types, generated files, then every test (fast tier and real broker + PostgreSQL)
test *args: lint typecheck gen-check
    #!/usr/bin/env bash
    set -uo pipefail
    .venv/bin/pytest {{args}}
    code=$?
    if [ "$code" -eq 5 ]; then
        echo "test: pytest collected no tests; that is a failure, not a pass" >&2
        exit 1
    fi
    exit "$code"

# ruff: lint and formatting
lint:
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .

# mypy --strict over every package, service and benchmark
typecheck:
    #!/usr/bin/env bash
    set -euo pipefail
    shopt -s nullglob
    .venv/bin/mypy libs/common/src libs/contracts/src libs/client/src services/*/src bench

# regenerate schemas, topics.yaml, AsyncAPI documents and protobuf code
gen:
    {{python}} -m mainstay_common.codegen gen

# fail when a generated file is stale or a schema change is not backward compatible
gen-check:
    {{python}} -m mainstay_common.codegen check

# run one benchmark (bench/<name>.py); its last line is one JSON object
bench name:
    {{python}} bench/{{name}}.py
