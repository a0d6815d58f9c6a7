# Benchmark sections for init, status, promote and seeding; sourced by bench/run.sh (which
# defines log, die, now, since, median, ratio, row, lab_up, lab_down, WORK, BIN, RUNS).
# Every cluster is reached over a real sshd on 127.0.0.1 (SQL through SSH port-forwards), as
# users run repltool. Ports: labs 23520-23579, sshd 23580-23589.

# admin SQL on a lab node: sql DIR K "STATEMENT"
sql() { mariadb --defaults-file="$1/node$2/client.cnf" -N -e "$3"; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

SSHD_PORT=""
SSHD_DIR=""
start_sshd() {
  [ -n "$SSHD_PORT" ] && return
  SSHD_DIR="$WORK/sshd"
  local d="$SSHD_DIR" p n
  mkdir -p "$d" /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$d/host_key" </dev/null
  ssh-keygen -q -t ed25519 -N '' -f "$d/id" </dev/null
  cp "$d/id.pub" "$d/authorized_keys"
  for p in $(seq 23580 23589); do
    if port_free "$p"; then SSHD_PORT=$p; break; fi
  done
  [ -n "$SSHD_PORT" ] || die "no free port for sshd in 23580-23589"
  {
    echo "Port $SSHD_PORT"
    echo "ListenAddress 127.0.0.1"
    echo "HostKey $d/host_key"
    echo "AuthorizedKeysFile $d/authorized_keys"
    echo "PermitRootLogin prohibit-password"
    echo "PasswordAuthentication no"
    echo "KbdInteractiveAuthentication no"
    echo "UsePAM no"
    echo "StrictModes no"
    echo "PidFile $d/sshd.pid"
    echo "MaxSessions 100"
    echo "MaxStartups 100"
    # PERL5LIB: the watch section's patched MHA module for the node scripts (bench/watch.sh).
    echo "SetEnv SHLVL=1 PERL5LIB=$WORK/perl5"
    # scp (OpenSSH 9 copies over SFTP) needs it: MHA fetches the dead master's binary log so.
    echo "Subsystem sftp /usr/lib/openssh/sftp-server"
  } >"$d/sshd_config"
  "$(command -v sshd || echo /usr/sbin/sshd)" -f "$d/sshd_config" -E "$d/sshd.log" || die "sshd did not start: $(cat "$d/sshd.log")"
  printf '[127.0.0.1]:%s %s\n' "$SSHD_PORT" "$(cut -d' ' -f1,2 "$d/host_key.pub")" >"$d/known_hosts"
  n=0
  until ! port_free "$SSHD_PORT"; do
    n=$((n + 1)); [ "$n" -lt 500 ] || die "sshd did not listen"; sleep 0.01
  done
}

stop_sshd() {
  [ -n "$SSHD_DIR" ] && [ -f "$SSHD_DIR/sshd.pid" ] && kill "$(cat "$SSHD_DIR/sshd.pid")" 2>/dev/null || true
}

# via_ssh DIR: rewrite DIR/topology.yaml to reach every node over the bench's sshd.
via_ssh() {
  start_sshd
  local f="$1/topology.yaml"
  awk -v u="$(id -un)" -v p="$SSHD_PORT" -v d="$SSHD_DIR" '
    /^  transport: local$/ {
      print "  transport: ssh"; print "  ssh:"; print "    user: " u; print "    port: " p
      print "    identity_file: " d "/id"; print "    known_hosts: " d "/known_hosts"; next
    }
    { print }' "$f" >"$f.ssh" && mv "$f.ssh" "$f"
}

# Floor for init: ONE server restart (what enabling log-bin costs), by the lab's own ctl.
FLOOR_RESTART=""
measure_restart() {
  [ -n "$FLOOR_RESTART" ] && return
  log "floor: one server restart x$RUNS..."
  local d="$WORK/lab-restart" i t0
  lab_up "$d" 1 23575
  : >"$WORK/restart.txt"
  for i in $(seq "$RUNS"); do
    t0=$(now)
    "$d/node1/ctl" restart >/dev/null || die "ctl restart failed"
    since "$t0" >>"$WORK/restart.txt"
  done
  FLOOR_RESTART=$(median <"$WORK/restart.txt")
  lab_down "$d"
}

section_init() {
  measure_restart
  local n port i t0 m r d m1 m3 m7 target
  for n in 1 3 7; do
    port=$((23520 + 10 * n))
    d="$WORK/lab-init-$n"
    log "init 1+$n over SSH x$RUNS..."
    : >"$WORK/init.txt"
    : >"$WORK/rerun.txt"
    : >"$WORK/prestart.txt"
    for i in $(seq "$RUNS"); do
      lab_up "$d" $((n + 1)) "$port"
      via_ssh "$d"
      # The physical floor on this machine: every server of the cluster restarted at once
      # (init restarts them in parallel to turn the binary log on).
      t0=$(now)
      for k in $(seq $((n + 1))); do "$d/node$k/ctl" restart >/dev/null & done
      wait
      since "$t0" >>"$WORK/prestart.txt"
      t0=$(now)
      "$BIN" init -f "$d/topology.yaml" >/dev/null 2>"$WORK/init.err" || { cat "$WORK/init.err" >&2; die "init 1+$n failed"; }
      since "$t0" >>"$WORK/init.txt"
      t0=$(now)
      "$BIN" init -f "$d/topology.yaml" >"$WORK/rerun.out" 2>&1 || die "re-run failed: $(cat "$WORK/rerun.out")"
      since "$t0" >>"$WORK/rerun.txt"
      grep -q "nothing to do" "$WORK/rerun.out" || die "re-run changed something: $(cat "$WORK/rerun.out")"
      lab_down "$d"
    done
    m=$(median <"$WORK/init.txt")
    case $n in 1) m1=$m ;; 3) m3=$m ;; 7) m7=$m ;; esac
    row "\`init\` 1+$n over SSH, empty data (floor: one server restart)" "$m" "$RUNS" "$FLOOR_RESTART" "$(ratio "$m" "$FLOOR_RESTART")"
    r=$(median <"$WORK/prestart.txt")
    row "\`init\` 1+$n over SSH (floor: its $((n + 1)) servers restarted at once)" "$m" "$RUNS" "$r" "$(ratio "$m" "$r")"
    r=$(median <"$WORK/rerun.txt")
    row "\`init\` re-run 1+$n, nothing to do (target < 0.5 s)" "$r" "$RUNS" "-" "-"
  done
  row "\`init\` 1+7 against 1+1 (target ratio <= 1.3)" "$m7" "$RUNS" "$m1" "$(ratio "$m7" "$m1")"
  target=$(awk -v f="$FLOOR_RESTART" 'BEGIN { printf "%.3f", 1.5 * f + 0.7 }')
  row "\`init\` 1+3 against 1.5 x floor + 0.7 s (target ratio <= 1)" "$m3" "$RUNS" "$target" "$(ratio "$m3" "$target")"
}

