#!/usr/bin/env bash
# Build the root filesystems the netns test hosts run other server versions from
# (tests/it/support/netns.rs, `Flavor`): Oracle MySQL 9.7 (Debian sid) and MariaDB 11.8 (Debian
# trixie), neither of which installs on this Debian 12 machine (its glibc is too old).
#
#   bash tests/roots.sh [NAME...]      # NAME: mysql-9.7, mariadb-11.8 (default: both)
#
# Each root is built once into $REPLTOOL_ROOTS_DIR/NAME (default
# /var/cache/repltool-tests/roots/NAME) and reused while its stamp file (.repltool-root, written
# last) names the current recipe; a half-built or outdated root is rebuilt. A root is built in
# NAME.build and renamed into place when complete, under an exclusive lock (NAME.lock); test
# hosts hold the same lock shared while they run from a root, so it is never replaced under
# them. Several roots are built at once. Needs root, debootstrap and the Debian mirror apt uses
# on this machine ($REPLTOOL_ROOTS_MIRROR overrides it).
#
# The package scripts run without a network and in PID and mount namespaces of their own: no
# daemon they might start can listen on this machine or outlive the build, and nothing they
# mount stays mounted.
set -euo pipefail

# Bump when what goes into a root changes: older roots are rebuilt.
RECIPE=2
ROOTS_DIR=${REPLTOOL_ROOTS_DIR:-/var/cache/repltool-tests/roots}
ALL=(mysql-9.7 mariadb-11.8)
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

die() { echo "roots: $*" >&2; exit 1; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# The Debian mirror this machine's apt uses (deb822 or one-line sources), not the security one.
mirror() {
    if [ -n "${REPLTOOL_ROOTS_MIRROR:-}" ]; then echo "$REPLTOOL_ROOTS_MIRROR"; return; fi
    local m
    m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
        sed -n 's/^URIs:[[:space:]]*//p' | tr ' ' '\n' | grep -v -- '-security' | grep . | head -n1 || true)
    if [ -z "$m" ]; then
        m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([a-z]\+:[^[:space:]]*\).*/\2/p' |
            grep -v -- '-security' | head -n1 || true)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

# What each root is: the suite, what debootstrap installs (nothing that starts a daemon), what
# apt installs after it, and the version the server must have.
recipe() {
    BASE=procps,iproute2,psmisc,less
    case "$1" in
    mysql-9.7)
        SUITE=sid
        PKGS="mysql-server mysql-client openssh-server"
        SERVER=/usr/sbin/mysqld
        WANT='Ver 9\.7\.'
        ;;
    mariadb-11.8)
        SUITE=trixie
        PKGS="mariadb-server mariadb-client mariadb-backup openssh-server"
        SERVER=/usr/sbin/mariadbd
        WANT='Ver 11\.8\.[0-9]*-MariaDB'
        ;;
    *) die "unknown root '$1' (known: ${ALL[*]})" ;;
    esac
}

stamp() { echo "$ROOTS_DIR/$1/.repltool-root"; }

complete() { [ -f "$(stamp "$1")" ] && [ "$(head -n1 "$(stamp "$1")")" = "repltool-root $1 recipe $RECIPE" ]; }

# Refuse to delete a directory something is mounted under (in this mount namespace).
rm_tree() {
    if awk -v d="$1" '$5 == d || index($5, d "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
        die "$1 has mounts under it; not removing it"
    fi
    rm -rf --one-file-system "$1"
}

# Run a command chrooted in root $1 with /proc and /dev, in new mount and PID namespaces (and a
# new network namespace with only loopback when $NONET is set). Everything it mounts and every
# process it leaves behind go away when it returns.
in_root() {
    local dir=$1
    shift
    local net=()
    if [ -n "${NONET:-}" ]; then net=(--net); fi
    unshare --mount --pid --fork --kill-child "${net[@]}" /bin/sh -euc '
        dir=$1; shift
        if [ -n "${NONET:-}" ]; then ip link set lo up; fi
        mount -t proc proc "$dir/proc"
        mount --rbind /dev "$dir/dev"
        exec chroot "$dir" /usr/bin/env -i PATH="$PATH" HOME=/root LANG=C.UTF-8 \
            DEBIAN_FRONTEND=noninteractive "$@"' sh "$dir" "$@"
}

