#!/usr/bin/env bash
# Local ActiveMQ Classic broker for swf development, tests and CI.
#
#   broker.sh install                               apt-get install activemq (idempotent)
#   broker.sh start  DIR [STOMP_PORT] [OPENWIRE_PORT]
#                                                   start a broker with data/log/pid in DIR,
#                                                   wait for a STOMP CONNECTED, print its pid
#   broker.sh stop   DIR                            SIGTERM, bounded wait, then SIGKILL
#   broker.sh status DIR                            exit 0 if running (prints pid), 3 if not
#
# Defaults: STOMP_PORT 61613, OPENWIRE_PORT 61616 (0 = any free port). Both listen on
# 127.0.0.1 only. The java process is run directly as the calling user (no system
# service, no systemd, no su to the Debian `activemq` user) and needs no stdin.
#
# Environment:
#   SWF_BROKER_HEAP           JVM heap options        (default "-Xms256m -Xmx1g")
#   SWF_BROKER_JAVA_OPTS      extra JVM options       (default empty)
#   SWF_BROKER_START_TIMEOUT  seconds to wait for STOMP at start (default 60)
#   SWF_BROKER_STOP_TIMEOUT   seconds to wait after SIGTERM before SIGKILL (default 30)
#   SWF_KAHADB_SYNC           KahaDB journalDiskSyncStrategy: periodic (default) | always | never
#   SWF_BROKER_CONFIG         the broker's XML configuration (default: activemq.xml next to
#                             this script), e.g. one without the work queue copies
#   ACTIVEMQ_HOME             install dir (default /usr/share/activemq)
#   JAVA_HOME / JAVACMD       java to use (default: java on PATH)
#
# Layout of DIR: broker.pid, stomp.port, openwire.port, broker.out (JVM stdout/stderr),
# data/ (KahaDB, temp store, activemq.log), tmp/ (java.io.tmpdir).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/lib.sh
source "$HERE/../lib.sh"
CONF_DIR="$HERE"
AMQ_HOME="${ACTIVEMQ_HOME:-/usr/share/activemq}"
AMQ_JAR="$AMQ_HOME/bin/activemq.jar"

