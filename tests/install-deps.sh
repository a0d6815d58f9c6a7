#!/usr/bin/env bash
# Install what repltool's demo and tests need, only where it is missing (Debian/Ubuntu, as root
# or with sudo). Servers installed here are NOT started: the lab and the tests start their own.
set -euo pipefail
need=()
# Installed means "install ok installed": a removed package whose config files remain is
# still known to dpkg, but its programs are gone.
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
# socat: the direct route of a physical seed (mariadb-backup streamed from host to host).
# debootstrap: tests/roots.sh builds the MySQL 9.7 and MariaDB 11.8 roots the netns hosts run.
# galera-4, socat, rsync: the Galera tests (the provider library, mariabackup and rsync SST).
# etcd-server, etcd-client: the watch tests' etcd cluster; protobuf-compiler, libprotobuf-dev:
# the etcd-client crate's build (protoc and the well-known protos).
# haproxy, nginx + libnginx-mod-stream, keepalived: the proxy hosts of the endpoint tests
# (and the unit tests that check rendered files with the real programs).
for pkg in mariadb-server mariadb-client mariadb-backup galera-4 socat rsync openssh-server openssh-client iproute2 procps debootstrap \
           etcd-server etcd-client protobuf-compiler libprotobuf-dev haproxy nginx libnginx-mod-stream keepalived; do
  installed "$pkg" || need+=("$pkg")
done
if [ "${#need[@]}" -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing: ${need[*]}" >&2
# Keep the package scripts from starting a server on port 3306 during the install.
$SUDO sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
