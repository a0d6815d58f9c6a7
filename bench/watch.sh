# The `watch` benchmark section; sourced by bench/run.sh (which defines log, die, now, since,
# median, ratio, row, lab_up, lab_down, WORK, BIN, RUNS, and via bench/sections.sh: sql,
# via_ssh, start_sshd).
#
# A 1+2 lab over the bench's sshd, a three-member etcd on 127.0.0.1 (Debian's etcd 3.4), two
# `repltool watch` processes, and examples/writer.rs inserting into whichever server takes
# writes. Each run SIGKILLs the master at a random point of the watchers' 1 s round and reads,
# from the writer, the longest gap between two acknowledged writes: from the last write on the
# old master to the first on the new one. Then the same kill under MHA's masterha_manager
# (Debian's mha4mysql-manager, default ping_interval 3), when it is installed and can run here.
# Ports: lab 23540-23542, etcd 23591-23596 (clients 23591-23593, peers 23594-23596).

WATCH_RUNS=${WATCH_RUNS:-10}
ETCD_PIDS=()

start_etcd() {
  local i cluster="" dir
  command -v etcd >/dev/null || die "etcd is not installed (apt-get install etcd-server etcd-client)"
  for i in 1 2 3; do
    cluster+="${cluster:+,}b$i=http://127.0.0.1:$((23593 + i))"
  done
  for i in 1 2 3; do
    dir="$WORK/etcd$i"
    mkdir -p "$dir"
    etcd --name "b$i" --data-dir "$dir/data" \
      --listen-client-urls "http://127.0.0.1:$((23590 + i))" --advertise-client-urls "http://127.0.0.1:$((23590 + i))" \
      --listen-peer-urls "http://127.0.0.1:$((23593 + i))" --initial-advertise-peer-urls "http://127.0.0.1:$((23593 + i))" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token repltool-bench \
      >"$dir/etcd.log" 2>&1 &
    ETCD_PIDS+=($!)
  done
  i=0
  until ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:23591,http://127.0.0.1:23592 --dial-timeout=1s --command-timeout=2s put /bench/ping 1 >/dev/null 2>&1; do
    i=$((i + 1)); [ "$i" -lt 100 ] || die "etcd did not start: $(cat "$WORK/etcd1/etcd.log")"; sleep 0.2
  done
}

stop_etcd() {
  local p
  for p in "${ETCD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${ETCD_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ETCD_PIDS=()
}

