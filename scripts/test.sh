#!/usr/bin/env bash
# Set up (with the test extras), make sure Redis is there, lint, then run the whole test suite.
# Extra args go to pytest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/setup.sh test
bash scripts/ensure-redis.sh
venv=${BULKLABEL_VENV:-$root/.venv}
echo "ruff check (settings in pyproject.toml)" >&2
"$venv/bin/python" -m ruff check --no-cache "$root"
exec "$venv/bin/python" -m pytest "$@"
