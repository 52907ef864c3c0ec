#!/usr/bin/env bash
# Create the virtual environment (.venv, or $BULKLABEL_VENV) and install bulklabel into it.
#   bash scripts/setup.sh [EXTRAS]     e.g. "test" or "parquet,sample"
# Re-running is cheap: pip runs again only when pyproject.toml changed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${BULKLABEL_VENV:-$root/.venv}
extras=${1:-}
python=${PYTHON:-python3}

if ! "$python" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)'; then
  echo "bulklabel needs Python 3.10-3.13 (TensorFlow's range); found: $("$python" --version 2>&1)." >&2
  echo "Set PYTHON=/path/to/python3.X and run again." >&2
  exit 2
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtual environment in $venv" >&2
  "$python" -m venv "$venv"
fi
stamp="$venv/.bulklabel-installed-${extras:-base}"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "installing bulklabel${extras:+[$extras]} and its dependencies (TensorFlow is large: the first time takes a few minutes)" >&2
  log="$venv/pip-install.log"
  if ! { "$venv/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
         "$venv/bin/python" -m pip install --disable-pip-version-check -e "$root${extras:+[$extras]}"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "installation failed; the whole log is in $log" >&2
    exit 1
  fi
  touch "$stamp"
fi

# The report test opens a page in a real headless browser: Debian's chromium, driven by the
# playwright package (which never downloads a browser here).
case ",$extras," in
  *,test,*)
    if ! command -v chromium >/dev/null 2>&1; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium with apt-get (for the report's browser test)" >&2
        log="$venv/apt-chromium.log"
        if ! { apt-get update -q &&
               DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                 chromium fonts-dejavu-core; } >"$log" 2>&1; then
          tail -n 20 "$log" >&2
          echo "installing chromium failed; the whole log is in $log" >&2
          echo "the report's browser test will fail until chromium is on PATH (or set BULKLABEL_SKIP_BROWSER=1)" >&2
        fi
      else
        echo "note: chromium is not on PATH; the report's browser test needs it. Install it, e.g." >&2
        echo "  sudo apt-get install --no-install-recommends chromium fonts-dejavu-core" >&2
        echo "or set BULKLABEL_SKIP_BROWSER=1 to skip that test." >&2
      fi
    fi
    ;;
esac
