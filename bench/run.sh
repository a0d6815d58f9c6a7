#!/usr/bin/env bash
# repltool benchmarks: one command, a markdown table on stdout (progress on stderr).
#
#   bash bench/run.sh [section...]      sections: lab init status promote seed mysql97
#                                       mysql97big galera physical verify watch watch_endpoint proxy
#                                       (default: all; also mariadb118, mariadb1011)
#   BIG_MB=1024 bash bench/run.sh physical verify   size of the big data set in MiB
#   BIG_MB=1024 bash bench/run.sh mysql97big   the same on MySQL 9.7 hosts (default 256 there)
#   SEED_MB=1024 bash bench/run.sh seed size of the seeding data set in MiB (default 1024)
#   BENCH_LOGS=DIR bash bench/run.sh    keep the promote outputs (with their timings) in DIR
#   RUNS=7 bash bench/run.sh lab        more runs per row (default 5; the median is reported)
#
# Each row is compared with a floor measured in the same run on the same machine, so the ratio
# says how much repltool adds over the unavoidable work. See bench/README.md.
# Ports used: 23500-23599. Everything runs in a temp dir (with its own template cache) that is
# removed at the end, labs included.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
ALL_SECTIONS=(lab init status promote seed mysql97 mysql97big galera physical verify watch watch_endpoint proxy)
BIN="$PWD/target/release/repltool"

log() { printf '%s\n' "$*" >&2; }
die() { log "bench: $*"; exit 1; }
now() { printf '%s\n' "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'; }
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v m="$1" -v f="$2" 'BEGIN { if (f > 0) printf "%.1f\n", m / f; else print "-" }'; }

ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 |"); }

WORK=$(mktemp -d /tmp/repltool-bench.XXXXXX)
# The mysql user must be able to enter it, as in a normal lab (servers then run as mysql).
chmod 755 "$WORK"
export XDG_CACHE_HOME="$WORK/cache"
cleanup() {
  declare -F stop_etcd >/dev/null && stop_etcd
  declare -F stop_sshd >/dev/null && stop_sshd
  for d in "$WORK"/lab-*; do
    [ -e "$d/lab.json" ] && "$BIN" lab down --dir "$d" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# lab_up DIR NODES PORT: a lab, or the bench stops with lab up's output.
lab_up() {
  "$BIN" lab up --dir "$1" --nodes "$2" --base-port "$3" >/dev/null 2>"$WORK/up.err" ||
    { cat "$WORK/up.err" >&2; die "lab up --nodes $2 failed"; }
}
lab_down() { "$BIN" lab down --dir "$1" >/dev/null 2>&1 || die "lab down $1 failed"; }

# The first lab up in an empty cache builds the template datadir; measured once.
TEMPLATE_S=""
measure_template() {
  [ -n "$TEMPLATE_S" ] && return
  log "template: first lab up with an empty cache..."
  local t0; t0=$(now)
  lab_up "$WORK/lab-template" 1 23580
  TEMPLATE_S=$(since "$t0")
  lab_down "$WORK/lab-template"
}

# Floor for lab up: ONE bare server start from a freshly copied datadir (the lab's own
# my.cnf), until it accepts a login. Median of RUNS.
FLOOR_START=""
measure_floor() {
  [ -n "$FLOOR_START" ] && return
  measure_template
  log "floor: bare mariadbd start x$RUNS..."
  local d="$WORK/lab-floor" node server admin tmpl owner t0 i n
  lab_up "$d" 1 23590
  node="$d/node1"
  server=$(grep -o '"server": *"[^"]*"' "$d/lab.json" | sed 's/.*: *"\(.*\)"/\1/')
  admin=$(command -v mariadb-admin || command -v mysqladmin) || die "mariadb-admin not found"
  tmpl=$(ls -d "$XDG_CACHE_HOME"/repltool/template-*/ | head -n 1)
  owner=$(stat -c %u:%g "$node/data")
  "$node/ctl" stop >/dev/null
  for i in $(seq "$RUNS"); do
    rm -rf "$node/data"
    cp -a --reflink=auto "$tmpl/data" "$node/data"
    chown -R "$owner" "$node/data"
    t0=$(now)
    setsid "$server" --defaults-file="$node/my.cnf" </dev/null >/dev/null 2>&1 &
    n=0
    until "$admin" --defaults-file="$node/client.cnf" --connect-timeout=1 ping >/dev/null 2>&1; do
      n=$((n + 1))
      [ "$n" -lt 6000 ] || die "the bare server did not come up within 60s"
      sleep 0.01
    done
    since "$t0" >>"$WORK/floor.txt"
    "$node/ctl" stop >/dev/null
  done
  log "  runs: $(tr '\n' ' ' <"$WORK/floor.txt")"
  FLOOR_START=$(median <"$WORK/floor.txt")
  lab_down "$d"
}

section_lab() {
  measure_floor
  row "first \`lab up\`, 1 node (builds the template)" "$TEMPLATE_S" 1 "$FLOOR_START" "$(ratio "$TEMPLATE_S" "$FLOOR_START")"
  local n port i t0 m
  for n in 1 3 7; do
    port=$((23500 + 10 * n))
    log "lab up --nodes $n x$RUNS..."
    : >"$WORK/times.txt"
    for i in $(seq "$RUNS"); do
      t0=$(now)
      lab_up "$WORK/lab-$n" "$n" "$port"
      since "$t0" >>"$WORK/times.txt"
      lab_down "$WORK/lab-$n"
    done
    log "  runs: $(tr '\n' ' ' <"$WORK/times.txt")"
    m=$(median <"$WORK/times.txt")
    row "\`lab up\`, $n node(s)" "$m" "$RUNS" "$FLOOR_START" "$(ratio "$m" "$FLOOR_START")"
  done
}

# MySQL 9.7 (and MariaDB 11.8) on network-namespace hosts from debootstrapped roots: the
# harness of the live tests, driven by bench/netns.rs. RUNS defaults to 3 there (each run
# starts 4 fresh hosts).
section_mysql97() {
  bash tests/roots.sh mysql-9.7 >&2 || die "building the MySQL 9.7 root failed"
  local out
  out=$(RUNS="${NETNS_RUNS:-3}" cargo bench --quiet --bench netns -- mysql97) || die "the MySQL 9.7 bench failed"
  while IFS= read -r l; do
    case "$l" in "| "*) ROWS+=("$l") ;; esac
  done <<<"$out"
}
# The machine's MariaDB 10.11 on the same network-namespace hosts as the MySQL 9.7 rows: their
# MariaDB reference (the lab/init/promote sections run on loopback).
section_mariadb1011() {
  local out
  out=$(RUNS="${NETNS_RUNS:-3}" cargo bench --quiet --bench netns -- mariadb1011) || die "the MariaDB 10.11 netns bench failed"
  while IFS= read -r l; do
    case "$l" in "| "*) ROWS+=("$l") ;; esac
  done <<<"$out"
}
section_mariadb118() {
  bash tests/roots.sh mariadb-11.8 >&2 || die "building the MariaDB 11.8 root failed"
  local out
  out=$(RUNS="${NETNS_RUNS:-3}" cargo bench --quiet --bench netns -- mariadb118) || die "the MariaDB 11.8 bench failed"
  while IFS= read -r l; do
    case "$l" in "| "*) ROWS+=("$l") ;; esac
  done <<<"$out"
}

