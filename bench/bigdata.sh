# Benchmark sections for big data: physical against logical seeding of the same data, the two
# routes of the physical stream, the break-even size of `seed: auto`, and `repltool verify`
# against pt-table-checksum on the same cluster with the same planted differences. Sourced by
# bench/run.sh after bench/sections.sh (sql, via_ssh, first_hosts, log, die, now, since, row,
# ratio, lab_up, lab_down, WORK, BIN). Ports: labs 23570-23572 and 23560-23561, the sshd of
# sections.sh.
#
#   BIG_MB=1024 bash bench/run.sh physical verify     size of the data set (default 1024 MiB)
#   BREAK_EVEN_MB="32 128" bash bench/run.sh physical the sizes of the break-even rows

BIG_DIR=""

# Rows of about 1 KiB in big.t, doubled until MB MiB; three small tables for planted
# differences. fill_big DIR MB
fill_big() {
  local d=$1 mb=$2 rows
  sql "$d" 1 "CREATE DATABASE big; CREATE TABLE big.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, pad VARCHAR(1000)) ENGINE=InnoDB; INSERT INTO big.t (pad) VALUES (REPEAT(MD5(RAND()), 31))"
  rows=$((mb * 1024))
  while [ "$(sql "$d" 1 'SELECT COUNT(*) FROM big.t')" -lt "$rows" ]; do
    sql "$d" 1 "INSERT INTO big.t (pad) SELECT REPEAT(MD5(RAND()), 31) FROM big.t LIMIT $rows"
  done
  sql "$d" 1 "CREATE TABLE big.lines (o INT NOT NULL, sku VARBINARY(8) NOT NULL, qty INT, PRIMARY KEY (o, sku)); INSERT INTO big.lines SELECT id DIV 4, UNHEX(CONCAT('0', id MOD 4, 'FF')), id MOD 9 FROM big.t WHERE id <= 40000; CREATE TABLE big.orders (id INT PRIMARY KEY, note VARCHAR(40)); INSERT INTO big.orders SELECT id, 'n' FROM big.t WHERE id <= 40000"
}

# The slave K back to a new, empty server (its replication and copied data gone; config kept):
# what init then seeds again. reset_slave DIR K
reset_slave() {
  sql "$1" "$2" "STOP SLAVE; RESET SLAVE ALL; SET SESSION sql_log_bin = 0; DROP DATABASE IF EXISTS big; DROP DATABASE IF EXISTS repltool"
}

# set_seed FILE METHOD
set_seed() {
  sed -i -e '/^  seed: /d' -e "s/^replication:\$/replication:\n  seed: $2/" "$1"
}

# init_seed FILE OUT [ENV...]: init, die on failure; prints the wall time.
init_seed() {
  local f=$1 out=$2 t0
  shift 2
  t0=$(now)
  env "$@" "$BIN" init -f "$f" >"$out" 2>&1 || { cat "$out" >&2; die "init failed: $*"; }
  since "$t0"
}

# The 3-node cluster with BIG_MB of data on node1, node2 seeded (by the physical section or
# here), node3 not yet. Built once per bench run.
big_cluster() {
  [ -n "$BIG_DIR" ] && return
  BIG_DIR="$WORK/lab-bigdata"
  local mb=${BIG_MB:-1024}
  log "bigdata: a 3-node lab over SSH, ${mb} MiB on node1..."
  lab_up "$BIG_DIR" 3 23570
  via_ssh "$BIG_DIR"
  fill_big "$BIG_DIR" "$mb"
  first_hosts "$BIG_DIR/topology.yaml" 2 >"$BIG_DIR/two.yaml"
}

