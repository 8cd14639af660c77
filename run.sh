#!/usr/bin/env bash
# femplast developer entry point: sets up .venv if needed, then runs the quickstart or the tests.
#   ./run.sh quickstart [femplast args...]   run cases/quickstart.yaml (outputs under runs/)
#   ./run.sh test [pytest args...]           run the test suite (pytest, incl. mpirun -n 2 tests)
set -euo pipefail
cd "$(dirname "$0")"

find_python() {
  local cands=() root
  for c in python3.14 python3.13 python3.12 python3 python; do
    command -v "$c" >/dev/null 2>&1 && cands+=("$(command -v "$c")")
  done
  if command -v pyenv >/dev/null 2>&1; then
    root=$(pyenv root)
    for c in "$root"/versions/3.1[2-9]*/bin/python3; do [ -x "$c" ] && cands+=("$c"); done
  fi
  for c in /root/.pyenv/versions/3.1[2-9]*/bin/python3 /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9]; do
    [ -x "$c" ] && cands+=("$c")
  done
  for c in "${cands[@]}"; do
    # pyenv shims exist for every version but fail unless selected: run them to be sure
    if "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then
      echo "$c"; return 0
    fi
  done
  return 1
}

setup() {
  if [ ! -x .venv/bin/python ]; then
    local py
    if ! py=$(find_python); then
      echo "femplast needs Python >= 3.12, and none was found on PATH or under pyenv." >&2
      echo "Install one (e.g. 'pyenv install 3.12' or Debian's python3.12 + python3.12-venv)." >&2
      exit 1
    fi
    echo "[setup] creating .venv with $py" >&2
    "$py" -m venv .venv
  fi
  local stamp=.venv/.femplast-installed
  local want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup] installing femplast and its dependencies into .venv (about a minute)" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[wheel,test]" 2>&1 \
      | grep -v "^WARNING: Location" >&2 || true
    .venv/bin/python -c "import femplast, dolfinx" || { echo "[setup] install failed" >&2; exit 1; }
    echo "$want" > "$stamp"
    # compile the event loops and FE forms now (numba / FFCx caches), not in the first run
    .venv/bin/python -m femplast.app.compile >&2 \
      || echo "[setup] compiling ahead failed: kernels compile on first use instead" >&2
  fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  quickstart) setup; exec .venv/bin/python -m femplast run cases/quickstart.yaml "$@" ;;
  test) setup; export PATH="$PWD/.venv/bin:$PATH"; exec .venv/bin/python -m pytest -q "$@" ;;
  setup) setup ;;
  *) echo "usage: ./run.sh quickstart|test|setup [args...]" >&2; exit 2 ;;
esac
