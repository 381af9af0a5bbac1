#!/usr/bin/env bash
# The core, native and kit tests on the newest Python and packages pip gives on
# python:3.12-slim (Python 3.13, Django 6.x, the newest gunicorn, celery, django-q2), inside a
# container that shares this machine's network, so it reaches the same PostgreSQL and Redis
# (127.0.0.1:5432 / :6379). scripts/test.sh runs it after the host run (3.11 + Django 5.2).
# Extra arguments go to pytest (e.g. `bash scripts/test-latest.sh tests/native -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
runtime=../shared/tools/container-runtime.sh
if [ -z "${CONTAINERS_CONF:-}" ] && [ -f "$runtime" ]; then
  eval "$(bash "$runtime" 2>/dev/null)"
fi
command -v podman >/dev/null || { echo "test-latest.sh: podman is required" >&2; exit 1; }
# one image per day and pyproject.toml: "newest" is re-resolved daily, and at once after a
# change of the extras
key=$(cat pyproject.toml scripts/latest/Dockerfile | sha256sum | cut -c1-10)
tag="localhost/start-all-latest-tests:$(date -u +%Y%m%d)-$key"
if ! podman image exists "$tag"; then
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp pyproject.toml README.md "$ctx/"
  echo "test-latest.sh: building $tag (pip resolves the newest releases)" >&2
  podman build --format docker -q -t "$tag" -f scripts/latest/Dockerfile "$ctx" >/dev/null
  # older images of this script only (never anyone else's)
  podman images --format '{{.Repository}}:{{.Tag}}' \
    | grep '^localhost/start-all-latest-tests:' | grep -vx "$tag" \
    | xargs -r podman rmi >/dev/null 2>&1 || true
fi
podman run --rm "$tag" sh -c 'python -V; grep -iE "^(django|django-q2|gunicorn|celery|psycopg|django-tasks-db)==" /opt/versions.txt' \
  | sed 's/^/test-latest.sh: /' >&2
args=("$@")
# no test path among the arguments (only options such as -x): the core, native and kit tests
[[ " $* " == *" tests"* ]] || args+=(tests/core tests/native tests/kit)
# --privileged: the tests run start-all as PID 1 of a fresh PID namespace (unshare). The
# source is copied to /tmp/src, so nothing the container writes lands in the checkout, and
# committed there as one snapshot (a test installs start-all from a git URL of it).
exec podman run --rm --network host --privileged \
  -e CI -e DATABASE_URL -e REDIS_URL -v "$PWD:/checkout:ro" "$tag" \
  sh -c 'mkdir /tmp/src && tar -C /checkout --exclude=./.venv --exclude=./.git -cf - . \
         | tar -C /tmp/src -xf - && cd /tmp/src \
         && git init -q && git add -A \
         && git -c user.name=test -c user.email=test@localhost commit -qm snapshot \
         && pip install -q --no-deps --no-build-isolation . >/dev/null \
         && exec python -m pytest -p no:cacheprovider "$@"' test-latest "${args[@]}"
