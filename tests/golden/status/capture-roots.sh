#!/usr/bin/env bash
# Captures real replica and binary log status output from the servers of the tests/roots.sh
# roots, for tests/it/offline/golden_status.rs, the way capture-mariadb.sh does for the machine's MariaDB:
#   MySQL 9.7 (root mysql-9.7):     SHOW REPLICA STATUS, SHOW BINARY LOG STATUS
#   MariaDB 11.8 (root mariadb-11.8): SHOW REPLICA STATUS, SHOW MASTER STATUS
# For each root it starts two throwaway servers (a master and its replica, ports 24401/24402)
# chrooted in an overlay of the root (the cached root is never written), in network, mount and
# PID namespaces of their own (loopback only; every process dies with the namespace), drives
# the replica through the cases, and saves the output next to this script as
# <flavor>-<version>-<case>.txt. Run as root after `bash tests/roots.sh`:
#   bash tests/golden/status/capture-roots.sh [mysql-9.7] [mariadb-11.8]
# then `UPDATE_GOLDEN=1 cargo test --test it offline::golden_status` and review the .json diff.
set -euo pipefail

if [ "${1:-}" = --inside ]; then
    # In the root: $2 is the root's name; output goes to /capture/out.
    C=/capture
    OUT=$C/out
    wait_until() { # what command...: poll (bounded: 30 s)
        local what=$1 i=0
        shift
        until "$@" >/dev/null 2>&1; do
            i=$((i + 1))
            if [ $i -gt 60 ]; then echo "timed out waiting for: $what" >&2; return 1; fi
            sleep 0.5
        done
    }
    case "$2" in
    mysql-9.7)
        VER=$(mysqld --version | sed -n 's/.* Ver \([0-9][0-9.]*\).*/\1/p')
        P="mysql-$VER"
        cli() { mysql --no-defaults -S "$C/r$1/sock" -u root "${@:2}"; }
        start() { # n port extra-args...
            local n=$1 port=$2
            shift 2
            install -d -o mysql -g mysql "$C/d$n" "$C/r$n"
            mysqld --no-defaults --initialize-insecure --user=mysql --datadir="$C/d$n" \
                --secure-file-priv=NULL --log-error="$C/r$n/install.log" ||
                { cat "$C/r$n/install.log" >&2; exit 1; }
            mysqld --no-defaults --user=mysql --datadir="$C/d$n" --port="$port" \
                --bind-address=127.0.0.1 --socket="$C/r$n/sock" --pid-file="$C/r$n/pid" \
                --log-error="$C/r$n/error.log" --mysqlx=OFF --secure-file-priv=NULL \
                --skip-name-resolve --server-id="$n" "$@" &
            wait_until "server $n" cli "$n" -N -e 'SELECT 1' || { cat "$C/r$n/error.log" >&2; exit 1; }
        }
        STATUS='SHOW REPLICA STATUS'
        BINLOG='SHOW BINARY LOG STATUS'
        BINLOG_CASE=binary-log-status
        START='START REPLICA'
        STOP='STOP REPLICA'
        POINT="CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT=24401,
               SOURCE_USER='repl', SOURCE_PASSWORD='replpw', SOURCE_LOG_FILE='binlog.000001',
               SOURCE_LOG_POS=4, SOURCE_CONNECT_RETRY=1"
        TO_GTID="CHANGE REPLICATION SOURCE TO SOURCE_AUTO_POSITION=1"
        BAD_PASSWORD="CHANGE REPLICATION SOURCE TO SOURCE_PASSWORD='wrong-password', SOURCE_CONNECT_RETRY=60"
        BAD_PORT="CHANGE REPLICATION SOURCE TO SOURCE_PORT=24409, SOURCE_CONNECT_RETRY=60"
        RESET='RESET REPLICA ALL'
        READ=Read_Source_Log_Pos EXEC=Exec_Source_Log_Pos LAG=Seconds_Behind_Source
        IO=Replica_IO_Running SQL=Replica_SQL_Running
        start 1 24401
        start 2 24402 --relay-log=relay-bin --report-host=127.0.0.2 --skip-replica-start
        ;;
    mariadb-11.8)
        VER=$(mariadbd --version 2>/dev/null | sed -n 's/.*Ver \([0-9][0-9.]*\)-MariaDB.*/\1/p')
        P="mariadb-$VER"
        cli() { mariadb --no-defaults -S "$C/r$1/sock" -u root "${@:2}"; }
        start() { # n port extra-args...
            local n=$1 port=$2
            shift 2
            install -d -o mysql -g mysql "$C/r$n"
            mariadb-install-db --no-defaults --user=mysql --datadir="$C/d$n" \
                --auth-root-authentication-method=socket >"$C/r$n/install.log" 2>&1 ||
                { cat "$C/r$n/install.log" >&2; exit 1; }
            mariadbd --no-defaults --user=mysql --datadir="$C/d$n" --port="$port" \
                --bind-address=127.0.0.1 --socket="$C/r$n/sock" --pid-file="$C/r$n/pid" \
                --log-error="$C/r$n/error.log" --skip-name-resolve --server-id="$n" \
                --log-bin=mysql-bin --binlog-format=ROW "$@" &
            wait_until "server $n" cli "$n" -N -e 'SELECT 1' || { cat "$C/r$n/error.log" >&2; exit 1; }
        }
        STATUS='SHOW REPLICA STATUS'
        BINLOG='SHOW MASTER STATUS'
        BINLOG_CASE=master-status
        START='START REPLICA'
        STOP='STOP REPLICA'
        POINT="CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=24401, MASTER_USER='repl',
               MASTER_PASSWORD='replpw', MASTER_LOG_FILE='mysql-bin.000001', MASTER_LOG_POS=4,
               MASTER_USE_GTID=no, MASTER_CONNECT_RETRY=1"
        TO_GTID="CHANGE MASTER TO MASTER_USE_GTID=slave_pos"
        BAD_PASSWORD="CHANGE MASTER TO MASTER_PASSWORD='wrong-password', MASTER_CONNECT_RETRY=60"
        BAD_PORT="CHANGE MASTER TO MASTER_PORT=24409, MASTER_CONNECT_RETRY=60"
        RESET='RESET REPLICA ALL'
        READ=Read_Master_Log_Pos EXEC=Exec_Master_Log_Pos LAG=Seconds_Behind_Master
        IO=Slave_IO_Running SQL=Slave_SQL_Running
        start 1 24401
        start 2 24402 --relay-log=relay-bin --report-host=127.0.0.2 --skip-slave-start
        ;;
    *) echo "unknown root $2" >&2; exit 2 ;;
    esac
    m() { cli 1 "$@"; }
    r() { cli 2 "$@"; }
    # Vertical output (the \G form): `-E`, which MySQL 9.7's client takes in batch mode
    # where it refuses `\G`.
    status() { r -E -e "$STATUS"; }
    wait_for() { # pattern: poll the replica's status (bounded: 30 s)
        local i=0
        until status 2>/dev/null | grep -Eq "$1"; do
            i=$((i + 1))
            if [ $i -gt 60 ]; then echo "timed out waiting for: $1" >&2; status >&2; exit 1; fi
            sleep 0.5
        done
    }
    caught_up() {
        local i=0 s rd ex mp
        while :; do
            s=$(status)
            rd=$(echo "$s" | sed -n "s/^ *$READ: //p")
            ex=$(echo "$s" | sed -n "s/^ *$EXEC: //p")
            mp=$(m -N -e "$BINLOG" | cut -f2)
            if [ "$rd" = "$mp" ] && [ "$ex" = "$mp" ] && echo "$s" | grep -q "$LAG: 0"; then return 0; fi
            i=$((i + 1))
            if [ $i -gt 60 ]; then echo "replica did not catch up" >&2; echo "$s" >&2; exit 1; fi
            sleep 0.5
        done
    }
    save() { status >"$OUT/$P-$1.txt"; }

    m -e "CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'replpw';
          GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1';
          CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20));
          INSERT INTO app.t VALUES (1, 'one'), (2, 'two');"
    m -E -e "$BINLOG" >"$OUT/$P-$BINLOG_CASE.txt"

    r -e "$POINT; $START;"
    caught_up
    save running

    # The IO thread stopped alone (failover step 1): SQL thread still running, lag NULL.
    r -e "$STOP IO_THREAD"
    wait_for "$IO: No"
    save io-stopped

    # A transaction after the switch: MySQL purges the relay log when auto-positioning is
    # turned on, and Retrieved_Gtid_Set stays empty until something new arrives.
    r -e "$STOP; $TO_GTID; $START;"
    m -e "INSERT INTO app.t VALUES (3, 'three')"
    caught_up
    save running-gtid

    # A row the master will also insert: the SQL thread stops on a duplicate key.
    r -e "INSERT INTO app.t VALUES (100, 'replica')"
    m -e "INSERT INTO app.t VALUES (100, 'master')"
    wait_for 'Last_SQL_Errno: 1062'
    save sql-error-1062

    r -e "$STOP; DELETE FROM app.t WHERE id = 100; $START;"
    caught_up
    r -e "$STOP"
    wait_for "$SQL: No"
    save stopped

    r -e "$BAD_PASSWORD; $START;"
    wait_for 'Last_IO_Errno: 1045'
    save io-connecting-1045

    r -e "$STOP; $BAD_PORT; $START;"
    wait_for 'Last_IO_Errno: 2003'
    save io-connecting-2003

    r -e "$STOP; $RESET;"
    status >"$OUT/$P-not-replica.txt"

    # Facts for the record (printed, not saved): defaults that matter to repltool.
    echo "== $P: server defaults (--no-defaults)"
    if [ "$2" = mysql-9.7 ]; then
        m -E -e "SELECT @@version, @@version_comment, @@gtid_mode, @@enforce_gtid_consistency,
                 @@log_bin, @@log_replica_updates, @@binlog_format, @@server_id, @@read_only,
                 @@super_read_only, @@skip_replica_start, @@authentication_policy,
                 @@require_secure_transport, @@binlog_expire_logs_seconds, @@replica_parallel_workers,
                 @@sync_binlog, @@innodb_flush_log_at_trx_commit"
        m -N -e "SELECT user, host, plugin FROM mysql.user ORDER BY user"
        echo "MD5: $(m -N -e "SELECT MD5('x')" mysql 2>&1)"
        echo "SHA2, CRC32: $(m -N -e "SELECT SHA2('x', 256), CRC32('x')" 2>&1)"
        echo "SHOW MASTER STATUS: $(m -e 'SHOW MASTER STATUS' 2>&1)"
        echo "SHOW SLAVE STATUS: $(r -e 'SHOW SLAVE STATUS' 2>&1)"
        echo "MASTER_POS_WAIT: $(r -N -e "SELECT MASTER_POS_WAIT('binlog.000001', 4, 1)" 2>&1)"
        echo "SOURCE_POS_WAIT: $(r -N -e "SELECT SOURCE_POS_WAIT('binlog.000001', 4, 1)" 2>&1)"
    else
        m -E -e "SELECT @@version, @@version_comment, @@gtid_strict_mode, @@log_bin,
                 @@log_slave_updates, @@binlog_format, @@server_id, @@read_only, @@have_ssl,
                 @@ssl_cert, @@require_secure_transport, @@gtid_domain_id"
        m -N -e "SELECT user, host, JSON_VALUE(priv, '$.plugin') FROM mysql.global_priv ORDER BY user"
        echo "SHOW BINARY LOG STATUS: $(m -e 'SHOW BINARY LOG STATUS' 2>&1)"
        echo "SHOW BINLOG STATUS: $(m -e 'SHOW BINLOG STATUS' 2>&1)"
        echo "SHOW SLAVE STATUS (not a replica): $(r -e 'SHOW SLAVE STATUS' 2>&1)"
    fi
    echo "captured $P-*.txt"
    exit 0