section_physical() {
  local mb=${BIG_MB:-1024} d t f log_s dir_s ssh_s ssh_note copy raw prep floor two size sizes dd
  big_cluster
  d=$BIG_DIR
  two="$d/two.yaml"
  # Warm-up and config: the first init turns the binary log on everywhere (restarts) and
  # seeds node2 with a dump; its own copy time is kept.
  set_seed "$two" logical
  log "physical: first init (config, restarts, logical seed)..."
  init_seed "$two" "$WORK/big0.out" >/dev/null
  # From here on every init does exactly one thing: seed node2 and start its replication.
  log "physical: logical seed of ${mb} MiB (whole init)..."
  reset_slave "$d" 2
  log_s=$(init_seed "$two" "$WORK/big-log.out")
  copy=$(grep -o 'bytes in [0-9.]*s' "$WORK/big-log.out" | head -n 1 | grep -o '[0-9.]*')
  log "physical: physical seed, direct route..."
  reset_slave "$d" 2
  set_seed "$two" physical
  dir_s=$(init_seed "$two" "$WORK/big-dir.out" REPLTOOL_PHYSICAL_ROUTE=direct)
  grep -q 'directly between the hosts' "$WORK/big-dir.out" || die "not the direct route: $(cat "$WORK/big-dir.out")"
  log "physical: physical seed, through SSH..."
  reset_slave "$d" 2
  # Not fatal: the SSH route has been seen to corrupt the stream (mbstream's checksums catch
  # it and nothing changes on the slave); the row then says so.
  ssh_note=""
  t=$(now)
  if REPLTOOL_PHYSICAL_ROUTE=ssh "$BIN" init -f "$two" >"$WORK/big-ssh.out" 2>&1; then
    ssh_s=$(since "$t")
    grep -q 'through SSH' "$WORK/big-ssh.out" || die "not the SSH route: $(cat "$WORK/big-ssh.out")"
  else
    ssh_s=$(since "$t")
    ssh_note=" FAILED: $(grep -o 'mbstream failed[^.]*' "$WORK/big-ssh.out" | head -n 1)"
    log "  the SSH route failed: $(tail -n 3 "$WORK/big-ssh.out")"
  fi
  # The physical floor: the raw backup stream unpacked into a directory on the same machine,
  # then prepared (no network, no SSH, no restart).
  log "physical: floor, raw mariadb-backup | mbstream -x, then --prepare..."
  dd="$WORK/raw-backup"
  rm -rf "$dd"; mkdir -p "$dd"
  t=$(now)
  mariadb-backup --defaults-file="$d/node1/client.cnf" --backup --stream=mbstream \
    --datadir="$d/node1/data" --target-dir="$WORK" 2>"$WORK/raw-backup.log" | mbstream -x -C "$dd" ||
    die "raw backup failed: $(tail -n 5 "$WORK/raw-backup.log")"
  raw=$(since "$t")
  t=$(now)
  mariadb-backup --prepare --target-dir="$dd" >"$WORK/raw-prepare.log" 2>&1 || die "raw prepare failed"
  prep=$(since "$t")
  floor=$(awk -v a="$raw" -v b="$prep" 'BEGIN { printf "%.3f", a + b }')
  rm -rf "$dd"
  row "seeding ${mb} MiB: logical (dump through SSH), whole init (its copy alone: ${copy} s)" "$log_s" 1 "-" "-"
  row "seeding ${mb} MiB: physical, direct route, whole init (floor: raw backup stream + prepare)" "$dir_s" 1 "$floor" "$(ratio "$dir_s" "$floor")"
  row "seeding ${mb} MiB: physical, through SSH, whole init (floor: raw backup stream + prepare)${ssh_note}" "$ssh_s" 1 "$floor" "$(ratio "$ssh_s" "$floor")"
  row "seeding ${mb} MiB: logical against physical direct (target ratio >= 3)" "$log_s" 1 "$dir_s" "$(ratio "$log_s" "$dir_s")"
  row "seeding ${mb} MiB: physical through SSH against direct" "$ssh_s" 1 "$dir_s" "$(ratio "$ssh_s" "$dir_s")"
  # Break-even of `seed: auto`: both methods at smaller sizes, on a 2-node lab of their own.
  sizes=${BREAK_EVEN_MB:-"32 128 256"}
  for size in $sizes; do
    f="$WORK/lab-break"
    log "physical: break-even at ${size} MiB..."
    lab_up "$f" 2 23560
    via_ssh "$f"
    fill_big "$f" "$size"
    set_seed "$f/topology.yaml" logical
    init_seed "$f/topology.yaml" "$WORK/be0.out" >/dev/null
    reset_slave "$f" 2
    log_s=$(init_seed "$f/topology.yaml" "$WORK/be-log.out")
    reset_slave "$f" 2
    set_seed "$f/topology.yaml" physical
    dir_s=$(init_seed "$f/topology.yaml" "$WORK/be-dir.out")
    row "break-even at ${size} MiB: logical whole init against physical whole init" "$log_s" 1 "$dir_s" "$(ratio "$log_s" "$dir_s")"
    lab_down "$f"
  done
}

