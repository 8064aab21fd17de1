#!/usr/bin/env bash
# Coverage-guided fuzzing of lh-server with libFuzzer (Swift's
# --sanitize=fuzzer): builds lh-fuzz into .build-fuzz/ and runs a target
# for a given time, starting from its seed corpus, the corpus earlier runs
# grew (.build-fuzz/corpus/TARGET) and the committed regressions
# (Fuzz/regressions/TARGET).
#
#   scripts/fuzz.sh TARGET [SECONDS] [libFuzzer options...]
#   TARGET: frame | wfspec | requests | all      SECONDS: per target, default 60
#
# A finding (crash, failed precondition, hang past -timeout) stops the run
# with the input saved in .build-fuzz/findings/TARGET/; fix it and copy the
# input into Fuzz/regressions/TARGET/, which every test run replays
# (FuzzReplayTests). Prints per target: executions, executions/s, coverage
# (libFuzzer's cov: edges and ft: features), corpus size, peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-}"
seconds="${2:-60}"
shift $(( $# >= 2 ? 2 : $# ))
case "$target" in
  frame|wfspec|requests) targets=("$target") ;;
  all) targets=(frame wfspec requests) ;;
  *) echo "usage: scripts/fuzz.sh frame|wfspec|requests|all [SECONDS] [libFuzzer options...]" >&2; exit 2 ;;
esac

echo "fuzz: building lh-fuzz with libFuzzer into .build-fuzz/ (the first build takes minutes)"
swift build --sanitize=fuzzer --scratch-path .build-fuzz --product lh-fuzz -Xswiftc -DLH_FUZZING 2>&1 \
  | grep -E "error|warning: .*lh-fuzz|Compiling lh_fuzz|Build complete" || true
bin=.build-fuzz/debug/lh-fuzz
[ -x "$bin" ] || { echo "fuzz: the build failed (see above)" >&2; exit 1; }

status=0
for t in "${targets[@]}"; do
  seeds=.build-fuzz/seeds/$t corpus=.build-fuzz/corpus/$t findings=.build-fuzz/findings/$t
  mkdir -p "$seeds" "$corpus" "$findings" "Fuzz/regressions/$t"
  LH_FUZZ_TARGET=$t LH_FUZZ_SEEDS=$seeds "$bin"
  log=.build-fuzz/$t.log
  echo "fuzz: $t for ${seconds}s (log: $log)"
  set +e
  LH_FUZZ_TARGET=$t "$bin" "$corpus" "$seeds" "Fuzz/regressions/$t" \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -max_len=65536 \
    -artifact_prefix="$findings/" -print_final_stats=1 "$@" > "$log" 2>&1
  rc=$?
  set -e
  done_line=$(grep -E "^#[0-9]+.*(DONE|pulse|NEW|REDUCE)" "$log" | tail -1 || true)
  execs=$(grep -E -o "stat::number_of_executed_units: +[0-9]+" "$log" | awk '{print $2}')
  rate=$(grep -E -o "stat::average_exec_per_sec: +[0-9]+" "$log" | awk '{print $2}')
  rss=$(grep -E -o "stat::peak_rss_mb: +[0-9]+" "$log" | awk '{print $2}')
  cov=$(echo "$done_line" | grep -o "cov: [0-9]*" | awk '{print $2}')
  ft=$(echo "$done_line" | grep -o "ft: [0-9]*" | awk '{print $2}')
  corp=$(echo "$done_line" | grep -o "corp: [0-9]*/[0-9a-zA-Z]*" | awk '{print $2}')
  if [ "$rc" -ne 0 ]; then
    echo "fuzz: $t FOUND A PROBLEM (exit $rc); the input is in $findings/:" >&2
    grep -E "==ERROR|Fatal error|Precondition failed|deadly signal|Test unit written|lh-fuzz:" "$log" | head -10 >&2
    status=1
  fi
  echo "fuzz: $t: ${execs:-?} executions in ${seconds}s (${rate:-?}/s), cov ${cov:-?} ft ${ft:-?}, corpus ${corp:-?}, peak RSS ${rss:-?} MB, exit $rc"
done
exit $status