# Big data on MySQL 9.7 network-namespace hosts (bench/mysql97big.rs, through bench/netns.rs):
# logical against physical (clone plugin) seeding, the raw mysqldump | mysql pipe as the floor,
# and verify against pt-table-checksum. One run; BIG_MB MiB on the master, default 256 here
# (about 1.5 minutes; see bench/README.md for why not 1024).
section_mysql97big() {
  bash tests/roots.sh mysql-9.7 >&2 || die "building the MySQL 9.7 root failed"
  local out
  out=$(BIG_MB="${BIG_MB:-256}" cargo bench --quiet --bench netns -- mysql97big) || die "the MySQL 9.7 big-data bench failed"
  while IFS= read -r l; do
    case "$l" in "| "*) ROWS+=("$l") ;; esac
  done <<<"$out"
}

# init, status, promote and seed: over a real sshd (bench/sections.sh).
# shellcheck source=bench/sections.sh
. "$(dirname "$0")/sections.sh"
# galera: on network-namespace hosts (bench/galera.sh).
# shellcheck source=bench/galera.sh
. "$(dirname "$0")/galera.sh"
# physical and verify: big data (bench/bigdata.sh).
# shellcheck source=bench/bigdata.sh
. "$(dirname "$0")/bigdata.sh"
# watch: automatic failover against MHA (bench/watch.sh).
# shellcheck source=bench/watch.sh
. "$(dirname "$0")/watch.sh"

sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=("${ALL_SECTIONS[@]}")
for s in "${sections[@]}"; do
  declare -F "section_$s" >/dev/null || die "unknown section '$s' (known: ${ALL_SECTIONS[*]})"
done

log "building release..."
cargo build --release --quiet --bin repltool
for s in "${sections[@]}"; do "section_$s"; done

printf '\n%s, %s, %s cores\n\n' "$(date -u +%Y-%m-%d)" "$("$(command -v mariadbd || echo /usr/sbin/mariadbd)" --version | awk '{ for (i = 1; i < NF; i++) if ($i == "Ver") print $(i + 1) }')" "$(nproc)"
echo "| what | median (s) | runs | floor (s) | ratio |"
echo "|---|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