# The service script for MySQL: Debian's mysql-server 9.7 ships only a systemd unit, and the
# test hosts have no systemd. This starts mysqld as the unit does (same sanity checks, the
# package's config), daemonized with a pid file, and stops it by that pid file only.
mysql_init_script() {
    cat <<'EOF'
#!/bin/sh
### BEGIN INIT INFO
# Provides:          mysql
# Required-Start:    $remote_fs $syslog
# Required-Stop:     $remote_fs $syslog
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: MySQL database server (written for repltool's test hosts)
### END INIT INFO
# Debian's mysql-server ships a systemd unit only; this does what the unit does without
# systemd. Stops the server by its pid file only (never by name).
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

opt() { # option default: the last value my_print_defaults gives for [mysqld]
    v=$(my_print_defaults mysqld 2>/dev/null | sed -n "s/^--$1=//p" | tail -n 1)
    echo "${v:-$2}"
}
PIDFILE=$(opt pid-file /run/mysqld/mysqld.pid)
TIMEOUT=${MYSQLD_STARTUP_TIMEOUT:-120}

running_pid() {
    [ -r "$PIDFILE" ] || return 1
    p=$(cat "$PIDFILE" 2>/dev/null)
    [ -n "$p" ] && [ -d "/proc/$p" ] && [ "$(cat /proc/$p/comm 2>/dev/null)" = mysqld ] || return 1
    echo "$p"
}

# Ready means a real query answers: mysqladmin ping also succeeds on "access denied".
ready() {
    mysql --defaults-file=/etc/mysql/debian.cnf -N -e 'SELECT 1' >/dev/null 2>&1
}

start() {
    if p=$(running_pid); then echo "MySQL is already running (pid $p)"; return 0; fi
    /usr/share/mysql/mysql-systemd-start pre || return 1
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    rm -f "$PIDFILE"
    log=$(opt log-error "$(opt log_error /var/log/mysql/error.log)")
    echo "Starting MySQL database server: mysqld"
    # --daemonize: the first process exits once the server is up (or failed).
    if ! mysqld --daemonize --pid-file="$PIDFILE" >/dev/null 2>&1; then
        echo "mysqld failed to start; the end of $log:" >&2
        tail -n 20 "$log" >&2 2>/dev/null
        return 1
    fi
    i=0
    while ! ready; do
        i=$((i + 1))
        if ! running_pid >/dev/null; then
            echo "mysqld exited during start; the end of $log:" >&2
            tail -n 20 "$log" >&2 2>/dev/null
            return 1
        fi
        if [ $i -ge $((TIMEOUT * 5)) ]; then
            echo "mysqld did not answer within ${TIMEOUT}s" >&2
            return 1
        fi
        sleep 0.2
    done
}

stop() {
    if ! p=$(running_pid); then echo "MySQL is not running"; return 0; fi
    echo "Stopping MySQL database server: mysqld"
    kill "$p"
    i=0
    while [ -d "/proc/$p" ] && [ "$(cat /proc/$p/comm 2>/dev/null)" = mysqld ]; do
        i=$((i + 1))
        if [ $i -ge 3000 ]; then echo "mysqld (pid $p) did not stop within 600s" >&2; return 1; fi
        sleep 0.2
    done
    rm -f "$PIDFILE"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
restart | force-reload) stop && start ;;
status)
    if p=$(running_pid); then echo "MySQL is running (pid $p)"; else echo "MySQL is stopped"; exit 3; fi
    ;;
*) echo "Usage: /etc/init.d/mysql {start|stop|restart|force-reload|status}" >&2; exit 1 ;;
esac
EOF
}

