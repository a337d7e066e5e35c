#!/usr/bin/env bash
# System packages the tests and `make serve STACK=team` need, from Debian's archive: PostgreSQL (the team stack's
# database; tests/integration/test_team.py starts its own cluster). Idempotent and quick when everything is there:
# apt-get runs only for what is missing. Needs root (CI runs as root); as another user it only reports.
#
#   scripts/system-deps.sh            # install what is missing
#   CDCO_SYSTEM_DEPS=skip make test   # never touch the system
#
# Other features add their packages to PACKAGES below (command to probe, package to install).
set -euo pipefail

if [ "${CDCO_SYSTEM_DEPS:-}" = "skip" ]; then
    exit 0
fi

# "probe package": the probe is a command on PATH or an absolute path glob that exists once installed.
PACKAGES=(
    "/usr/lib/postgresql/*/bin/initdb postgresql"
    # the browser test of the MLflow UI (tests/integration/test_browser.py): Playwright drives Debian's chromium
    "chromium chromium"
)

missing=()
for entry in "${PACKAGES[@]}"; do
    probe=${entry% *}
    pkg=${entry##* }
    if [[ $probe == /* ]]; then
        # shellcheck disable=SC2086 # the glob must expand
        compgen -G "$probe" >/dev/null && continue
    else
        command -v "$probe" >/dev/null 2>&1 && continue
    fi
    missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: missing ${missing[*]}; install as root: sudo $0 (or apt-get install ${missing[*]})" >&2
    exit 1
fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: the server binaries only; no cluster is created or started by us here (Debian's
# postgresql-common may create a default cluster on install; nothing in cdco uses it).
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
