#!/usr/bin/env bash
# A remote sink down for a long time: the ingestor at RATE events/s (default 1000) for MINUTES
# (default 10) with an InfluxDB sink pointing at a closed port; prints its RSS, the journal size and
# the rows waiting every 30 s. Memory must stay flat: the backlog is on disk.
# Needs: cargo build --release -p ha-ingestor -p ha-sim
set -u
RATE=${RATE:-1000}; MINUTES=${MINUTES:-10}
D=$(mktemp -d); trap 'rm -rf "$D"' EXIT
B=$(cd "$(dirname "$0")/.." && pwd)/target/release
$B/ha-sim --bind 127.0.0.1:18900 --rate "$RATE" --firehose --seed 1 > $D/sim.log 2>&1 &
SIM=$!
sleep 1
cat > $D/ingestor.toml <<CONF
db = "$D/journal.db"
metrics_addr = "127.0.0.1:18901"
[[instance]]
name = "sim"
url = "http://127.0.0.1:18900"
token_env = "SIM_TOKEN"
[[sink]]
name = "influx-down"
[sink.influxdb]
url = "http://127.0.0.1:1"
database = "nowhere"
CONF
SIM_TOKEN=sim-admin-token RUST_LOG=warn $B/ha-ingestor --config $D/ingestor.toml run > $D/ingestor.log 2>&1 &
ING=$!
echo "t_s rss_kib hwm_kib journal_bytes rows behind_rows" | tee $D/samples.txt
for i in $(seq 0 $((MINUTES * 2 - 1))); do
  sleep 30
  rss=$(awk '/VmRSS/{print $2}' /proc/$ING/status); hwm=$(awk '/VmHWM/{print $2}' /proc/$ING/status)
  jb=$(( $(stat -c %s $D/journal.db) + $(stat -c %s $D/journal.db-wal 2>/dev/null || echo 0) ))
  rows=$(sqlite3 $D/journal.db "select count(*) from states" 2>/dev/null)
  behind=$(curl -s 127.0.0.1:18901/metrics | awk '/^ha_ingestor_sink_behind_rows/{print $2}')
  echo "$(( (i+1)*30 )) $rss $hwm $jb $rows $behind" | tee -a $D/samples.txt
done
kill -TERM $ING; wait $ING; kill $SIM; wait $SIM 2>/dev/null
echo finished | tee -a $D/samples.txt
