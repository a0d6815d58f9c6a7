#!/usr/bin/env bash
# From a fresh clone to a replicating 3-node lab: install what is missing, build, start three
# local MariaDB servers, build replication with `repltool init`, show it with `repltool status`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install-deps.sh
cargo build --release
./target/release/repltool lab up --nodes 3 --dir repltool-lab
./target/release/repltool lab status --dir repltool-lab
./target/release/repltool init repltool-lab/topology.yaml
./target/release/repltool status -f repltool-lab/topology.yaml
echo
echo "Stop it with: ./target/release/repltool lab down --dir repltool-lab"
