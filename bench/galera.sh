# The Galera section, sourced by bench/run.sh (which defines log, die, row, RUNS). Needs root
# (network namespaces) and galera-4, mariadb-backup, socat: the hosts are the live tests'
# network-namespace hosts (tests/it/support/netns.rs), three per cluster, 10.231.77.0/24.
# The measuring is done by the ignored test `live::galera::bench`, in the release build; it
# prints `BENCH|what|median|runs|floor|ratio` lines.
section_galera() {
  log "galera: building the test binary (release)..."
  test_bench_rows galera live::galera::bench
}
