#!/usr/bin/env bash
# Local Rucio server (SQLite, gunicorn on loopback) for swf development and tests.
#
#   server.sh install             create the Rucio virtualenv and pip install the server
#                                 (idempotent; a no-op when the marker matches)
#   server.sh start  DIR [PORT]   configure an instance in DIR (rucio.cfg, alembic.ini, SQLite
#                                 db, root account, RSE DAQ_DISK, scope group.daq), start
#                                 gunicorn on 127.0.0.1:PORT, wait for GET /ping, print the
#                                 client environment as KEY=VALUE lines (last: SWF_RUCIO_PID)
#   server.sh stop   DIR          SIGTERM, bounded wait, then SIGKILL
#   server.sh status DIR          exit 0 if running (prints pid and URL), 3 if not
#   server.sh env    DIR          print the client environment of the instance again
#
# PORT defaults to 0: the instance's previous port if still free, else any free port. The
# server is the `rucio` package in a virtualenv of its own (it pins SQLAlchemy 2.0, swf uses
# 2.1). The root password is generated for each instance and kept in DIR/credentials (mode
# 0600); nothing secret lives in the repository.
#
# Environment:
#   SWF_RUCIO_VENV           virtualenv (default <repo>/.cache/rucio-venv)
#   SWF_RUCIO_PYTHON         Python that creates the virtualenv (default python3)
#   SWF_RUCIO_VERSION        rucio server version (default 41.5.1)
#   SWF_RUCIO_START_TIMEOUT  seconds to wait for /ping at start (default 60)
#   SWF_RUCIO_STOP_TIMEOUT   seconds to wait after SIGTERM before SIGKILL (default 15)
#   SWF_RUCIO_RSE            RSE created at start (default DAQ_DISK)
#   SWF_RUCIO_SCOPES         comma-separated scopes created for root (default group.daq)
#
# Layout of DIR: rucio.cfg, alembic.ini, credentials, rucio.db, rse/ (the RSE's storage),
# log/server.log (gunicorn and application), log/access.log, server.pid, server.port,
# client.env (what `start` prints).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/lib.sh
source "$HERE/../lib.sh"
ROOT="$(dirname "$(dirname "$HERE")")"
VENV="${SWF_RUCIO_VENV:-$ROOT/.cache/rucio-venv}"
RUCIO_VERSION="${SWF_RUCIO_VERSION:-41.5.1}"
GUNICORN_SPEC="gunicorn==27.0.1"
MARKER="$VENV/.swf-rucio-installed"
APP="rucio.web.rest.flaskapi.v1.main:application"

