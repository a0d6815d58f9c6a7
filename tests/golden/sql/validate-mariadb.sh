#!/bin/sh
# Runs the MariaDB 10.11 goldens against the installed MariaDB: every statement must be accepted,
# the nasty password must survive CREATE USER and CHANGE MASTER (the replica logs in with it),
# every fragment must start a server, and a seed dump loaded with the load command must leave
# the replica's binary log untouched. Throwaway servers on loopback ports 24411-24413 in a
# temporary directory, killed at the end. Run as root: `sh validate-mariadb.sh`.
set -eu
G=$(cd "$(dirname "$0")" && pwd)/mariadb-10.11.6
D=$(mktemp -d /tmp/repltool-validate.XXXXXX)
chmod 755 "$D"
chown mysql:mysql "$D"
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    for p in $PIDS; do
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done
        kill -9 "$p" 2>/dev/null || true
    done
    rm -rf "$D"
}
trap cleanup EXIT INT TERM
fail() { echo "FAIL: $*" >&2; exit 1; }

start() { # name port defaults-file extra-args...
    n=$1; port=$2; defaults=$3; shift 3
    [ -d "$D/d$n" ] || mariadb-install-db --no-defaults --user=mysql --datadir="$D/d$n" \
        --auth-root-authentication-method=socket >"$D/install$n.log" 2>&1
    mariadbd --defaults-file="$defaults" --user=mysql --datadir="$D/d$n" --port="$port" \
        --bind-address=127.0.0.1 --socket="$D/s$n" --pid-file="$D/p$n.pid" \
        --log-error="$D/e$n.log" --skip-name-resolve "$@" &
    LAST=$!
    PIDS="$PIDS $LAST"
    i=0
    until mariadb --no-defaults -S "$D/s$n" -u root -e 'SELECT 1' >/dev/null 2>&1; do
        i=$((i + 1))
        kill -0 "$LAST" 2>/dev/null || { cat "$D/e$n.log" >&2; fail "server $n ($defaults) exited"; }
        [ $i -le 60 ] || fail "server $n did not start"
        sleep 0.5
    done
}
stop() { kill "$1"; i=0; while kill -0 "$1" 2>/dev/null && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done; }
q() { n=$1; shift; mariadb --no-defaults -S "$D/s$n" -u root "$@"; }
# Feed a golden file (adjusted for this sandbox) to server $1.
run() {
    n=$1; f=$2
    # replica-control.sql lists statements, not a sequence: STOP the SQL thread it just started
    # before RESET ... ALL, which refuses to run with a thread running.
    sed -e 's/^\(RESET SLAVE ALL;\)$/STOP SLAVE; \1/' -e "s/'127.0.0.12'/'127.0.0.1'/g" -e 's/MASTER_PORT=3306/MASTER_PORT=24411/' \
        -e "s/'mysql-bin.000002', MASTER_LOG_POS=1234/'mysql-bin.000001', MASTER_LOG_POS=4/" \
        -e 's/, 30)/, 1)/' "$G/$f" | q "$n" >"$D/out" 2>&1 || { cat "$D/out" >&2; fail "$f rejected"; }
}
wait_status() { # server pattern
    i=0
    until q "$1" -e 'SHOW SLAVE STATUS\G' | grep -Eq "$2"; do
        i=$((i + 1))
        [ $i -le 40 ] || { q "$1" -e 'SHOW SLAVE STATUS\G' >&2; fail "waiting for $2"; }
        sleep 0.5
    done
}

# Every fragment starts a server and its settings read back.
for frag in "$G"/fragment-*.cnf; do
    start f 24413 "$frag"
    want_id=$(sed -n 's/^server_id = //p' "$frag")
    got=$(q f -N -e 'SELECT @@server_id, @@read_only, @@binlog_format')
    [ "$got" = "$(printf '%s\t1\tROW' "$want_id")" ] || fail "$(basename "$frag"): read back $got"
    stop "$LAST"
    rm -rf "$D/df"
done
echo "fragments: ok"

start 1 24411 "$G/fragment-master-master-gtid.cnf" --server-id=1 --read-only=OFF
start 2 24412 "$G/fragment-slave.cnf"
for f in observe.sql status.sql runtime-settings.sql snapshot-lock.sql waits.sql repl-user.text.sql canary.sql; do
    run 1 "$f"