fi

HERE=$(cd "$(dirname "$0")" && pwd)
ROOTS_DIR=${REPLTOOL_ROOTS_DIR:-/var/cache/repltool-tests/roots}
names=("$@")
if [ ${#names[@]} -eq 0 ]; then names=(mysql-9.7 mariadb-11.8); fi
[ "$(id -u)" -eq 0 ] || { echo "run as root (namespaces, chroot)" >&2; exit 1; }
for name in "${names[@]}"; do
    R=$ROOTS_DIR/$name
    [ -f "$R/.repltool-root" ] || { echo "$R is not built: bash tests/roots.sh $name" >&2; exit 1; }
    D=$(mktemp -d /var/tmp/repltool-capture-roots.XXXXXX)
    trap 'rm -rf --one-file-system "$D"' EXIT
    chmod 755 "$D"
    mkdir "$D/upper" "$D/work" "$D/rootfs" "$D/cap" "$D/cap/out"
    cp "$0" "$D/cap/capture-roots.sh"
    unshare --net --mount --pid --fork --kill-child /bin/sh -ec '
        ip link set lo up
        M=$1/rootfs
        mount -t overlay overlay -o lowerdir="$2",upperdir="$1/upper",workdir="$1/work" "$M"
        mkdir -p "$M/capture"
        mount --bind "$1/cap" "$M/capture"
        mount -t proc proc "$M/proc"
        mount --rbind /dev "$M/dev"
        exec chroot "$M" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root LANG=C bash /capture/capture-roots.sh --inside "$3"' sh "$D" "$R" "$name"
    cp "$D"/cap/out/*.txt "$HERE/"
    rm -rf --one-file-system "$D"
    trap - EXIT
done
echo "captured into $HERE"
