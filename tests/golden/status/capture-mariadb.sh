#!/bin/sh
# Captures real `SHOW SLAVE STATUS\G` / `SHOW MASTER STATUS\G` output from the installed MariaDB
# for tests/it/offline/golden_status.rs. Starts two throwaway servers (a master and its replica) on loopback
# ports 24401/24402 in a temporary directory, drives the replica through the cases, saves the
# output next to this script and kills both servers. Run as root: `sh capture-mariadb.sh`.
set -eu
OUT=$(cd "$(dirname "$0")" && pwd)
D=$(mktemp -d /tmp/repltool-capture.XXXXXX)
chmod 755 "$D"
chown mysql:mysql "$D"  # mariadbd runs as mysql and writes its socket and logs here
VER=$(mariadbd --version | sed -n 's/.*Ver \([0-9][0-9.]*\)-MariaDB.*/\1/p')
P="mariadb-$VER"
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

start() { # n port extra-args...
    n=$1; port=$2; shift 2
    mariadb-install-db --no-defaults --user=mysql --datadir="$D/d$n" \
        --auth-root-authentication-method=socket >"$D/install$n.log" 2>&1
    mariadbd --no-defaults --user=mysql --datadir="$D/d$n" --port="$port" \
        --bind-address=127.0.0.1 --socket="$D/s$n" --pid-file="$D/p$n.pid" \
        --log-error="$D/e$n.log" --skip-name-resolve "$@" &
    PIDS="$PIDS $!"
    i=0
    until mariadb --no-defaults -S "$D/s$n" -u root -e 'SELECT 1' >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -gt 60 ]; then echo "server $n did not start" >&2; cat "$D/e$n.log" >&2; exit 1; fi
        sleep 0.5
    done
}
m() { mariadb --no-defaults -S "$D/s1" -u root "$@"; }
r() { mariadb --no-defaults -S "$D/s2" -u root "$@"; }
# Poll the replica until its status matches a pattern (bounded: 30 s).
wait_for() {
    i=0
    until r -e 'SHOW SLAVE STATUS\G' | grep -Eq "$1"; do
        i=$((i + 1))
        if [ $i -gt 60 ]; then echo "timed out waiting for: $1" >&2; r -e 'SHOW SLAVE STATUS\G' >&2; exit 1; fi
        sleep 0.5
    done
}
caught_up() {
    i=0
    while :; do
        s=$(r -e 'SHOW SLAVE STATUS\G')
        rd=$(echo "$s" | sed -n 's/^ *Read_Master_Log_Pos: //p')
        ex=$(echo "$s" | sed -n 's/^ *Exec_Master_Log_Pos: //p')
        mp=$(m -N -e 'SHOW MASTER STATUS' | cut -f2)
        if [ "$rd" = "$mp" ] && [ "$ex" = "$mp" ] && echo "$s" | grep -q 'Seconds_Behind_Master: 0'; then return 0; fi
        i=$((i + 1))
        if [ $i -gt 60 ]; then echo "replica did not catch up" >&2; echo "$s" >&2; exit 1; fi
        sleep 0.5
    done
}
save() { r -e 'SHOW SLAVE STATUS\G' >"$OUT/$P-$1.txt"; }

start 1 24401 --server-id=1 --log-bin=mysql-bin --binlog-format=ROW
start 2 24402 --server-id=2 --log-bin=mysql-bin --binlog-format=ROW --relay-log=relay-bin \
    --report-host=127.0.0.2 --skip-slave-start

m -e "CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'replpw';
      GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1';
      CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20));
      INSERT INTO app.t VALUES (1, 'one'), (2, 'two');"
m -e 'SHOW MASTER STATUS\G' >"$OUT/$P-master-status.txt"

r -e "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=24401, MASTER_USER='repl',
      MASTER_PASSWORD='replpw', MASTER_LOG_FILE='mysql-bin.000001', MASTER_LOG_POS=4,
      MASTER_USE_GTID=no, MASTER_CONNECT_RETRY=1; START SLAVE;"
caught_up
save running

# The IO thread stopped alone (failover step 1): SQL thread still running, lag NULL.
r -e 'STOP SLAVE IO_THREAD'
wait_for 'Slave_IO_Running: No'
save io-stopped

r -e "STOP SLAVE; CHANGE MASTER TO MASTER_USE_GTID=slave_pos; START SLAVE;"
caught_up
save running-gtid

# A row the master will also insert: the SQL thread stops on a duplicate key.
r -e "INSERT INTO app.t VALUES (100, 'replica')"
m -e "INSERT INTO app.t VALUES (100, 'master')"
wait_for 'Last_SQL_Errno: 1062'
save sql-error-1062

r -e "STOP SLAVE; DELETE FROM app.t WHERE id = 100; START SLAVE;"
caught_up
r -e 'STOP SLAVE'
wait_for 'Slave_SQL_Running: No'
save stopped

r -e "CHANGE MASTER TO MASTER_PASSWORD='wrong-password', MASTER_CONNECT_RETRY=60; START SLAVE;"
wait_for 'Last_IO_Errno: 1045'
save io-connecting-1045

r -e "STOP SLAVE; CHANGE MASTER TO MASTER_PORT=24409, MASTER_CONNECT_RETRY=60; START SLAVE;"
wait_for 'Last_IO_Errno: 2003'
save io-connecting-2003

r -e 'STOP SLAVE; RESET SLAVE ALL;'
r -e 'SHOW SLAVE STATUS\G' >"$OUT/$P-not-replica.txt"
echo "captured into $OUT ($P-*.txt)"