# The first K hosts of a topology file (node1..nodeK), everything else kept.
first_hosts() {
  awk -v k="$2" '
    /^hosts:/ { inh = 1; print; next }
    inh && /^  [A-Za-z0-9_.-]+:$/ { n++ }
    !inh || n <= k { print }' "$1"
}

section_status() {
  local d="$WORK/lab-status" k t0 i m one f hole_pid hole_port n
  log "status: 8-node lab over SSH..."
  lab_up "$d" 8 23540
  via_ssh "$d"
  "$BIN" init -f "$d/topology.yaml" >/dev/null 2>"$WORK/init.err" || { cat "$WORK/init.err" >&2; die "init for status failed"; }
  for k in 1 4 8; do
    f="$d/status-$k.yaml"
    first_hosts "$d/topology.yaml" "$k" >"$f"
    : >"$WORK/status.txt"
    for i in $(seq $((RUNS * 2))); do
      t0=$(now)
      "$BIN" status -f "$f" >/dev/null || die "status on $k host(s) is not healthy"
      since "$t0" >>"$WORK/status.txt"
    done
    m=$(median <"$WORK/status.txt")
    [ "$k" = 1 ] && one=$m
    row "\`status\`, $k host(s) over SSH (floor: 1 host; target 8 hosts < 0.3 s, ratio <= 1.5)" "$m" "$((RUNS * 2))" "$one" "$(ratio "$m" "$one")"
  done
  # The physical floor of the ratio: the same sshd answering 1, then 8 OpenSSH logins at once
  # (every login costs sshd a fork, an exec and a key exchange on these 2 cores).
  local sshcmd=(ssh -q -p "$SSHD_PORT" -i "$SSHD_DIR/id" -o UserKnownHostsFile="$SSHD_DIR/known_hosts" -o BatchMode=yes "$(id -un)@127.0.0.1" true)
  : >"$WORK/ssh1.txt"
  : >"$WORK/ssh8.txt"
  for i in $(seq "$RUNS"); do
    t0=$(now); "${sshcmd[@]}" || die "ssh login failed"; since "$t0" >>"$WORK/ssh1.txt"
    t0=$(now)
    for k in 1 2 3 4 5 6 7 8; do "${sshcmd[@]}" & done
    wait
    since "$t0" >>"$WORK/ssh8.txt"
  done
  local s1 s8
  s1=$(median <"$WORK/ssh1.txt")
  s8=$(median <"$WORK/ssh8.txt")
  row "floor: OpenSSH \`ssh true\`, 8 logins at once against 1 (the sshd's own ratio)" "$s8" "$RUNS" "$s1" "$(ratio "$s8" "$s1")"
  # One host partitioned: its SSH port is a listener whose accept queue is full, so SYNs are
  # dropped, not refused.
  python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)