done
run 1 read-only-off.sql
# The session setup clears NO_BACKSLASH_ESCAPES wherever it stands in sql_mode, and only it.
setup=$(sed -n 1p "$G/runtime-settings.sql")
for mode in NO_BACKSLASH_ESCAPES NO_BACKSLASH_ESCAPES,ANSI_QUOTES ANSI_QUOTES,NO_BACKSLASH_ESCAPES,STRICT_ALL_TABLES; do
    got=$(q 1 -N -e "SET SESSION sql_mode = '$mode'; $setup SELECT @@SESSION.sql_mode;")
    want=$(echo "$mode" | sed -e 's/NO_BACKSLASH_ESCAPES,\{0,1\}//' -e 's/,$//')
    [ "$got" = "$want" ] || fail "session setup on sql_mode $mode left '$got'"
done
q 1 -e 'SET GLOBAL server_id = 1'  # runtime-settings.sql set the golden's 2, the replica's id
q 1 -e "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v VARBINARY(8)); INSERT INTO shop.t VALUES (1, 0x00ff), (2, 'x');"

# The nasty password round-trips: the replica's IO thread logs in with it.
run 2 change-master-pos.text.sql
run 2 replica-control.sql
run 2 change-master-pos.text.sql
q 2 -e 'START SLAVE'
wait_status 2 'Slave_IO_Running: Yes'
wait_status 2 'Slave_SQL_Running: Yes'
i=0
until q 2 -N -e 'SELECT COUNT(*) FROM shop.t' 2>/dev/null | grep -qx 2; do
    i=$((i + 1))
    [ $i -le 40 ] || fail "rows did not replicate"
    sleep 0.5
done
echo "change master (file/pos) with the nasty password: ok"
q 2 -e 'STOP SLAVE'
run 2 change-master-gtid.text.sql
q 2 -e 'START SLAVE'
wait_status 2 'Using_Gtid: Slave_Pos'
wait_status 2 'Slave_IO_Running: Yes'
echo "change master (gtid): ok"
q 2 -e 'STOP SLAVE'
run 2 change-master-pos-ssl.text.sql
run 2 change-master-gtid-ssl.text.sql
run 2 read-only-on.sql
run 2 read-only-off.sql
q 2 -e 'STOP SLAVE; RESET SLAVE ALL'
run 2 seed-gtid.sql

# A seed: dump from the master, load on a replica with the load command; the replica's own
# binary log must not gain a transaction.
cat >"$D/client.cnf" <<CNF
[client]
user=root
socket=$D/s1
CNF
cat >"$D/load.cnf" <<CNF
[client]
user=root
socket=$D/s2
CNF
q 2 -e 'DROP DATABASE IF EXISTS shop'
before=$(q 2 -N -e 'SELECT @@gtid_binlog_pos')
dump=$(sed -n 's/^dump databases: //p' "$G/commands.txt" | sed -e "s|/tmp/repltool-dump.cnf|$D/client.cnf|" -e "s| 'odd name'||")
load=$(sed -n 's/^load: //p' "$G/commands.txt" | sed -e "s|/tmp/repltool-load.cnf|$D/load.cnf|")
# repltool holds FLUSH TABLES WITH READ LOCK in another session while the dump opens its
# snapshot: the dump must not wait for that lock.
q 1 -e 'FLUSH TABLES WITH READ LOCK; SELECT SLEEP(20)' >/dev/null 2>&1 &
LOCKER=$!
PIDS="$PIDS $LOCKER"
sleep 1
q 1 -N -e 'SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE "SELECT SLEEP(20)%"' | grep -qx 1 \
    || fail "lock holder not running"
timeout 15 sh -c "$dump" >"$D/seed.sql" || fail "dump blocked or failed under the read lock"
kill "$LOCKER" 2>/dev/null || true
sh -c "$load" <"$D/seed.sql" || fail "load failed"
[ "$(q 2 -N -e 'SELECT HEX(v) FROM shop.t WHERE id = 1')" = "00FF" ] || fail "binary data mangled"
after=$(q 2 -N -e 'SELECT @@gtid_binlog_pos')
[ "$before" = "$after" ] || fail "load wrote the replica's binlog: $before -> $after"
echo "dump | load: ok"
echo "all MariaDB goldens accepted by $(mariadbd --version | awk '{print $3}')"
