#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian/Ubuntu machine: installs the system packages the
# tests need when they are missing (gnupg, OpenSSH server and client, sqlite3), creates a
# virtual environment, installs the project as users install it, and runs pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k rules
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v gpg >/dev/null 2>&1 || need+=(gnupg)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required")'
VENV="${CCM_TEST_VENV:-.venv-test}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
# A regular (non-editable) install: the tests run against the package as users get it.
log="$VENV/install.log"
if ! { "$VENV/bin/python" -m pip install --upgrade --force-reinstall --no-deps . &&
       "$VENV/bin/python" -m pip install '.[test]'; } >"$log" 2>&1; then
  tail -40 "$log"
  echo "installing the project failed (full log: $log)" >&2
  exit 1
fi

# Run from the repository with the root kept off sys.path (tests/conftest.py): hl7/ would
# otherwise shadow the python-hl7 package.
exec "$VENV/bin/pytest" -q -p no:cacheprovider "$@"