section_verify() {
  local d f v_s pt_s ours theirs port2 port3 out t0 rc
  big_cluster
  d=$BIG_DIR
  f="$d/topology.yaml"
  # node2 and node3 seeded (physically) and replicating.
  set_seed "$f" physical
  log "verify: seeding the slaves of the 3-node cluster..."
  "$BIN" init -f "$f" >"$WORK/v-init.out" 2>&1 || { cat "$WORK/v-init.out" >&2; die "init of the verify cluster failed"; }
  log "verify: repltool verify on the clean cluster..."
  "$BIN" verify -f "$f" >"$WORK/v0.out" 2>"$WORK/v0.err" || die "verify found differences on a clean cluster: $(cat "$WORK/v0.out")"
  # Planted on node2 only, behind replication's back: a changed row, a deleted row, an extra
  # row, in three tables.
  sql "$d" 2 "SET SESSION sql_log_bin = 0; SET GLOBAL read_only = 0; UPDATE big.t SET pad = 'tampered' WHERE id = (SELECT id FROM (SELECT id FROM big.t ORDER BY id LIMIT 1 OFFSET 54321) x); DELETE FROM big.lines WHERE o = 77 AND sku = UNHEX('02FF'); INSERT INTO big.orders VALUES (9000000, 'extra'); SET GLOBAL read_only = 1"
  log "verify: repltool verify with 3 planted differences..."
  t0=$(now)
  rc=0
  "$BIN" verify -f "$f" --format json >"$WORK/v1.json" 2>"$WORK/v1.err" || rc=$?
  v_s=$(since "$t0")
  [ "$rc" -eq 1 ] || die "verify did not exit 1 (exit $rc): $(cat "$WORK/v1.json" "$WORK/v1.err")"
  ours=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(" ".join(sorted({x["replica"]+":"+x["table"] for x in d["differences"]})))' "$WORK/v1.json")
  # pt-table-checksum on the same cluster: it writes its checksums on the master (database
  # percona) and reads them back on the replicas, found through a DSN table.
  port2=$(grep -o '"port": *[0-9]*' "$d/lab.json" | sed -n 2p | grep -o '[0-9]*$')
  port3=$(grep -o '"port": *[0-9]*' "$d/lab.json" | sed -n 3p | grep -o '[0-9]*$')
  sql "$d" 1 "CREATE DATABASE IF NOT EXISTS percona; CREATE TABLE IF NOT EXISTS percona.dsns (id INT PRIMARY KEY, parent_id INT, dsn VARCHAR(255)); REPLACE INTO percona.dsns VALUES (1, NULL, 'h=127.0.0.1,P=$port2,F=$d/node2/client.cnf'), (2, NULL, 'h=127.0.0.1,P=$port3,F=$d/node3/client.cnf')"
  log "verify: pt-table-checksum on the same cluster..."
  t0=$(now)
  pt-table-checksum "h=127.0.0.1,P=$(grep -o '"port": *[0-9]*' "$d/lab.json" | sed -n 1p | grep -o '[0-9]*$'),F=$d/node1/client.cnf" \
    --databases big --recursion-method "dsn=D=percona,t=dsns" --no-check-binlog-format \
    --chunk-time 0.5 >"$WORK/pt.out" 2>"$WORK/pt.err" || true
  pt_s=$(since "$t0")
  grep -q 'big.t' "$WORK/pt.out" || die "pt-table-checksum did not run: $(cat "$WORK/pt.out" "$WORK/pt.err")"
  pt-table-checksum "h=127.0.0.1,P=$(grep -o '"port": *[0-9]*' "$d/lab.json" | sed -n 1p | grep -o '[0-9]*$'),F=$d/node1/client.cnf" \
    --databases big --recursion-method "dsn=D=percona,t=dsns" --no-check-binlog-format \
    --replicate-check-only >"$WORK/pt-check.out" 2>&1 || true
  theirs=$(awk '/^Differences on/ { split($3, h, "[.]"); host = $3 } /^big\./ { print $1 }' "$WORK/pt-check.out" | sort -u | tr '\n' ' ')
  log "  repltool verify: $ours"
  log "  pt-table-checksum: $theirs ($(grep -c . "$WORK/pt.out") lines; $(head -n 3 "$WORK/pt-check.out" | tr '\n' ' '))"
  out="$(echo "$ours" | tr ' ' '\n' | sed 's/^[^:]*://' | sort -u | tr '\n' ' ')"
  [ "$out" = "$theirs" ] || log "  WARNING: they differ: verify [$out], pt-table-checksum [$theirs]"
  row "\`verify\` of ${BIG_MB:-1024} MiB, 1+2 over SSH, 3 planted differences found ($out)" "$v_s" 1 "$pt_s" "$(ratio "$v_s" "$pt_s")"
  row "pt-table-checksum on the same cluster ($theirs)" "$pt_s" 1 "-" "-"
}
