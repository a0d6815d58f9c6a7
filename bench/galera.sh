# The Galera section, sourced by bench/run.sh (which defines log, die, row, RUNS). Needs root
# (network namespaces) and galera-4, mariadb-backup, socat: the hosts are the live tests'
# network-namespace hosts (tests/it/support/netns.rs), three per cluster, 10.231.77.0/24.
# The measuring is done by the ignored test `live::galera::bench`, in the release build; it
# prints `BENCH|what|median|runs|floor|ratio` lines.
section_galera() {
  log "galera: building the test binary (release)..."
  local out="$WORK/galera-bench.txt"
  RUNS="$RUNS" cargo test --release --quiet --test it -- --ignored --exact live::galera::bench --nocapture \
    >"$out" 2>"$WORK/galera-bench.err" || { tail -n 40 "$WORK/galera-bench.err" >&2; die "the galera benchmark failed"; }
  grep -q '^BENCH|' "$out" || die "the galera benchmark printed no rows: $(cat "$out")"
  local what m runs f r
  while IFS='|' read -r _ what m runs f r; do
    row "$what" "$m" "$runs" "$f" "$r"
  done < <(grep '^BENCH|' "$out")
}