# watch_lab DIR PREFIX: a fresh 1+2 lab over SSH, the app account, `watch:` with PREFIX, init.
watch_lab() {
  local d="$1"
  lab_up "$d" 3 23540
  via_ssh "$d"
  sql "$d" 1 "CREATE DATABASE app; CREATE TABLE app.seq (id BIGINT PRIMARY KEY)"
  cat >>"$d/topology.yaml" <<EOF
watch:
  etcd: [http://127.0.0.1:23591, http://127.0.0.1:23592, http://127.0.0.1:23593]
  prefix: $2
  interval: 1s
  confirm: 500ms
EOF
  "$BIN" init -f "$d/topology.yaml" >/dev/null 2>"$WORK/init.err" || { cat "$WORK/init.err" >&2; die "init for watch failed"; }
  app_user "$d"
}

# app_user DIR: the writer's account, created on the master after init so that it replicates
# (a seed copies user databases, not the mysql schema); waits until every node has it.
app_user() {
  local n=0 k
  sql "$1" 1 "CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'app-pw'; GRANT SELECT, INSERT ON app.* TO 'app'@'127.0.0.1'"
  for k in 2 3; do
    until [ "$(sql "$1" "$k" "SELECT COUNT(*) FROM mysql.user WHERE User = 'app'")" = 1 ]; do
      n=$((n + 1)); [ "$n" -lt 500 ] || die "node$k did not get the app account by replication"; sleep 0.01
    done
  done
}

# writer_line FILE: the writer's JSON, for the log.
writer_line() { tr -d '\n' <"$1"; }

# after_kill DIR PRE: the writer acknowledged writes after the failover (its last id is well past
# PRE, the master's last id just before the kill: otherwise its longest gap would not include
# the outage), and a surviving node holds every acknowledged id (none lost).
after_kill() {
  local last k c
  last=$(grep -o '"last": [0-9]*' "$WORK/writer.json" | grep -o '[0-9]*$')
  [ "${last:-0}" -gt $(($2 + 10)) ] || die "the writer did not write on the new master (last id ${last:-none}, $2 before the kill): $(cat "$WORK/writer.json"); watchers: $(cat "$WORK"/w[12].log 2>/dev/null); servers: $(for k in 2 3; do sql "$1" "$k" "SELECT @@read_only, (SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'app'), (SELECT GROUP_CONCAT(STATE, ':', LEFT(INFO, 60)) FROM information_schema.PROCESSLIST WHERE USER = 'app')" 2>&1; done)"
  for k in 2 3; do
    c=$(sql "$1" "$k" "SELECT COUNT(*) FROM app.seq WHERE id <= $last" 2>/dev/null || echo 0)
    [ "$c" = "$last" ] && return 0
  done
  die "no surviving node holds every acknowledged write up to $last ($(cat "$WORK/writer.json"))"
}

lab_ports() { grep -o '"port": *[0-9]*' "$1/lab.json" | grep -o '[0-9]*$' | tr '\n' ' '; }

# gap_ms: the writer's longest gap between acknowledgements.
gap_ms() { grep -o '"max_gap_ms": [0-9.]*' "$1" | grep -o '[0-9.]*$'; }

section_watch() {
  local d="$WORK/lab-watch" i k t0 wp p1 p2 gap W ports n pre
  cargo build --release --quiet --example writer
  W="$PWD/target/release/examples/writer"
  start_etcd
  : >"$WORK/watch.txt"
  : >"$WORK/watch-floor.txt"
  for i in $(seq "$WATCH_RUNS"); do
    log "watch run $i/$WATCH_RUNS: SIGKILL of the master under 2 watchers..."
    watch_lab "$d" "/bench/run$i"
    cp "$d/topology.yaml" "$d/w1.yaml"
    cp "$d/topology.yaml" "$d/w2.yaml"
    "$BIN" watch -f "$d/w1.yaml" --id w1 2>"$WORK/w1.log" &
    p1=$!
    "$BIN" watch -f "$d/w2.yaml" --id w2 2>"$WORK/w2.log" &
    p2=$!
    n=0
    until grep -q "healthy node1" "$WORK/w1.log" && grep -q "healthy node1" "$WORK/w2.log"; do
      n=$((n + 1)); [ "$n" -lt 300 ] || die "watchers did not start: $(cat "$WORK/w1.log")"; sleep 0.05
    done
    ports=$(lab_ports "$d")
    # shellcheck disable=SC2086
    "$W" 8 100000000 $ports >"$WORK/writer.json" &
    wp=$!
    # A random point of the watchers' round.
    sleep "1.$((RANDOM % 1000))"
    pre=$(sql "$d" 1 "SELECT COALESCE(MAX(id), 0) FROM app.seq")
    kill -9 "$(cat "$d/node1/run/mysqld.pid")"
    n=0
    until grep -q "^[^ ]* [^ ]* recovered " "$WORK/w1.log" "$WORK/w2.log"; do
      n=$((n + 1)); [ "$n" -lt 300 ] || die "no recovery within 15 s: $(cat "$WORK/w1.log" "$WORK/w2.log")"; sleep 0.05
    done
    # The writer ends by itself (8 s) and prints its gaps; meanwhile a second (wrong) recovery
    # would show up.
    wait "$wp" || die "the writer failed: $(cat "$WORK/writer.json")"
    kill "$p1" "$p2" 2>/dev/null || true; wait "$p1" "$p2" 2>/dev/null || true
    k=$(cat "$WORK/w1.log" "$WORK/w2.log" | grep -c "^[^ ]* [^ ]* recovered " || true)
    [ "$k" = 1 ] || die "$k recoveries instead of 1: $(cat "$WORK/w1.log" "$WORK/w2.log")"
    gap=$(gap_ms "$WORK/writer.json" || true)
    [ -n "$gap" ] || die "the writer printed no gap: $(cat "$WORK/writer.json")"
    log "  first acknowledged write on the new master $gap ms after the last one on the old ($(writer_line "$WORK/writer.json"))"
    after_kill "$d" "$pre"
    awk -v g="$gap" 'BEGIN { printf "%.3f\n", g / 1000 }' >>"$WORK/watch.txt"
    [ -n "${BENCH_LOGS:-}" ] && cat "$WORK/w1.log" "$WORK/w2.log" >"$BENCH_LOGS/watch-$i.txt"
    lab_down "$d"
  done
  # Floor: the same kill with a detector that knows at once (promote right after the kill).
  for i in 1 2 3; do
    log "watch floor $i/3: SIGKILL then an immediate \`promote node2\`..."
    watch_lab "$d" "/bench/floor$i"
    ports=$(lab_ports "$d")
    # shellcheck disable=SC2086
    "$W" 8 100000000 $ports >"$WORK/writer.json" &
    wp=$!
    sleep 1
    pre=$(sql "$d" 1 "SELECT COALESCE(MAX(id), 0) FROM app.seq")
    kill -9 "$(cat "$d/node1/run/mysqld.pid")"
    "$BIN" promote node2 --yes -f "$d/topology.yaml" >/dev/null 2>"$WORK/promote.err" || { cat "$WORK/promote.err" >&2; die "floor promote failed"; }
    wait "$wp" || true
    gap=$(gap_ms "$WORK/writer.json" || true)
    [ -n "$gap" ] || die "the writer printed no gap: $(cat "$WORK/writer.json")"
    after_kill "$d" "$pre"
    awk -v g="$gap" 'BEGIN { printf "%.3f\n", g / 1000 }' >>"$WORK/watch-floor.txt"
    lab_down "$d"
  done
  stop_etcd
  local m worst floor
  m=$(median <"$WORK/watch.txt")
  worst=$(sort -n "$WORK/watch.txt" | tail -n 1)
  floor=$(median <"$WORK/watch-floor.txt")
  log "  runs: $(tr '\n' ' ' <"$WORK/watch.txt"); floor runs: $(tr '\n' ' ' <"$WORK/watch-floor.txt")"
  row "\`watch\`, 2 watchers: SIGKILL of the master -> first acknowledged write on the new master, p50 (target < 3 s; floor: promote at once after the kill)" "$m" "$WATCH_RUNS" "$floor" "$(ratio "$m" "$floor")"
  row "\`watch\`, 2 watchers: the same, worst of $WATCH_RUNS (target < 5 s)" "$worst" "$WATCH_RUNS" "$floor" "$(ratio "$worst" "$floor")"
  section_watch_mha
}

# The same SIGKILL under MHA's monitor (masterha_manager with its defaults: ping_interval 3,
# ping_type SELECT) on the same kind of lab, WATCH_MHA_RUNS times (default 3). MHA reaches the
# nodes over the bench's sshd (its ssh_port and ssh_options) and MySQL over TCP.
WATCH_MHA_RUNS=${WATCH_MHA_RUNS:-3}
section_watch_mha() {
  local d="$WORK/lab-mha" i n wp mp gap W ports cnf pw rpw pre why=""
  W="$PWD/target/release/examples/writer"
  if ! command -v masterha_manager >/dev/null; then
    row "MHA masterha_manager: not installed (apt-get install mha4mysql-manager mha4mysql-node)" "-" 0 "-" "-"
    return
  fi
  # Debian's MHA 0.58 does not run against Debian's MariaDB as packaged. It dies on MariaDB's version string (`10.11.19-MariaDB-0+deb12u1` has six
  # numbers for a three-number sprintf, fatal under its `use warnings FATAL`): run it with the
  # upstream fix of that one function, from a private PERL5LIB (the manager here, the node
  # scripts through the bench's sshd), the package itself untouched.
  mkdir -p "$WORK/perl5/MHA"
  cat >"$WORK/perl5/fix.pl" <<'PERL'
s{sprintf\( '%03d%03d%03d', \$str =~ m/\(\\d\+\)/g \)}{sprintf( '%03d%03d%03d', \$str =~ m/(\\d+)\\.(\\d+)\\.(\\d+)/ )};
s{sprintf\( '%03d%03d', \$str =~ m/\(\\d\+\)/g \)}{sprintf( '%03d%03d', \$str =~ m/(\\d+)\\.(\\d+)/ )};
PERL
  perl -p "$WORK/perl5/fix.pl" /usr/share/perl5/MHA/NodeUtil.pm >"$WORK/perl5/MHA/NodeUtil.pm"
  [ "$(PERL5LIB="$WORK/perl5" perl -MMHA::NodeUtil -e 'print MHA::NodeUtil::parse_mysql_version("10.11.19-MariaDB-0+deb12u1")' 2>&1)" = 010011019 ] ||
    die "could not patch MHA::NodeUtil::parse_mysql_version"
  # And its node scripts read @@global.super_read_only unconditionally, which MariaDB does not
  # have ("Unknown system variable"): treat that as "not set".
  cat >"$WORK/perl5/fix2.pl" <<'PERL'
s{(\$dbh->prepare\("SELECT \\\@\\\@global\.super_read_only as Value"\);\n\s*)\$sth->execute\(\);}{$1return ( 0, 0 ) unless eval { \$sth->execute(); 1 };};
PERL
  perl -0p "$WORK/perl5/fix2.pl" /usr/share/perl5/MHA/SlaveUtil.pm >"$WORK/perl5/MHA/SlaveUtil.pm"
  grep -q 'return ( 0, 0 ) unless eval' "$WORK/perl5/MHA/SlaveUtil.pm" || die "could not patch MHA::SlaveUtil::check_if_super_read_only"
  export PERL5LIB="$WORK/perl5"
  : >"$WORK/mha.txt"
  for i in $(seq "$WATCH_MHA_RUNS"); do
    log "MHA run $i/$WATCH_MHA_RUNS: SIGKILL of the master under masterha_manager..."
    lab_up "$d" 3 23540
    via_ssh "$d"
    sql "$d" 1 "CREATE DATABASE app; CREATE TABLE app.seq (id BIGINT PRIMARY KEY)"
    "$BIN" init -f "$d/topology.yaml" >/dev/null 2>"$WORK/init.err" || { cat "$WORK/init.err" >&2; die "init for MHA failed"; }
    app_user "$d"
    # MHA's account: the lab's admin over TCP from 127.0.0.1 (it exists). MHA wants the
    # replication account on every candidate too (repltool creates it on a new master only, at
    # promote time).
    pw=$(cat "$d/admin.password")
    rpw=$(cat "$d/repl.password")
    for n in 2 3; do
      sql "$d" "$n" "SET SESSION sql_log_bin = 0; CREATE USER IF NOT EXISTS 'repl'@'127.0.0.1' IDENTIFIED BY '$rpw'; GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'"
    done
    rm -rf "$WORK/mha" && mkdir -p "$WORK/mha/remote"
    cnf="$WORK/mha/app.cnf"
    {
      echo "[server default]"
      echo "user=repltool"
      echo "password=$pw"
      echo "repl_user=repl"
      echo "repl_password=$rpw"
      echo "ssh_user=$(id -un)"
      echo "ssh_port=$SSHD_PORT"
      echo "ssh_options=-i $SSHD_DIR/id -o UserKnownHostsFile=$SSHD_DIR/known_hosts"
      echo "manager_workdir=$WORK/mha"
      echo "manager_log=$WORK/mha/manager.log"
      echo "remote_workdir=$WORK/mha/remote"
      for n in 1 2 3; do
        echo "[server$n]"
        echo "hostname=127.0.0.1"
        echo "port=$(grep -o '"port": *[0-9]*' "$d/lab.json" | sed -n "${n}p" | grep -o '[0-9]*$')"
        echo "master_binlog_dir=$d/node$n/data"
        [ "$n" = 2 ] && echo "candidate_master=1"
      done
    } >"$cnf"
    chmod 600 "$cnf"
    if ! timeout 120 masterha_check_repl --conf="$cnf" >"$WORK/mha/check.log" 2>&1; then
      why="masterha_check_repl failed: $(grep -E '\[error\]' "$WORK/mha/check.log" | head -n 3 | tr '\n' ' ')"
      log "  $why"
      [ -n "${BENCH_LOGS:-}" ] && cp "$WORK/mha/check.log" "$BENCH_LOGS/mha-check-$i.txt"
      lab_down "$d"
      break
    fi
    timeout 120 masterha_manager --conf="$cnf" >"$WORK/mha/stdout.log" 2>&1 &
    mp=$!
    n=0
    until grep -q "Ping(SELECT) succeeded\|Starting ping health check" "$WORK/mha/manager.log" 2>/dev/null; do
      n=$((n + 1)); [ "$n" -lt 600 ] || die "masterha_manager did not start monitoring: $(tail -n 20 "$WORK/mha/manager.log")"; sleep 0.05
    done
    ports=$(lab_ports "$d")
    # shellcheck disable=SC2086
    "$W" 40 100000000 $ports >"$WORK/writer.json" &
    wp=$!
    sleep "1.$((RANDOM % 1000))"
    pre=$(sql "$d" 1 "SELECT COALESCE(MAX(id), 0) FROM app.seq")
    kill -9 "$(cat "$d/node1/run/mysqld.pid")"
    # masterha_manager exits after a failover.
    wait "$mp" || true
    n=0
    until grep -q "Master failover to .* completed successfully\|failed" "$WORK/mha/manager.log"; do
      n=$((n + 1)); [ "$n" -lt 100 ] || break; sleep 0.1
    done
    wait "$wp" || true
    [ -n "${BENCH_LOGS:-}" ] && cp "$WORK/mha/manager.log" "$BENCH_LOGS/mha-$i.txt"
    if ! grep -q "completed successfully" "$WORK/mha/manager.log"; then
      why="masterha_manager did not complete the failover: $(grep -E '\[error\]' "$WORK/mha/manager.log" | head -n 3 | tr '\n' ' ')"
      log "  $why"
      lab_down "$d"
      break
    fi
    gap=$(gap_ms "$WORK/writer.json" || true)
    [ -n "$gap" ] || die "the writer printed no gap: $(cat "$WORK/writer.json")"
    log "  MHA: first acknowledged write on the new master $gap ms after the last one on the old ($(writer_line "$WORK/writer.json"))"
    after_kill "$d" "$pre"
    awk -v g="$gap" 'BEGIN { printf "%.3f\n", g / 1000 }' >>"$WORK/mha.txt"
    lab_down "$d"
  done
  if [ -s "$WORK/mha.txt" ]; then
    local m worst
    m=$(median <"$WORK/mha.txt")
    worst=$(sort -n "$WORK/mha.txt" | tail -n 1)
    log "  MHA runs: $(tr '\n' ' ' <"$WORK/mha.txt")"
    row "MHA 0.58 masterha_manager (defaults: ping every 3 s): the same kill, p50" "$m" "$(wc -l <"$WORK/mha.txt")" "-" "-"
    row "MHA 0.58 masterha_manager: the same kill, worst" "$worst" "$(wc -l <"$WORK/mha.txt")" "-" "-"
  else
    row "MHA 0.58 masterha_manager: could not run here ($why)" "-" 0 "-" "-"
  fi
}

# The same SIGKILL with the application writing through the writer endpoint (HAProxy on a
# network-namespace host of its own; three MariaDB hosts, three etcd hosts, two watchers), as
# the issue asks: driver live::watch::bench_watch_through_the_writer_endpoint (WATCH_RUNS runs,
# a fresh lab each). Run as root through `live`.
section_watch_endpoint() {
  log "watch_endpoint: SIGKILL of the master under 2 watchers, writes through HAProxy (x$WATCH_RUNS)..."
  test_bench_rows watch_endpoint live::watch::bench_watch_through_the_writer_endpoint
}