log() { printf 'broker.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}



# true if PID is the broker java process started for DIR (guards against pid reuse)
is_our_broker() {
    local pid="$1" dir="$2"
    alive "$pid" || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 0   # no procfs: trust the pid file
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "-Dactivemq.data=$dir/data"
}

read_pid() {
    local f="$1/broker.pid"
    if [[ -s "$f" ]]; then tr -dc '0-9' <"$f"; fi
}

# true if something accepts TCP connections on 127.0.0.1:PORT

# true if a STOMP CONNECT on 127.0.0.1:PORT is answered with CONNECTED
stomp_ready() {
    # shellcheck disable=SC2016  # $1 is expanded by the inner bash
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "CONNECT\naccept-version:1.0,1.1,1.2\nhost:localhost\nheart-beat:0,0\n\n\0" >&3
        IFS= read -r -t 2 line <&3 || exit 1
        [[ "$line" == CONNECTED* ]] || exit 1
        printf "DISCONNECT\n\n\0" >&3
        exec 3>&-
    ' stomp_ready "$1" 2>/dev/null
}

find_java() {
    if [[ -n "${JAVACMD:-}" ]]; then
        echo "$JAVACMD"
    elif [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
        echo "$JAVA_HOME/bin/java"
    else
        command -v java || return 1
    fi
}


cmd_install() {
    if [[ -f "$AMQ_JAR" ]] && find_java >/dev/null; then
        log "activemq already installed ($AMQ_JAR)"
        return 0
    fi
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || die "need root (or sudo) to apt-get install activemq"
        sudo=(sudo -n)
    fi
    log "installing Debian package activemq"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q </dev/null
    "${sudo[@]}" apt-get install -y -q activemq </dev/null
    [[ -f "$AMQ_JAR" ]] || die "activemq installed but $AMQ_JAR is missing"
    log "installed: $(dpkg-query -W -f='${Package} ${Version}' activemq 2>/dev/null || echo activemq)"
}

cmd_start() {
    [[ $# -ge 1 ]] || usage
    local dir stomp_port="${2:-61613}" ow_port="${3:-61616}"
    [[ "$stomp_port" =~ ^[0-9]+$ ]] || die "STOMP_PORT must be a number, got '$stomp_port'"
    [[ "$ow_port" =~ ^[0-9]+$ ]] || die "OPENWIRE_PORT must be a number, got '$ow_port'"
    [[ -f "$AMQ_JAR" ]] || die "$AMQ_JAR not found; run: $0 install"
    local java
    java="$(find_java)" || die "no java found (set JAVA_HOME or run: $0 install)"
    dir="$(abs_dir "$1")"

    local pid
    pid="$(read_pid "$dir")"
    if [[ -n "$pid" ]] && is_our_broker "$pid" "$dir"; then
        local running_port
        running_port="$(cat "$dir/stomp.port" 2>/dev/null || true)"
        if [[ "$running_port" == "$stomp_port" ]] && stomp_ready "$stomp_port"; then
            log "already running (pid $pid, stomp 127.0.0.1:$stomp_port)"
            echo "$pid"
            return 0
        fi
        die "a broker for $dir is already running (pid $pid, stomp port ${running_port:-?})"
    fi
    rm -f "$dir/broker.pid"

    if port_open "$stomp_port"; then
        die "port 127.0.0.1:$stomp_port is already in use"
    fi
    if [[ "$ow_port" != 0 ]] && port_open "$ow_port"; then
        die "OpenWire port 127.0.0.1:$ow_port is already in use (pass another OPENWIRE_PORT, or 0)"
    fi

    mkdir -p "$dir/data" "$dir/tmp"
    echo "$stomp_port" >"$dir/stomp.port"
    echo "$ow_port" >"$dir/openwire.port"

    local config="${SWF_BROKER_CONFIG:-$CONF_DIR/activemq.xml}"
    [[ -f "$config" ]] || die "broker configuration $config not found"
    config="$(cd "$(dirname "$config")" && pwd)/$(basename "$config")"
    local heap="${SWF_BROKER_HEAP:--Xms256m -Xmx1g}"
    local -a jvm
    # shellcheck disable=SC2206  # word splitting of option strings is intended
    jvm=($heap ${SWF_BROKER_JAVA_OPTS:-})
    jvm+=(
        -Djava.awt.headless=true
        "-Djava.io.tmpdir=$dir/tmp"
        "-Dactivemq.home=$AMQ_HOME"
        "-Dactivemq.base=$dir"
        "-Dactivemq.conf=$CONF_DIR"
        "-Dactivemq.data=$dir/data"
        # puts this directory (log4j.properties) on the broker's classpath
        "-Dactivemq.classpath=$CONF_DIR"
        "-Dswf.stomp.port=$stomp_port"
        "-Dswf.openwire.port=$ow_port"
        "-Dswf.kahadb.sync=${SWF_KAHADB_SYNC:-periodic}"
        -jar "$AMQ_JAR"
        start "xbean:file:$config"
    )

    local t0
    t0="$(now)"
    # Own session (setsid): no controlling terminal, not hit by the caller's Ctrl-C/SIGHUP.
    # ( exec ... ) & keeps $! equal to the java pid.
    (
        cd "$dir"
        exec setsid "$java" "${jvm[@]}" </dev/null >>"$dir/broker.out" 2>&1
    ) &
    pid=$!
    echo "$pid" >"$dir/broker.pid"

    local timeout="${SWF_BROKER_START_TIMEOUT:-60}"
    local deadline=$((SECONDS + timeout))
    while true; do
        if ! alive "$pid"; then
            log "broker process $pid exited during startup; last log lines:"
            tail -n 30 "$dir/broker.out" "$dir/data/activemq.log" >&2 2>/dev/null || true
            rm -f "$dir/broker.pid"
            exit 1
        fi
        if stomp_ready "$stomp_port"; then
            break
        fi
        if ((SECONDS >= deadline)); then
            log "ERROR: broker did not answer STOMP CONNECT on 127.0.0.1:$stomp_port within ${timeout}s; last log lines:"
            tail -n 30 "$dir/broker.out" "$dir/data/activemq.log" >&2 2>/dev/null || true
            stop_pid "$pid" 10
            rm -f "$dir/broker.pid"
            exit 1
        fi
        sleep 0.2
    done
    log "started in $(elapsed "$t0") s: pid $pid, stomp 127.0.0.1:$stomp_port, data $dir/data"
    echo "$pid"
}

# SIGTERM, wait up to $2 seconds, then SIGKILL
stop_pid() {
    local pid="$1" wait_s="$2" i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < wait_s * 10; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    log "pid $pid still alive after ${wait_s}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    return 1
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    local dir pid
    [[ -d "$1" ]] || { log "not running (no directory $1)"; return 0; }
    dir="$(abs_dir "$1")"
    pid="$(read_pid "$dir")"
    if [[ -z "$pid" ]] || ! is_our_broker "$pid" "$dir"; then
        log "not running"
        rm -f "$dir/broker.pid"
        return 0
    fi
    local t0
    t0="$(now)"
    if stop_pid "$pid" "${SWF_BROKER_STOP_TIMEOUT:-30}"; then
        rm -f "$dir/broker.pid"
        log "stopped pid $pid in $(elapsed "$t0") s"
    else
        die "could not stop pid $pid"
    fi
}

cmd_status() {
    [[ $# -eq 1 ]] || usage
    local dir pid port
    [[ -d "$1" ]] || { echo "not running"; return 3; }
    dir="$(abs_dir "$1")"
    pid="$(read_pid "$dir")"
    if [[ -n "$pid" ]] && is_our_broker "$pid" "$dir"; then
        port="$(cat "$dir/stomp.port" 2>/dev/null || echo '?')"
        if stomp_ready "$port"; then
            echo "running pid $pid stomp 127.0.0.1:$port"
        else
            echo "running pid $pid stomp 127.0.0.1:$port (not answering STOMP yet)"
        fi
        return 0
    fi
    echo "not running"
    return 3
}

[[ $# -ge 1 ]] || usage
command="$1"
shift
case "$command" in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    -h | --help | help) usage ;;
    *) usage ;;
esac
