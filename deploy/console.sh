#!/usr/bin/env bash
# What the web console (`swf serve`) needs beyond its Python packages (run by install.sh):
#   console.sh install   mermaid and htmx from the npm registry into swf/web/vendor/ (pinned,
#                        integrity-checked, git-ignored), and Debian's chromium for the console's
#                        browser tests (Playwright drives /usr/bin/chromium; no browser download)
# Idempotent: what is already in place is kept.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
vendor="$root/swf/web/vendor"

# package@version, its npm integrity, the file of the package the console serves.
ASSETS=(
    "mermaid@11.17.2 sha512-V6K3C8EBdEsPFZXSKMJe6ppQOENxuHARr9GvHX4hh47lAbhMRD9qf4oEK7LoaRQxULMa80/qt5gHO73aCleBBg== dist/mermaid.min.js"
    "htmx.org@2.0.11 sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA== dist/htmx.min.js"
)

log() { echo "console.sh: $*" >&2; }
die() { log "$*"; exit 1; }

integrity() {  # npm's integrity string of a file
    python3 -c 'import base64, hashlib, sys
print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$1"
}

install_assets() {
    command -v npm >/dev/null || die "npm is needed to fetch mermaid and htmx (apt-get install npm)"
    mkdir -p "$vendor"
    local entry spec sum file name stamp work
    for entry in "${ASSETS[@]}"; do
        read -r spec sum file <<<"$entry"
        name="$(basename "$file")"
        stamp="$vendor/$name.from"
        if [[ -f "$vendor/$name" && -f "$stamp" && "$(cat "$stamp")" == "$spec $sum" ]]; then
            continue
        fi
        work="$(mktemp -d)"
        log "fetching $spec"
        (cd "$work" && npm pack --silent "$spec" >/dev/null </dev/null)
        local tarball
        tarball="$(ls "$work"/*.tgz)"
        [[ "$(integrity "$tarball")" == "$sum" ]] || die "$spec: integrity mismatch"
        tar -xzf "$tarball" -C "$work" "package/$file"
        install -m 0644 "$work/package/$file" "$vendor/$name"
        echo "$spec $sum" >"$stamp"
        rm -rf "$work"
    done
}

install_chromium() {
    if [[ -x /usr/bin/chromium ]]; then
        return 0
    fi
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || die "need root (or sudo) to apt-get install chromium"
        sudo=(sudo -n)
    fi
    log "installing Debian package chromium (the console's browser tests)"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q </dev/null
    "${sudo[@]}" apt-get install -y -q chromium </dev/null
}

case "${1:-}" in
    install) install_assets; install_chromium ;;
    *) die "usage: $0 install" ;;
esac
