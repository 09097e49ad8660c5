#!/usr/bin/env bash
# Fault test of the docker-compose cluster (CI). docker-compose.yml runs 3 ingesters,
# 2 distributors, 1 querier and 1 compactor from the no-pull image (scripts/build-image.sh). Under a
# steady OTLP load from the OpenTelemetry Python SDK (tests/python/steady_export.py,
# the exporter's own retries, half of the traces to each distributor), one fault at a
# time, every node back healthy before the next:
#
#   1. docker kill ingester-1: a crash. The cluster declares it down and writes go on
#      with the 2 live ingesters; then it comes back (restart policy, else docker start)
#      and replays its WAL.
#   2. docker stop ingester-2: the graceful drain. It must exit 0 and log every shutdown
#      step. Writes go on meanwhile at write quorum on the 2 left (under-replicated): the
#      exporter must meet no UNAVAILABLE from the drain until ingester-2 is started again.
#   3. docker network disconnect ingester-3 for PARTITION_SECS, then reconnect it.
#   4. scale-down 3 -> 2 -> 1 (docker stop ingester-3, then ingester-2) and back: with 2,
#      writes go on under-replicated (/ring says so; no UNAVAILABLE); with 1, below the
#      write quorum, the exporter meets only UNAVAILABLE and retries until the two are
#      started again.
#
# Then it asserts: the exporter met no non-retryable status code, every batch was
# acked in the end, every acked trace reads back complete from the querier, no
# container restarted by itself, and every node stops gracefully at the end (exit 0,
# "shutdown: done"; a node that ran into its shutdown deadline is reported). The project is always removed (`down -v`); container
# logs are printed on failure.
#
#     scripts/test-compose.sh
#
# Needs docker, docker-compose (or COMPOSE="docker compose"), cargo and python3.
# Environment: RINGTAIL_IMAGE (default ringtail:local, rebuilt from the host binary
# unless SKIP_IMAGE_BUILD=1), PARTITION_SECS (30), LOAD_RATE (spans/s, 400),
# HEALTHY_TIMEOUT (s, 120), KEEP_LOGS (a file that receives every container's log).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

PARTITION_SECS="${PARTITION_SECS:-30}"
LOAD_RATE="${LOAD_RATE:-400}"
HEALTHY_TIMEOUT="${HEALTHY_TIMEOUT:-120}"
export RINGTAIL_IMAGE="${RINGTAIL_IMAGE:-ringtail:local}"
PROJECT="ringtail-compose-test-$$-$(date +%s)"
SERVICES=(ingester-1 ingester-2 ingester-3 distributor-1 distributor-2 querier compactor)
T0=$SECONDS

say() { printf '[%4ds] %s\n' $((SECONDS - T0)) "$*"; }
fail() { say "FAIL: $*"; exit 1; }

for tool in docker cargo python3; do
    command -v "$tool" >/dev/null || fail "$tool is required"
done
docker info >/dev/null 2>&1 || fail "the Docker daemon is not reachable (docker info failed)"
if [[ -n "${COMPOSE:-}" ]]; then
    read -r -a COMPOSE_CMD <<<"$COMPOSE"
elif command -v docker-compose >/dev/null; then
    COMPOSE_CMD=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
    COMPOSE_CMD=(docker compose)
else
    fail "docker-compose (or the docker compose plugin) is required"