log() { printf 'rucio server.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}


install_spec() { echo "rucio==$RUCIO_VERSION $GUNICORN_SPEC"; }

installed() {
    [[ -x "$VENV/bin/python" && -x "$VENV/bin/gunicorn" && -f "$MARKER" ]] &&
        [[ "$(cat "$MARKER")" == "$(install_spec)" ]]
}

cmd_install() {
    if installed; then
        log "already installed: $(install_spec) in $VENV"
        return 0
    fi
    mkdir -p "$(dirname "$VENV")"
    local t0
    t0="$(now)"
    (
        # one installer at a time per virtualenv
        if command -v flock >/dev/null; then
            exec 9>"$VENV.lock"
            flock 9
        fi
        if installed; then
            exit 0
        fi
        local py="${SWF_RUCIO_PYTHON:-python3}"
        if [[ ! -x "$VENV/bin/python" ]]; then
            log "creating virtualenv $VENV"
            "$py" -m venv "$VENV"
        fi
        rm -f "$MARKER"
        log "pip install $(install_spec) (about a minute)"
        # shellcheck disable=SC2046  # the spec is two words on purpose
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            $(install_spec) </dev/null ||
            die "pip install into $VENV failed (is PyPI reachable?)"
        "$VENV/bin/python" -c "import gunicorn, rucio.db.sqla.migrate_repo" ||
            die "rucio is installed but does not import"
        install_spec >"$MARKER"
    )
    installed || die "install did not complete"
    log "installed $(install_spec) in $(elapsed "$t0") s ($VENV)"
}


# true if PID is the gunicorn master started for DIR (guards against pid reuse)
is_our_server() {
    local pid="$1" dir="$2"
    alive "$pid" || return 1
    [[ -r "/proc/$pid/environ" ]] || return 0   # no procfs: trust the pid file
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF -- "RUCIO_CONFIG=$dir/rucio.cfg"
}

read_pid() {
    local f="$1/server.pid"
    if [[ -s "$f" ]]; then tr -dc '0-9' <"$f"; fi
}

# true if GET /ping on 127.0.0.1:PORT answers 200
ping_ok() {
    # shellcheck disable=SC2016  # $1 is expanded by the inner bash
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET /ping HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n" "$1" >&3
        IFS= read -r -t 2 line <&3 || exit 1
        [[ "$line" == HTTP/1.?" 200"* ]] || exit 1
    ' ping_ok "$1" 2>/dev/null
}



client_env() {
    local dir="$1" port="$2" pid="$3"
    cat <<EOF
RUCIO_HOST=http://127.0.0.1:$port
RUCIO_AUTH_HOST=http://127.0.0.1:$port
RUCIO_ACCOUNT=root
RUCIO_AUTH_TYPE=userpass
RUCIO_USERNAME=root
RUCIO_PASSWORD_FILE=$dir/credentials
SWF_RUCIO_CONFIG=$dir/rucio.cfg
SWF_RUCIO_RSE=${SWF_RUCIO_RSE:-DAQ_DISK}
SWF_RUCIO_PID=$pid
EOF
}

log_tail() {
    log "last lines of $1/log/server.log:"
    tail -n 40 "$1/log/server.log" >&2 2>/dev/null || true
}

# SIGTERM, wait up to $2 seconds, then SIGKILL the process group (master and worker)
stop_pid() {
    local pid="$1" wait_s="$2" i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < wait_s * 10; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    log "pid $pid still alive after ${wait_s}s, sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    return 1
}

cmd_start() {
    [[ $# -ge 1 && $# -le 2 ]] || usage
    local port="${2:-0}"
    [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
    installed || die "the Rucio virtualenv is not installed ($VENV); run: $0 install"
    local dir py t0
    dir="$(abs_dir "$1")"
    py="$VENV/bin/python"
    t0="$(now)"

    local pid
    pid="$(read_pid "$dir")"
    if [[ -n "$pid" ]] && is_our_server "$pid" "$dir"; then
        local running_port
        running_port="$(cat "$dir/server.port" 2>/dev/null || true)"
        if [[ "$port" == 0 || "$port" == "$running_port" ]] && ping_ok "$running_port"; then
            log "already running (pid $pid, http://127.0.0.1:$running_port)"
            client_env "$dir" "$running_port" "$pid"
            return 0
        fi
        die "a server for $dir is already running (pid $pid, port ${running_port:-?})"
    fi
    rm -f "$dir/server.pid"

    if [[ "$port" == 0 ]]; then
        # a restart keeps the instance's previous port when it is still free
        port="$(cat "$dir/server.port" 2>/dev/null || true)"
        if [[ ! "$port" =~ ^[0-9]+$ ]] || port_open "$port"; then
            port="$("$py" "$HERE/bootstrap.py" free-port)"
        fi
    elif port_open "$port"; then
        die "port 127.0.0.1:$port is already in use"
    fi

    umask 077
    mkdir -p "$dir/log"
    echo "$port" >"$dir/server.port"
    if ! "$py" "$HERE/bootstrap.py" setup "$dir" "$port" >>"$dir/log/bootstrap.log" 2>&1; then
        log "database bootstrap failed; last lines of $dir/log/bootstrap.log:"
        tail -n 40 "$dir/log/bootstrap.log" >&2 || true
        exit 1
    fi

    export RUCIO_CONFIG="$dir/rucio.cfg"
    # Own session (setsid): the pid is also the process group of master and worker.
    # With SQLite one worker and one thread, or writes fail with "database is locked".
    # Gunicorn's own early output and its error log share server.log (nothing reads it here).
    # shellcheck disable=SC2094
    (
        cd "$dir"
        exec setsid "$VENV/bin/gunicorn" \
            --bind "127.0.0.1:$port" -w 1 --threads 1 --no-control-socket \
            --graceful-timeout 5 --timeout 120 \
            --access-logfile "$dir/log/access.log" --error-logfile "$dir/log/server.log" \
            --capture-output "$APP" </dev/null >>"$dir/log/server.log" 2>&1
    ) &
    pid=$!
    echo "$pid" >"$dir/server.pid"

    local timeout="${SWF_RUCIO_START_TIMEOUT:-60}"
    local deadline=$((SECONDS + timeout))
    while ! ping_ok "$port"; do
        if ! alive "$pid"; then
            log "gunicorn (pid $pid) exited during startup"
            log_tail "$dir"
            rm -f "$dir/server.pid"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log "no answer to GET /ping on 127.0.0.1:$port within ${timeout}s"
            log_tail "$dir"
            stop_pid "$pid" 5 || true
            rm -f "$dir/server.pid"
            exit 1
        fi
        sleep 0.1
    done
    client_env "$dir" "$port" "$pid" | tee "$dir/client.env"
    log "started in $(elapsed "$t0") s: pid $pid, http://127.0.0.1:$port, data $dir"
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    [[ -d "$1" ]] || { log "not running (no directory $1)"; return 0; }
    local dir pid t0
    dir="$(abs_dir "$1")"
    pid="$(read_pid "$dir")"
    if [[ -z "$pid" ]] || ! is_our_server "$pid" "$dir"; then
        log "not running"
        rm -f "$dir/server.pid"
        return 0
    fi
    t0="$(now)"
    if stop_pid "$pid" "${SWF_RUCIO_STOP_TIMEOUT:-15}"; then
        rm -f "$dir/server.pid"
        log "stopped pid $pid in $(elapsed "$t0") s"
    else
        die "could not stop pid $pid"
    fi
}

cmd_status() {
    [[ $# -eq 1 ]] || usage
    [[ -d "$1" ]] || { echo "not running"; return 3; }
    local dir pid port
    dir="$(abs_dir "$1")"
    pid="$(read_pid "$dir")"
    if [[ -n "$pid" ]] && is_our_server "$pid" "$dir"; then
        port="$(cat "$dir/server.port" 2>/dev/null || echo '?')"
        if ping_ok "$port"; then
            echo "running pid $pid http://127.0.0.1:$port"
        else
            echo "running pid $pid http://127.0.0.1:$port (not answering /ping)"
        fi
        return 0
    fi
    echo "not running"
    return 3
}

cmd_env() {
    [[ $# -eq 1 ]] || usage
    local dir
    dir="$(abs_dir "$1")"
    [[ -f "$dir/client.env" ]] || die "no instance in $dir"
    cat "$dir/client.env"
}

[[ $# -ge 1 ]] || usage
command="$1"
shift
case "$command" in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env "$@" ;;
    -h | --help | help) usage ;;
    *) usage ;;
esac
