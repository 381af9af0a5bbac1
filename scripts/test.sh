#!/usr/bin/env bash
# The whole test suite, from a fresh clone: venv, every extra, container runtime, lint, pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/test_runtime.py -x`) and skip
# the second run on the newest Python and Django (scripts/test-latest.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
# podman for the container tests (the shared set-up script sits beside the clone).
runtime=../shared/tools/container-runtime.sh
if [ -x "$runtime" ] || [ -f "$runtime" ]; then
  eval "$(bash "$runtime")"
fi
# system programs some tests drive for real: a transaction-mode pooler, compose validation,
# wrk (the chaos suite's load on the web)
missing=()
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v wrk >/dev/null || missing+=(wrk)
command -v docker-compose >/dev/null || missing+=(docker-compose)
if ((${#missing[@]})) && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "test.sh: installing ${missing[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
.venv/bin/ruff check .
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
# pytest exits 5 when it collected nothing: that is a failure too.
[ "$rc" -eq 5 ] && echo "pytest collected no tests" >&2 && exit 1
# The whole run (no arguments) also runs the core, native and kit tests on what pip gives on
# python:3.12-slim (Python 3.13, Django 6): scripts/test-latest.sh, in a container.
# START_ALL_TEST_LATEST=0 skips it.
if [ "$#" -eq 0 ] && [ "${START_ALL_TEST_LATEST:-1}" != 0 ]; then
  set +e
  bash scripts/test-latest.sh
  latest=$?
  set -e
  [ "$latest" -ne 0 ] && [ "$rc" -eq 0 ] && rc=$latest
fi
exit "$rc"
