#!/usr/bin/env bash
# Install Debian's prometheus package (2.42 on Debian 12) for the local Prometheus (run as root).
#
# Idempotent: nothing is done when the package is already installed. Recommended packages
# (node exporter and its collectors) are not installed: only the server is used. No service is
# started (there is no systemd here); start.py runs the binary itself.
set -euo pipefail

log() { printf '[install] %s\n' "$*"; }

if [[ "$(id -u)" != "0" ]]; then
    echo "install.sh must run as root (it uses apt-get)" >&2
    exit 1
fi

status="$(dpkg-query -W -f='${Status}' prometheus 2>/dev/null || true)"
if [[ "$status" == "install ok installed" ]]; then
    log "prometheus present: $(dpkg-query -W -f='${Version}' prometheus)"
else
    log "apt-get update"
    apt-get update -qq
    log "apt-get install prometheus"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

if [[ ! -x /usr/bin/prometheus ]]; then
    echo "/usr/bin/prometheus not found after installing the prometheus package" >&2
    exit 1
fi
log "done"
