#!/usr/bin/env bash
# Install what the local Unleash 8 + PostgreSQL 15 stack needs (run as root).
#
#   * Debian packages: postgresql (15 on Debian 12) and chromium (for the browser test)
#   * unleash-server 8.x into services/unleash/node/node_modules (from package-lock.json)
#   * Python packages: openfeature-provider-unleash and playwright (the Python package only;
#     the browser is Debian's /usr/bin/chromium, never a downloaded build)
#
# Idempotent: every step is skipped when its result is already present.
# Environment: PYTHON (default: python3) selects the interpreter that gets the Python packages;
# they are installed with the repository's constraints.txt.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODE_DIR="$HERE/node"
CONSTRAINTS="$HERE/../../constraints.txt"
PYTHON="${PYTHON:-python3}"
APT_PACKAGES=(postgresql chromium)

log() { printf '[install] %s\n' "$*"; }

if [[ "$(id -u)" != "0" ]]; then
    echo "install.sh must run as root (it uses apt-get)" >&2
    exit 1
fi

# --- Debian packages --------------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    log "apt-get update"
    apt-get update -qq
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    log "apt packages present: ${APT_PACKAGES[*]}"
fi

if [[ ! -x /usr/lib/postgresql/15/bin/initdb ]]; then
    echo "PostgreSQL 15 binaries not found in /usr/lib/postgresql/15/bin" >&2
    exit 1
fi

# --- unleash-server (npm) ---------------------------------------------------------------------
unleash_version() {
    node -p "JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8')).version" \
        "$NODE_DIR/node_modules/unleash-server/package.json" 2>/dev/null || true
}

installed_unleash="$(unleash_version)"
hidden_lock="$NODE_DIR/node_modules/.package-lock.json"
node_modules_current=0
if [[ "$installed_unleash" == 8.* && "$hidden_lock" -nt "$NODE_DIR/package.json" ]]; then
    # npm writes node_modules/.package-lock.json last; older than the lock file = stale.
    if [[ ! -f "$NODE_DIR/package-lock.json" || "$hidden_lock" -nt "$NODE_DIR/package-lock.json" ]]; then
        node_modules_current=1
    fi
fi
if ((node_modules_current)); then
    log "unleash-server $installed_unleash present"
else
    npm_args=(--no-audit --no-fund --omit=dev --loglevel=error)
    if [[ -f "$NODE_DIR/package-lock.json" ]]; then
        log "npm ci (unleash-server 8.x)"
        (cd "$NODE_DIR" && npm ci "${npm_args[@]}")
    else
        log "npm install (unleash-server 8.x)"
        (cd "$NODE_DIR" && npm install "${npm_args[@]}")
    fi
    installed_unleash="$(unleash_version)"
    if [[ "$installed_unleash" != 8.* ]]; then
        echo "unleash-server 8.x did not install (found: '${installed_unleash:-nothing}')" >&2
        exit 1
    fi
    log "unleash-server $installed_unleash installed"
fi

# --- Python packages --------------------------------------------------------------------------
if "$PYTHON" -c "import openfeature.contrib.provider.unleash, playwright, httpx" 2>/dev/null; then
    log "python packages present"
else
    log "pip install openfeature-provider-unleash playwright"
    constraints=()
    if [[ -f "$CONSTRAINTS" ]]; then
        constraints=(-c "$CONSTRAINTS")
    fi
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "${constraints[@]}" \
        openfeature-provider-unleash playwright httpx
fi

log "done"
