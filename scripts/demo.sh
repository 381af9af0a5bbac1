#!/usr/bin/env bash
# Run the booking demo (examples/koyeb) under start-all on this machine: migrations first
# (release:), then gunicorn and the django-q2 worker, supervised as in the container.
# SQLite in examples/koyeb/data unless DATABASE_URL is set. PORT defaults to 8000.
# Ctrl-C stops everything cleanly.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
if ! "$VENV/bin/python" -c "import supervisor, django_q, gunicorn, croniter" 2>/dev/null \
   || [ ! -x "$VENV/bin/start-all" ]; then
  echo "demo: installing start-all with the django extra into $VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[django]"
fi
if [ -n "${DATABASE_URL:-}" ] && ! "$VENV/bin/python" -c "import psycopg" 2>/dev/null; then
  "$VENV/bin/pip" install -q --disable-pip-version-check "psycopg[binary]>=3.1"
fi

cd "$ROOT/examples/koyeb"
export PORT="${PORT:-8000}"
export PATH="$VENV/bin:$PATH"
echo "demo: the booking app will be at http://127.0.0.1:$PORT/ (health: /healthz)." \
     "Ctrl-C stops it." >&2
exec "$VENV/bin/start-all"