fi
compose() { "${COMPOSE_CMD[@]}" -p "$PROJECT" -f "$REPO/docker-compose.yml" "$@"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ringtail-compose-test.XXXXXX")"
LOAD_PID=""
PASSED=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$LOAD_PID" ]] && kill -0 "$LOAD_PID" 2>/dev/null; then
        kill "$LOAD_PID" 2>/dev/null || true
        wait "$LOAD_PID" 2>/dev/null || true
    fi
    if [[ "$PASSED" != 1 ]]; then
        echo "---- exporter output"
        cat "$WORK/load.log" 2>/dev/null || true
        echo "---- container state"
        compose ps 2>/dev/null || true
        echo "---- container logs (last 150 lines each)"
        compose logs --no-color --timestamps --tail=150 2>/dev/null || true
    fi
    say "removing the project $PROJECT"
    compose stop -t 45 >/dev/null 2>&1 || true
    [[ -n "${KEEP_LOGS:-}" ]] && compose logs --no-color --timestamps >"$KEEP_LOGS" 2>&1
    compose down -v --remove-orphans -t 45 >/dev/null 2>&1 || true
    say "removed"
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- build
say "building the binary and the image $RINGTAIL_IMAGE"
if [[ "${SKIP_IMAGE_BUILD:-0}" != 1 ]]; then
    cargo build --release --bin ringtail
    "$REPO/scripts/build-image.sh"
fi
docker image inspect "$RINGTAIL_IMAGE" >/dev/null 2>&1 || fail "no image $RINGTAIL_IMAGE"
PY="$("$REPO/scripts/setup-python.sh")"

# Free host ports, so that the test runs next to anything else on 4317/4318/3200.
read -r P_GRPC P_HTTP P_GRPC_2 P_HTTP_2 P_QUERY < <("$PY" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
EOF
)
export RINGTAIL_PUBLISH_ADDR=127.0.0.1
export RINGTAIL_OTLP_GRPC_PORT="$P_GRPC" RINGTAIL_OTLP_HTTP_PORT="$P_HTTP"
export RINGTAIL_OTLP_GRPC_PORT_2="$P_GRPC_2" RINGTAIL_OTLP_HTTP_PORT_2="$P_HTTP_2"
export RINGTAIL_QUERY_PORT="$P_QUERY"
QUERY_URL="http://127.0.0.1:$P_QUERY"

# ---------------------------------------------------------------- helpers
declare -A CID
container() { echo "${CID[$1]}"; }

# "<status>/<health>" of a service's container, e.g. running/healthy.
state() {
    docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' \
        "$(container "$1")"
}

# wait_healthy SECONDS SERVICE...: every service's container running and healthy.
wait_healthy() {
    local deadline=$((SECONDS + $1)) svc pending
    shift
    while true; do
        pending=()
        for svc in "$@"; do
            [[ "$(state "$svc")" == running/healthy ]] || pending+=("$svc=$(state "$svc")")
        done
        ((${#pending[@]} == 0)) && return 0
        ((SECONDS < deadline)) || fail "not healthy within the deadline: ${pending[*]}"
        sleep 1
    done
}

# wait_ring N [GONE...]: the querier's /ring (the cluster's view, not only each node's
# /ready) lists N ACTIVE alive ingesters, and none of GONE (declared down or departed).
wait_ring() {
    local n=$1
    shift
    "$PY" - "$QUERY_URL/ring" "$n" 60 "$@" <<'EOF'
import json, sys, time, urllib.request
url, want, timeout, gone = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), set(sys.argv[4:])
deadline, last = time.monotonic() + timeout, "no answer"
while True:
    try:
        req = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            ring = json.load(resp)
        ing = {m["name"]: m for m in ring["members"] if "ingester" in m["roles"]}
        active = [n for n, m in ing.items() if m["state"] == "ACTIVE" and m["liveness"] == "Alive"]
        absent = sorted(a["name"] for a in ring.get("absent_ingesters") or [])
        last = ", ".join(f"{n} {m['state']}/{m['liveness']}" for n, m in sorted(ing.items()))
        last += f"; absent: {', '.join(absent) or 'none'}"
        if len(active) == want and not gone & set(ing):
            print(f"    ring: {last}")
            sys.exit(0)
    except Exception as e:  # noqa: BLE001 - any failure: poll again until the deadline
        last = f"error: {e}"
    if time.monotonic() > deadline:
        print(f"    ring: no {want} ACTIVE ingesters (gone: {sorted(gone)}) within {timeout}s; last: {last}")
        sys.exit(1)
    time.sleep(0.5)
EOF
}

# Marks the start of a phase of the test, to attribute the exporter's status codes.
mark() { echo "$(date +%s.%N) $*" >>"$WORK/phases"; }

load_running() { kill -0 "$LOAD_PID" 2>/dev/null || fail "the load stopped early"; }

# ---------------------------------------------------------------- cluster
say "starting the cluster (project $PROJECT; OTLP gRPC 127.0.0.1:$P_GRPC and :$P_GRPC_2, query $QUERY_URL)"
compose up -d --no-build
for svc in "${SERVICES[@]}"; do
    CID[$svc]="$(compose ps -q "$svc")"
    [[ -n "${CID[$svc]}" ]] || fail "no container for $svc"
done
wait_healthy "$HEALTHY_TIMEOUT" "${SERVICES[@]}"
wait_ring 3 || fail "the ingesters did not all join"
say "every node is healthy"

# ---------------------------------------------------------------- load
"$PY" "$REPO/tests/python/steady_export.py" \
    --endpoint "127.0.0.1:$P_GRPC" --endpoint "127.0.0.1:$P_GRPC_2" \
    --rate "$LOAD_RATE" --spans-per-trace 5 --export-timeout 120 \
    --stop-file "$WORK/stop" --record "$WORK/acked.txt" --summary "$WORK/summary.json" \
    --query-url "$QUERY_URL" --verify-timeout 120 --report-every 15 \
    >"$WORK/load.log" 2>&1 &
LOAD_PID=$!
mark "load only"
say "load: $LOAD_RATE spans/s from the OpenTelemetry Python SDK to both distributors"
sleep 5 # the load alone first
load_running

# ---------------------------------------------------------------- fault 1: crash
mark "fault 1: ingester-1 killed and down"
say "fault 1/4: docker kill ingester-1"
docker kill "$(container ingester-1)" >/dev/null
wait_ring 2 ingester-1 || fail "the cluster did not declare ingester-1 down"
say "ingester-1 is declared down; writes go on with 2 live ingesters for 5 s"
sleep 5
load_running
code="$(docker inspect -f '{{.State.ExitCode}}' "$(container ingester-1)")"
if [[ "$(docker inspect -f '{{.State.Status}}' "$(container ingester-1)")" == running ]]; then
    say "ingester-1 (exit $code) was restarted by its restart policy"
else
    # Docker counts `docker kill` as a manual stop: no restart policy applies to it (a
    # crash from inside, e.g. the OOM killer, is restarted). Do what an orchestrator would.
    say "ingester-1 exited with $code; Docker does not apply restart policies after docker kill: docker start"
    docker start "$(container ingester-1)" >/dev/null
fi
mark "fault 1: ingester-1 restarting"
wait_healthy "$HEALTHY_TIMEOUT" ingester-1
wait_ring 3 || fail "ingester-1 did not rejoin"
replay="$(docker logs --since "$(docker inspect -f '{{.State.StartedAt}}' "$(container ingester-1)")" \
    "$(container ingester-1)" 2>&1 | grep -m1 -o 'WAL replayed.*' || echo 'no WAL replay line')"
say "ingester-1 is back; $replay"
sleep 5
load_running

# ---------------------------------------------------------------- fault 2: graceful stop
mark "fault 2: ingester-2 draining and stopped"
say "fault 2/4: docker stop ingester-2 (graceful drain)"
stop_started=$SECONDS
docker stop -t 45 "$(container ingester-2)" >/dev/null
stop_secs=$((SECONDS - stop_started))
code="$(docker inspect -f '{{.State.ExitCode}}' "$(container ingester-2)")"
[[ "$code" == 0 ]] || fail "ingester-2 exited with $code after docker stop, not 0"
drain_log="$(docker logs --since "$(docker inspect -f '{{.State.StartedAt}}' "$(container ingester-2)")" \
    "$(container ingester-2)" 2>&1 | grep -E 'received SIGTERM|shutdown' || true)"
for step in "received SIGTERM" "shutdown 1/6" "shutdown 2/6" "shutdown 3/6" "shutdown 4/6" \
    "shutdown 5/6" "shutdown 6/6" "shutdown: done"; do
    grep -qF "$step" <<<"$drain_log" || fail "the drain log of ingester-2 lacks \"$step\":"$'\n'"$drain_log"
done
say "ingester-2 drained in ${stop_secs}s and exited 0; its log:"
sed 's/^/    /' <<<"$drain_log"
say "2 ingesters left of RF=3 for 5 s (writes go on at write quorum, under-replicated)"
sleep 5
load_running
docker start "$(container ingester-2)" >/dev/null
mark "fault 2: ingester-2 restarting"
wait_healthy "$HEALTHY_TIMEOUT" ingester-2
wait_ring 3 || fail "ingester-2 did not rejoin"
say "ingester-2 is back"
sleep 5
load_running

# ---------------------------------------------------------------- fault 3: partition
c3="$(container ingester-3)"
net="$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{"\n"}}{{end}}' "$c3" | head -n1)"
ip_before="$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$c3")"
say "fault 3/4: docker network disconnect ingester-3 ($ip_before) from $net for ${PARTITION_SECS}s"
mark "fault 3: ingester-3 cut off"
docker network disconnect "$net" "$c3"
sleep "$PARTITION_SECS" # the fault's length; the load runs on
load_running
mark "fault 3: ingester-3 reconnected"
docker network connect --alias ingester-3 "$net" "$c3"
ip_after="$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$c3")"
if [[ "$ip_after" != "$ip_before" ]]; then
    # A node advertises the address it found at start (advertise_addr).
    say "ingester-3 came back with another IP ($ip_after): restarting it to advertise that"
    docker restart -t 45 "$c3" >/dev/null
fi
say "ingester-3 reconnected"
wait_healthy "$HEALTHY_TIMEOUT" ingester-3
wait_ring 3 || fail "ingester-3 did not rejoin after the partition"
sleep 5
load_running

# ---------------------------------------------------------------- fault 4: scale-down
ring_writes() {
    "$PY" -c 'import json, sys, urllib.request as u
r = u.Request(sys.argv[1], headers={"Accept": "application/json"})
print(json.load(u.urlopen(r, timeout=5))["replication"]["writes"])' "$QUERY_URL/ring"
}
say "fault 4/4: scale-down 3 -> 2 -> 1 (docker stop ingester-3, then ingester-2), then back"
mark "fault 4: scaled down to 2 ingesters"
docker stop -t 45 "$(container ingester-3)" >/dev/null
wait_ring 2 ingester-3 || fail "ingester-3 did not leave"
writes="$(ring_writes)"
[[ "$writes" == under-replicated ]] || fail "/ring says writes are $writes with 2 of 3 ingesters"
say "2 ingesters: /ring says writes are $writes; 5 s of load"
sleep 5
load_running
mark "fault 4: scaled down to 1 ingester"
docker stop -t 45 "$(container ingester-2)" >/dev/null
wait_ring 1 ingester-2 || fail "ingester-2 did not leave"
writes="$(ring_writes)"
[[ "$writes" == refused ]] || fail "/ring says writes are $writes with 1 of 3 ingesters"
say "1 ingester: /ring says writes are $writes; the exporter retries for 3 s"
sleep 3
mark "fault 4: scaling back to 3"
docker start "$(container ingester-2)" "$(container ingester-3)" >/dev/null
wait_healthy "$HEALTHY_TIMEOUT" ingester-2 ingester-3
wait_ring 3 || fail "ingester-2 and ingester-3 did not rejoin"
say "3 ingesters again"
sleep 5
load_running

# ---------------------------------------------------------------- verdict
say "stopping the load; the exporter flushes, then reads every acked trace back"
mark "final flush"
touch "$WORK/stop"
load_rc=0
wait "$LOAD_PID" || load_rc=$?
LOAD_PID=""
sed 's/^/    /' "$WORK/load.log"
[[ "$load_rc" == 0 ]] || fail "the exporter or the read-back failed (exit $load_rc)"

unexpected=()
for svc in "${SERVICES[@]}"; do
    n="$(docker inspect -f '{{.RestartCount}}' "$(container "$svc")")"
    [[ "$n" == 0 ]] || unexpected+=("$svc restarted $n times")
done
((${#unexpected[@]} == 0)) || fail "containers restarted by themselves: ${unexpected[*]}"
wait_healthy 30 "${SERVICES[@]}"

# Every node stops gracefully: exit 0 and the whole sequence logged. A sequence that ran
# into its deadline (shutdown_timeout_ms) is reported, not failed: it still exits 0.
say "stopping every node (docker-compose stop)"
stop_started=$SECONDS
compose stop -t 45 >/dev/null 2>&1
say "every node stopped in $((SECONDS - stop_started))s"
for svc in "${SERVICES[@]}"; do
    c="$(container "$svc")"
    code="$(docker inspect -f '{{.State.ExitCode}}' "$c")"
    log="$(docker logs --since "$(docker inspect -f '{{.State.StartedAt}}' "$c")" "$c" 2>&1)"
    [[ "$code" == 0 ]] || fail "$svc exited with $code on docker-compose stop"
    grep -qF "shutdown: done" <<<"$log" || fail "$svc did not log \"shutdown: done\""
    if grep -qE "did not drain|did not all close|deadline" <<<"$log"; then
        say "WARN: $svc ran into its shutdown deadline:"
        sed 's/^/    /' <<<"$(grep -E "shutdown|drain|close|deadline" <<<"$log")"
    fi
done

"$PY" - "$WORK/summary.json" "$WORK/phases" <<'EOF'
import collections, json, sys
s = json.load(open(sys.argv[1]))
phases = [l.split(" ", 1) for l in open(sys.argv[2]).read().splitlines()]
print(f"    summary: {s['spans_acked']}/{s['spans']} spans acked, {s['traces_fully_acked']} traces "
      f"read back {s['verify']['complete']}/{s['verify']['traces']}; slowest batch "
      f"{s['slowest_batch_seconds']}s; status codes met (retries included), by phase:")
for i, (start, name) in enumerate(phases):
    end = float(phases[i + 1][0]) if i + 1 < len(phases) else float("inf")
    codes = collections.Counter(c for t, c in s["code_times"] if float(start) <= t < end)
    print(f"      {name:42s} {dict(codes) or '-'}")
    if name.startswith(("fault 2: ingester-2 draining", "fault 4: scaled down to 2")) \
            and codes.get("UNAVAILABLE"):
        sys.exit(f"writes paused in phase {name!r}: {dict(codes)}")
EOF
PASSED=1
say "PASS: the compose cluster kept every acked trace through a crash, a drain, a partition and a scale-down"
