#!/bin/bash
# Runs each fuzz target for SECONDS from its committed seed corpus
# (corpus/<target>/), new inputs going to corpus-new/<target>/; SECONDS = 0
# replays the corpus only.  Prints executions per target and the closing
# line "N passed, N failed".  A crash leaves its input as crash-* here.
#   ./run.sh SECONDS target...
set -u
cd "$(dirname "$0")" || exit 1
secs="$1"; shift
passed=0; failed=0
for t in "$@"; do
    mkdir -p "corpus-new/$t"
    log="corpus-new/$t.log"
    if [ "$secs" = 0 ]; then
        ./"$t" -runs=0 "corpus/$t" >"$log" 2>&1
    else
        ./"$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1536 -max_len=65536 \
            -print_final_stats=1 "corpus-new/$t" "corpus/$t" >"$log" 2>&1
    fi
    rc=$?
    execs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n 1)"
    cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1)"
    if [ "$rc" = 0 ]; then
        passed=$((passed + 1))
        echo "ok   $t: ${execs:-?} executions in ${secs} s, ${cov:-cov: ?}, no crash"
    else
        failed=$((failed + 1))
        echo "FAIL $t: exit $rc after ${execs:-?} executions; see tests/fuzz/$log"
        grep -E 'ERROR|fuzz: |SUMMARY|Test unit written' "$log" | head -n 8
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" = 0 ]