held = []
for _ in range(8):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(s.getsockname())
    except BlockingIOError: pass
    held.append(c)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
time.sleep(300)
' "$WORK/hole.port" &
  hole_pid=$!
  n=0
  until [ -s "$WORK/hole.port" ]; do n=$((n + 1)); [ "$n" -lt 500 ] || die "no black hole"; sleep 0.01; done
  hole_port=$(cat "$WORK/hole.port")
  awk -v p="$hole_port" '
    /^  node8:$/ { in8 = 1 }
    in8 && /^    address:/ { print; print "    ssh:"; print "      port: " p; in8 = 0; next }
    { print }' "$d/topology.yaml" >"$d/status-part.yaml"
  : >"$WORK/status.txt"
  for i in $(seq "$RUNS"); do
    t0=$(now)
    if "$BIN" status -f "$d/status-part.yaml" --timeout 1 >/dev/null 2>&1; then die "a partitioned host went unnoticed"; fi
    since "$t0" >>"$WORK/status.txt"
  done
  kill "$hole_pid" 2>/dev/null || true
  m=$(median <"$WORK/status.txt")
  row "\`status\`, 8 hosts, one partitioned (packets dropped), --timeout 1 (floor: the timeout)" "$m" "$RUNS" "1.000" "$(ratio "$m" 1)"
  lab_down "$d"
}

