#!/usr/bin/env bash
# Set up, then label the bundled sample photos with the bundled model, in this process.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/setup.sh
venv=${BULKLABEL_VENV:-$root/.venv}
"$venv/bin/bulklabel" classify sample/images --model sample/model.keras --out sample-predictions.jsonl "$@"
echo
echo "first records of sample-predictions.jsonl:"
head -n 3 sample-predictions.jsonl
echo "error records:"
grep -v '"error":null' sample-predictions.jsonl || echo "(none)"
