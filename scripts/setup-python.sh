#!/usr/bin/env bash
# Creates .venv at the repo root with the golden-value generator's requirements (tests/golden/requirements.txt:
# torch CPU + numpy). Idempotent: skips the install when .venv already satisfies the requirements.
# Only the golden fixtures need Python; `./run test` does not.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REQ=tests/golden/requirements.txt
VENV=.venv
STAMP="$VENV/.bdvax-requirements.sha256"
PY="${PYTHON:-python3}"

command -v "$PY" >/dev/null 2>&1 || { echo "setup-python: $PY not found (need Python 3.11)" >&2; exit 1; }
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || echo "setup-python: warning: $("$PY" --version 2>&1) is not Python 3.11; the pinned wheels target 3.11" >&2

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
satisfied() {
  [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
    && "$VENV/bin/python" - "$REQ" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, pin = line.split("==")
    if version(name).split("+")[0] != pin:
        sys.exit(1)
import numpy, torch  # noqa: F401  (importable, not just installed)
PY
}
if satisfied; then
  echo "setup-python: $VENV already satisfies $REQ ($("$VENV/bin/python" -c 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)'))"
  exit 0
fi

# Debian's python3 lacks ensurepip (hence `venv`) unless python3-venv is installed.
if ! "$PY" -c 'import ensurepip' >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup-python: installing python3-venv" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    echo "setup-python: $PY has no ensurepip; install python3-venv (Debian) first" >&2; exit 1
  fi
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
echo "setup-python: installing $REQ into $VENV" >&2
"$VENV/bin/pip" install -q -r "$REQ"
echo "$want" > "$STAMP"
satisfied || { echo "setup-python: $VENV still does not satisfy $REQ after install" >&2; exit 1; }
echo "setup-python: ready ($("$VENV/bin/python" -c 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)'))"