section_promote() {
  local d="$WORK/lab-promote" i t0 m gap acked ports wp k n W
  cargo build --release --quiet --example writer
  W="$PWD/target/release/examples/writer"
  : >"$WORK/sw.txt"
  : >"$WORK/gap.txt"
  : >"$WORK/fo.txt"
  for i in $(seq "$RUNS"); do
    log "promote run $i/$RUNS: switchover under load, then failover (1+3 over SSH)..."
    lab_up "$d" 4 23550
    via_ssh "$d"
    "$BIN" init -f "$d/topology.yaml" >/dev/null 2>"$WORK/init.err" || { cat "$WORK/init.err" >&2; die "init for promote failed"; }
    # After init, so the account replicates: the writer must be able to write on the new
    # master too, or the gap measures nothing after the switchover.
    sql "$d" 1 "CREATE DATABASE app; CREATE TABLE app.seq (id BIGINT PRIMARY KEY); CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'app-pw'; GRANT SELECT, INSERT ON app.* TO 'app'@'127.0.0.1'"
    for k in 2 3 4; do
      n=0
      until [ "$(sql "$d" "$k" "SELECT COUNT(*) FROM mysql.user WHERE User = 'app'")" = 1 ]; do
        n=$((n + 1)); [ "$n" -lt 1000 ] || die "the app account did not replicate to node$k"; sleep 0.01
      done
    done
    ports=$(grep -o '"port": *[0-9]*' "$d/lab.json" | grep -o '[0-9]*$' | tr '\n' ' ')
    # shellcheck disable=SC2086
    "$W" 3 100000000 $ports >"$WORK/writer.json" &
    wp=$!
    sleep 1
    t0=$(now)
    "$BIN" promote node2 --yes -f "$d/topology.yaml" >"$WORK/promote.out" 2>&1 || { cat "$WORK/promote.out" >&2; die "switchover failed"; }
    since "$t0" >>"$WORK/sw.txt"
    [ -n "${BENCH_LOGS:-}" ] && cp "$WORK/promote.out" "$BENCH_LOGS/switchover-$i.txt"
    wait "$wp"
    gap=$(grep -o '"max_gap_ms": [0-9.]*' "$WORK/writer.json" | grep -o '[0-9.]*$')
    acked=$(grep -o '"acked": [0-9]*' "$WORK/writer.json" | grep -o '[0-9]*$')
    echo "$gap" >>"$WORK/gap.txt"
    # Every acknowledged write on every server: 0 lost.
    for k in 1 2 3 4; do
      n=0
      until [ "$(sql "$d" "$k" 'SELECT COUNT(*) FROM app.seq')" = "$acked" ]; do
        n=$((n + 1)); [ "$n" -lt 1000 ] || die "node$k lacks acknowledged writes after the switchover"; sleep 0.01
      done
    done
    log "  switchover: $acked writes acknowledged, longest gap ${gap} ms, all on every server"
    # Failover: SIGKILL the new master, promote node3, until every slave replicates from it.
    kill -9 "$(cat "$d/node2/run/mysqld.pid")"
    t0=$(now)
    "$BIN" promote node3 --yes -f "$d/topology.yaml" >"$WORK/promote.out" 2>&1 || { cat "$WORK/promote.out" >&2; die "failover failed"; }
    since "$t0" >>"$WORK/fo.txt"
    [ -n "${BENCH_LOGS:-}" ] && cp "$WORK/promote.out" "$BENCH_LOGS/failover-$i.txt"
    "$BIN" status -f "$d/topology.yaml" --format json >"$WORK/st.json" 2>/dev/null || true
    [ "$(grep -c '"replicating_from": "node3"' "$WORK/st.json")" = 2 ] || die "after the failover the slaves do not replicate from node3: $(cat "$WORK/st.json")"
    lab_down "$d"
  done
  m=$(median <"$WORK/sw.txt")
  row "\`promote\` switchover 1+3 over SSH under write load (target < 0.5 s)" "$m" "$RUNS" "-" "-"
  m=$(median <"$WORK/gap.txt")
  row "switchover: longest gap between acknowledged writes, in ms (target < 50; 0 lost)" "$m" "$RUNS" "-" "-"
  m=$(median <"$WORK/fo.txt")
  row "\`promote\` failover 1+3 over SSH, SIGKILLed master, until all replicate (target < 1 s)" "$m" "$RUNS" "-" "-"
}

