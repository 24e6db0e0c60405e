#!/usr/bin/env bash
# A voiceagent cluster on one machine, on loopback ports: the LLM as llama.cpp's OpenAI server
# (the shared model tier), N `voiceagent sip` and N `voiceagent serve` workers, Kamailio in
# front of the SIP workers and HAProxy in front of the HTTP ones (docs/deployment.md).
#
#   scripts/cluster.sh up --workers 2 [--sip-port 5060] [--http-port 8080]
#   scripts/cluster.sh down
#
# Options of `up` (defaults in brackets):
#   --workers N            SIP and HTTP workers each [2]
#   --sip-workers N        SIP workers, if not N (0: no SIP front)
#   --http-workers N       HTTP workers, if not N (0: no HTTP front)
#   --sip-port P           Kamailio's UDP port [5060]; SIP workers on P+1 .. P+N
#   --http-port P          HAProxy's port [8080]; HTTP workers on P+1 .. P+N
#   --llm-port P           the LLM server's port [8090]
#   --agent FILE           the agent every worker runs [examples/basic_agent.py]
#   --max-sessions N       calls (SIP) or sessions (HTTP) per worker [4]
#   --drain-timeout S      how long a worker's sessions may go on after SIGTERM [20]
#   --probe-interval S     Kamailio's OPTIONS probes and HAProxy's /health checks [2]
#   --ice-host-address A   the HTTP workers' ICE host candidates (default: every
#                          non-loopback interface; 127.0.0.1 for a browser on this machine)
# Environment: VOICEAGENT_RUN_DIR (pid files, logs, generated configuration [.cluster]),
# VOICEAGENT_PYTHON (the interpreter with voiceagent installed [.venv/bin/python]).
#
# Workers are stopped by SIGTERM, which drains them: their sessions finish (up to the drain
# timeout) before they exit. Run as root, Kamailio and HAProxy run as nobody.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${VOICEAGENT_PYTHON:-$ROOT/.venv/bin/python}
RUN=${VOICEAGENT_RUN_DIR:-$ROOT/.cluster}

die() { echo "cluster: $*" >&2; exit 2; }

workers=2 sip_workers="" http_workers="" sip_port=5060 http_port=8080 llm_port=8090
agent=examples/basic_agent.py max_sessions=4 drain_timeout=20 probe_interval=2 ice_host=""

parse() {
    while [ $# -gt 0 ]; do
        [ $# -ge 2 ] || die "$1 needs a value"
        case "$1" in
            --workers) workers=$2 ;;
            --sip-workers) sip_workers=$2 ;;
            --http-workers) http_workers=$2 ;;
            --sip-port) sip_port=$2 ;;
            --http-port) http_port=$2 ;;
            --llm-port) llm_port=$2 ;;
            --agent) agent=$2 ;;
            --max-sessions) max_sessions=$2 ;;
            --drain-timeout) drain_timeout=$2 ;;
            --probe-interval) probe_interval=$2 ;;
            --ice-host-address) ice_host=$2 ;;
            *) die "unknown option $1 (see the top of $0)" ;;
        esac
        shift 2
    done
    sip_workers=${sip_workers:-$workers}
    http_workers=${http_workers:-$workers}
    for n in "$workers" "$sip_workers" "$http_workers" "$sip_port" "$http_port" "$llm_port" \
             "$max_sessions" "$probe_interval"; do
        [[ "$n" =~ ^[0-9]+$ ]] || die "not a whole number: $n"
    done
    [ "$probe_interval" -ge 1 ] || die "--probe-interval must be at least 1 (seconds)"
}

# Kamailio and HAProxy need no privileges on ports above 1024: as root, run them as nobody.
# (exec: in start's background subshell, so the pid file names the server itself)
unprivileged() {
    if [ "$(id -u)" = 0 ]; then
        exec setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"
    else
        exec "$@"
    fi
}

# start NAME COMMAND...: in the background, output to logs/NAME.log, pid in NAME.pid
start() {
    local name=$1
    shift
    "$@" </dev/null >"$RUN/logs/$name.log" 2>&1 &
    echo $! >"$RUN/$name.pid"
}

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# wait_for NAME SECONDS CHECK...: until CHECK succeeds; fails if NAME dies first
wait_for() {
    local name=$1 limit=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" 2>/dev/null; do
        alive "$name" || die "$name exited; its log: $RUN/logs/$name.log"
        [ $SECONDS -lt $deadline ] || die "$name not ready after $limit s; its log: $RUN/logs/$name.log"
        sleep 0.3
    done
}

