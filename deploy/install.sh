#!/usr/bin/env bash
# Installs everything swf and its test suite need on a Debian machine (run as root or with sudo):
# the ActiveMQ broker package, swf itself with its test extras into the current Python, the web
# console's browser code (npm) and Debian's chromium for its browser tests, and the Rucio test
# server in a virtualenv of its own (its SQLAlchemy pin conflicts with ours).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

bash "$here/activemq/broker.sh" install
python3 -m pip install --quiet --disable-pip-version-check -e "$root[test]"
bash "$here/console.sh" install
bash "$here/rucio/server.sh" install
echo "swf installed: $(command -v swf)"