section_seed() {
  local mb=${SEED_MB:-1024} d="$WORK/lab-seed" i t0 f ours rows
  log "seed: filling ${mb} MiB on node1..."
  lab_up "$d" 2 23560
  via_ssh "$d"
  # Rows of about 1 KiB, doubled until the size is reached.
  sql "$d" 1 "CREATE DATABASE big; CREATE TABLE big.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, pad VARCHAR(1000)) ENGINE=InnoDB; INSERT INTO big.t (pad) VALUES (REPEAT(MD5(RAND()), 31))"
  rows=$((mb * 1024))
  while [ "$(sql "$d" 1 'SELECT COUNT(*) FROM big.t')" -lt "$rows" ]; do
    sql "$d" 1 "INSERT INTO big.t (pad) SELECT REPEAT(MD5(RAND()), 31) FROM big.t LIMIT $rows"
  done
  log "seed: floor, the raw dump | client pipe into node2, x3..."
  : >"$WORK/pipe.txt"
  for i in 1 2 3; do
    sql "$d" 2 "DROP DATABASE IF EXISTS big"
    t0=$(now)
    mariadb-dump --defaults-file="$d/node1/client.cnf" --single-transaction --skip-lock-tables --hex-blob --databases big |
      mariadb --defaults-file="$d/node2/client.cnf" --init-command='SET SESSION sql_log_bin=0' || die "raw pipe failed"
    since "$t0" >>"$WORK/pipe.txt"
  done
  f=$(median <"$WORK/pipe.txt")
  sql "$d" 2 "DROP DATABASE IF EXISTS big"
  log "seed: repltool init (the dump streamed over SSH from node1 through repltool into node2)..."
  "$BIN" init -f "$d/topology.yaml" >"$WORK/seed.out" 2>&1 || { cat "$WORK/seed.out" >&2; die "init with seeding failed"; }
  ours=$(grep -o 'bytes in [0-9.]*s' "$WORK/seed.out" | head -n 1 | grep -o '[0-9.]*')
  [ -n "$ours" ] || die "no seeding time in init's output: $(cat "$WORK/seed.out")"
  row "seeding ${mb} MiB over SSH into a slave (floor: the raw dump-into-client pipe; target ratio <= 1.11)" "$ours" 1 "$f" "$(ratio "$ours" "$f")"
  lab_down "$d"
}

# Application endpoints (`proxies:`): switchovers and failovers with an application writer
# behind repltool's HAProxy and nginx, against the same switchover behind a HAProxy set up as
# the guides do, on the netns test hosts (10.231.77.0/24, see tests/it/support/netns.rs): the
# driver is tests/it/live/proxy_bench.rs, which prints `BENCH|what|median|runs|floor|ratio`.
section_proxy() {
  log "proxy: switchovers and failovers behind HAProxy and nginx, then behind the guides' HAProxy (x$RUNS each)..."
  test_bench_rows proxy live::proxy_bench::bench_proxy_endpoints
}

# Run the ignored test driver TEST (release build, one thread; RUNS and WATCH_RUNS passed on)
# and turn its `BENCH|what|median|runs|floor|ratio` lines into rows; NAME labels its files and
# messages. Its `bench:` progress lines go to stderr.
test_bench_rows() {
  local name=$1 test=$2
  local out="$WORK/$name.out" err="$WORK/$name.err"
  if ! RUNS="$RUNS" WATCH_RUNS="${WATCH_RUNS:-}" cargo test --release --quiet --test it -- \
      --ignored --exact "$test" --nocapture --test-threads=1 >"$out" 2>"$err"; then
    grep '^bench:' "$err" >&2 || true
    tail -n 40 "$err" >&2
    die "the $name benchmark failed"
  fi
  grep '^bench:' "$err" >&2 || true
  grep -q '^BENCH|' "$out" || die "the $name benchmark printed no rows: $(tail -n 20 "$out")"
  local what value runs floor ratio
  while IFS='|' read -r _ what value runs floor ratio; do
    row "$what" "$value" "$runs" "$floor" "$ratio"
  done < <(grep '^BENCH|' "$out")
}
