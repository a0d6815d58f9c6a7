#!/usr/bin/env bash
# The whole test suite, as CI runs it: install what the tests need, check formatting and lints,
# build, and run every test (unit, golden, and live tests that start real MariaDB servers and a
# real sshd themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install-deps.sh
# The MySQL 9.7 and MariaDB 11.8 roots (built once, then cached; both at once).
bash tests/roots.sh
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo build --all-targets
# Live tests start many servers; two at a time suits a 2-core machine.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --no-fail-fast -- --test-threads="${REPLTOOL_TEST_THREADS:-2}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
