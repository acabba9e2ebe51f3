# Shell helpers shared by the deploy scripts (sourced, not run).
# shellcheck shell=bash

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# true if PID is a live (non-zombie) process
alive() {
    local pid="$1" state
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/stat" ]]; then
        state="$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || true)"
        [[ "$state" != "Z" && "$state" != "X" ]] || return 1
    fi
    return 0
}

# true if something accepts TCP connections on 127.0.0.1:PORT
port_open() {
    # shellcheck disable=SC2016  # $1 is expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' port_open "$1" 2>/dev/null
}

# DIR made absolute (and created)
abs_dir() {
    mkdir -p "$1"
    (cd "$1" && pwd -P)
}
