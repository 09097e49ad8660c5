# Sourced by the measurement scripts: a cluster of separate ringtail processes on loopback.
#
#   start_cluster <ip prefix, e.g. 127.0.99> <work dir> [extra ringtail flags...]
#
# Starts ingester-1..3 on <prefix>.1-3 and a distributor+querier on <prefix>.100 with a
# filesystem store in <work dir>/blocks, appends their PIDs to the `pids` array and waits
# until the front node's write ring has all three ingesters.
start_cluster() {
  local prefix=$1 work=$2; shift 2
  local seeds="$prefix.1:7946,$prefix.2:7946,$prefix.3:7946"
  local spec name host target ip
  for spec in ingester-1:1:ingester ingester-2:2:ingester ingester-3:3:ingester front:100:distributor,querier; do
    IFS=: read -r name host target <<< "$spec"
    ip=$prefix.$host
    RUST_LOG=warn "$bin" --target="$target" --node-name="$name" --data-dir="$work/$name" \
      --http-listen="$ip:3200" --grpc-listen="$ip:9095" --otlp-grpc-listen="$ip:4317" \
      --otlp-http-listen="$ip:4318" --gossip-listen="$ip:7946" --gossip-join="$seeds" \
      --storage-path="$work/blocks" --cluster-secret="measurement-cluster-$prefix" \
      "$@" > "$work/$name.log" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 1 150); do
    curl -fsS -H 'Accept: application/json' "http://$prefix.100:3200/ring" 2>/dev/null |
      grep -q '"write_ring_ingesters":\["ingester-1","ingester-2","ingester-3"\]' && return 0
    sleep 0.2
  done
  echo "the cluster did not form; logs in $work" >&2
  return 1
}