http_ok() { "$PYTHON" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1"; }
logged() { grep -q "$2" "$RUN/logs/$1.log"; }
udp_bound() { grep -qi ":$(printf '%04X' "$1") " /proc/net/udp; }

up() {
    parse "$@"
    [ -x "$PYTHON" ] || die "no Python at $PYTHON (set VOICEAGENT_PYTHON)"
    command -v kamailio >/dev/null || [ "$sip_workers" = 0 ] || die "kamailio is not installed"
    command -v haproxy >/dev/null || [ "$http_workers" = 0 ] || die "haproxy is not installed"
    mkdir -p "$RUN/logs"
    chmod 755 "$RUN" "$RUN/logs"
    for pid in "$RUN"/*.pid; do
        [ -e "$pid" ] || continue
        alive "$(basename "$pid" .pid)" && die "a cluster is already up in $RUN: run '$0 down' first"
        rm -f "$pid"
    done
    cd "$ROOT"

    local model llm_url="http://127.0.0.1:$llm_port/v1"
    model=$("$PYTHON" -c "from voiceagent_plugins.llamacpp_llm import bundled_model_path; print(bundled_model_path())")
    # queue requests rather than cut a running stream short: each worker gets whole replies
    start llm "$PYTHON" -m llama_cpp.server --model "$model" --host 127.0.0.1 \
        --port "$llm_port" --n_ctx 2048 --interrupt_requests False
    local llm=(--llm openai --llm-option "base_url=$llm_url" --llm-option model=smollm2)

    local i dispatcher="" servers=""
    for ((i = 1; i <= sip_workers; i++)); do
        # every INVITE comes from the front: per-source limits belong there, not here
        start "sip-$i" "$PYTHON" -m voiceagent.cli sip "$agent" --port $((sip_port + i)) \
            --max-calls "$max_sessions" --drain-timeout "$drain_timeout" --rate-limit 0 \
            --allow-from 127.0.0.1 --events "$RUN/logs/sip-$i.jsonl" "${llm[@]}"
        dispatcher+="1 sip:127.0.0.1:$((sip_port + i))"$'\n'
    done
    local ice=()
    [ -z "$ice_host" ] || ice=(--ice-host-address "$ice_host")
    for ((i = 1; i <= http_workers; i++)); do
        start "http-$i" "$PYTHON" -m voiceagent.cli serve "$agent" --port $((http_port + i)) \
            --max-sessions "$max_sessions" --drain-timeout "$drain_timeout" \
            --trusted-proxy 127.0.0.1 --events "$RUN/logs/http-$i.jsonl" "${ice[@]}" "${llm[@]}"
        servers+="    server http-$i 127.0.0.1:$((http_port + i))"$'\n'
    done

    wait_for llm 120 http_ok "$llm_url/models"
    for ((i = 1; i <= sip_workers; i++)); do
        wait_for "sip-$i" 180 logged "sip-$i" "answering SIP calls"
    done
    for ((i = 1; i <= http_workers; i++)); do
        wait_for "http-$i" 180 http_ok "http://127.0.0.1:$((http_port + i))/health"
    done

    if [ "$sip_workers" -gt 0 ]; then
        printf '%s' "$dispatcher" >"$RUN/dispatcher.list"
        mkdir -p "$RUN/kamailio"
        chmod 777 "$RUN/kamailio"  # its runtime files, written as nobody
        start kamailio unprivileged kamailio -DD -E -f "$ROOT/deploy/kamailio/kamailio.cfg" \
            -Y "$RUN/kamailio" -m 32 -M 4 -l "udp:127.0.0.1:$sip_port" \
            -A "DISPATCHER_LIST=\"$RUN/dispatcher.list\"" -A "PROBE_INTERVAL=$probe_interval"
        wait_for kamailio 20 udp_bound "$sip_port"
    fi
    if [ "$http_workers" -gt 0 ]; then
        printf 'backend workers\n%s' "$servers" >"$RUN/workers.cfg"
        VOICEAGENT_HTTP_BIND="127.0.0.1:$http_port" VOICEAGENT_HEALTH_INTERVAL="${probe_interval}s" \
            start haproxy unprivileged haproxy -db -f "$ROOT/deploy/haproxy/haproxy.cfg" \
            -f "$RUN/workers.cfg"
        wait_for haproxy 20 http_ok "http://127.0.0.1:$http_port/health"
    fi

    echo "cluster: up (run dir $RUN)"
    echo "  LLM server       $llm_url"
    [ "$sip_workers" = 0 ] || echo "  SIP front        sip:agent@127.0.0.1:$sip_port (UDP); workers on ports $((sip_port + 1))-$((sip_port + sip_workers))"
    [ "$http_workers" = 0 ] || echo "  HTTP front       http://127.0.0.1:$http_port/; workers on ports $((http_port + 1))-$((http_port + http_workers))"
}

# stop NAME SECONDS: SIGTERM, then SIGKILL if it is still there after SECONDS
stop() {
    local name=$1 limit=$2 pid
    [ -f "$RUN/$name.pid" ] || return 0
    pid=$(cat "$RUN/$name.pid")
    if kill -TERM "$pid" 2>/dev/null; then
        local deadline=$((SECONDS + limit))
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null && echo "cluster: $name did not stop in $limit s: killed" >&2
    fi
    rm -f "$RUN/$name.pid"
}

down() {
    [ $# = 0 ] || die "down takes no options"
    [ -d "$RUN" ] || { echo "cluster: nothing in $RUN"; return 0; }
    local pid name workers=()
    for pid in "$RUN"/sip-*.pid "$RUN"/http-*.pid; do
        [ -e "$pid" ] && workers+=("$(basename "$pid" .pid)")
    done
    # workers first, all at once: they drain while the fronts still route their calls'
    # in-dialog requests; a drain takes at most its timeout
    for name in "${workers[@]}"; do stop "$name" 60 & done
    wait
    for name in haproxy kamailio llm; do stop "$name" 10; done
    echo "cluster: down"
}

case "${1:-}" in
    up) shift; up "$@" ;;
    down) shift; down "$@" ;;
    *) die "usage: $0 up [--workers N] [--sip-port P] [--http-port P] ... | down" ;;
esac