build() {
    local name=$1 t0 t1 t2 dir
    recipe "$name"
    t0=$(date +%s.%N)
    dir=$ROOTS_DIR/$name.build
    rm_tree "$dir"
    mkdir -p "$dir"
    # 1. A minimal system, without anything that starts a daemon.
    unshare --mount --pid --fork --kill-child \
        debootstrap --variant=minbase --include="$BASE" "$SUITE" "$dir" "$(mirror)" \
        >"$ROOTS_DIR/$name.debootstrap.log" 2>&1 ||
        { tail -n 30 "$ROOTS_DIR/$name.debootstrap.log" >&2; die "$name: debootstrap $SUITE failed (log: $ROOTS_DIR/$name.debootstrap.log)"; }
    t1=$(date +%s.%N)
    # 2. No package may start a service; lists may be older than their Valid-Until says.
    printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
    chmod 755 "$dir/usr/sbin/policy-rc.d"
    cat >"$dir/etc/apt/apt.conf.d/90repltool" <<'EOF'
Acquire::Check-Valid-Until "false";
APT::Install-Recommends "false";
EOF
    # What the Debian installer writes and debootstrap does not: mysqld resolves 127.0.0.1 to
    # localhost through it.
    cat >"$dir/etc/hosts" <<'EOF2'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF2
    if [ "$name" = mysql-9.7 ]; then
        # mysql-server chowns its directories to mysql before it creates the user (through
        # systemd-sysusers, at the end of its postinst).
        in_root "$dir" groupadd --system mysql
        in_root "$dir" useradd --system --gid mysql --home-dir /nonexistent \
            --shell /bin/false --comment "MySQL Server" mysql
    fi
    in_root "$dir" apt-get -q update >"$ROOTS_DIR/$name.apt.log" 2>&1 &&
        in_root "$dir" apt-get -q -y install --download-only $PKGS >>"$ROOTS_DIR/$name.apt.log" 2>&1 &&
        NONET=1 in_root "$dir" apt-get -q -y install $PKGS >>"$ROOTS_DIR/$name.apt.log" 2>&1 ||
        { tail -n 30 "$ROOTS_DIR/$name.apt.log" >&2; die "$name: installing $PKGS failed (log: $ROOTS_DIR/$name.apt.log)"; }
    if [ "$name" = mysql-9.7 ]; then
        mysql_init_script >"$dir/etc/init.d/mysql"
        chmod 755 "$dir/etc/init.d/mysql"
    fi
    rm -f "$dir/usr/sbin/policy-rc.d"
    in_root "$dir" apt-get clean
    rm -rf "$dir"/var/lib/apt/lists/*
    # 3. What the hosts rely on.
    local ver
    # stdout only: mariadbd warns on stderr that a namespace without network has no MAC address.
    ver=$(NONET=1 in_root "$dir" "$SERVER" --version 2>/dev/null) || die "$name: $SERVER --version failed"
    echo "$ver" | grep -q "$WANT" || die "$name: $SUITE's server is not the expected one: $ver"
    for f in /usr/sbin/sshd /usr/sbin/service /usr/bin/ip /usr/bin/pgrep /etc/mysql/my.cnf; do
        [ -e "$dir$f" ] || die "$name: $f is missing from the root"
    done
    t2=$(date +%s.%N)
    {
        echo "repltool-root $name recipe $RECIPE"
        echo "suite $SUITE"
        echo "mirror $(mirror)"
        echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "server $ver"
        in_root "$dir" dpkg-query -W -f='package ${Package} ${Version}\n' $PKGS
        echo "seconds $(secs "$t0" "$t2") (debootstrap $(secs "$t0" "$t1"), packages $(secs "$t1" "$t2"))"
    } >"$dir/.repltool-root.tmp"
    # The stamp last: until it exists, the root is incomplete.
    mv "$dir/.repltool-root.tmp" "$dir/.repltool-root"
    if [ -e "$ROOTS_DIR/$name" ]; then
        rm_tree "$ROOTS_DIR/$name.old"
        mv "$ROOTS_DIR/$name" "$ROOTS_DIR/$name.old"
    fi
    mv "$dir" "$ROOTS_DIR/$name"
    rm_tree "$ROOTS_DIR/$name.old"
    echo "roots: $name built in $(secs "$t0" "$t2")s (debootstrap $(secs "$t0" "$t1")s, packages $(secs "$t1" "$t2")s): $ver"
}

# Build NAME unless it is complete, under its exclusive lock.
ensure() {
    local name=$1
    if complete "$name"; then
        echo "roots: $name is ready ($ROOTS_DIR/$name)"
        return 0
    fi
    (
        exec 9>"$ROOTS_DIR/$name.lock"
        if ! flock -n 9; then
            echo "roots: $name is locked (being built, or in use by test hosts); waiting" >&2
            flock 9
        fi
        if complete "$name"; then
            echo "roots: $name is ready ($ROOTS_DIR/$name)"
        else
            build "$name"
        fi
    )
}

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot, namespaces)"
for tool in debootstrap unshare chroot flock; do
    command -v "$tool" >/dev/null || die "$tool is missing (bash tests/install-deps.sh installs it)"
done
names=("$@")
if [ ${#names[@]} -eq 0 ]; then names=("${ALL[@]}"); fi
for n in "${names[@]}"; do recipe "$n"; done
mkdir -p "$ROOTS_DIR"
t=$(date +%s.%N)
pids=()
for n in "${names[@]}"; do
    ensure "$n" &
    pids+=($!)
done
fail=0
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { echo "roots: ${names[$i]} failed" >&2; fail=1; }
done
echo "roots: done in $(secs "$t" "$(date +%s.%N)")s"
exit $fail
