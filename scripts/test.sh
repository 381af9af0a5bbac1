#!/usr/bin/env bash
# The whole test suite, from a fresh clone: venv, every extra, container runtime, lint, pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/test_runtime.py -x`).
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
exit "$rc"
