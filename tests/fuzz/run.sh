#!/bin/sh
# tests/fuzz/run.sh SECS fresh|keep JOBS FUZZ_O TARGET... - run each libFuzzer
# harness $FUZZ_O/tests/fuzz/fuzz_TARGET for SECS seconds from its seeds
# (tests/fuzz/corpus/TARGET) and regression inputs (tests/fuzz/regress/TARGET),
# JOBS harnesses at a time (each is one process on one core).  New inputs go
# to $FUZZ_O/work/TARGET (emptied first with "fresh"); a crash leaves its input
# as $FUZZ_O/crash-TARGET-*.  Each harness's summary, or the tail of its log
# when it failed, is printed in TARGET order once all have ended; the status
# is 1 when any failed.  Called by tests/fuzz.mk (make fuzz, make fuzz-smoke).
set -eu

if [ "$1" = --one ]; then # one harness (xargs runs JOBS at once): SECS FUZZ_O TARGET
	secs=$2 out=$3 t=$4
	dirs="tests/fuzz/corpus/$t"
	if [ -d "tests/fuzz/regress/$t" ]; then dirs="$dirs tests/fuzz/regress/$t"; fi
	# a hang or a 2 GB process is a finding too
	# shellcheck disable=SC2086 # dirs is a word list
	if "$out/tests/fuzz/fuzz_$t" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-max_total_time="$secs" -dict="tests/fuzz/dict/$t.dict" \
		-artifact_prefix="$out/crash-$t-" "$out/work/$t" $dirs >"$out/fuzz-$t.log" 2>&1; then
		echo 0 >"$out/fuzz-$t.status"
	else
		echo 1 >"$out/fuzz-$t.status"
	fi
	exit 0
fi

secs=$1 mode=$2 jobs=$3 out=$4
shift 4
for t in "$@"; do
	if [ "$mode" = fresh ]; then rm -rf "$out/work/$t"; fi
	mkdir -p "$out/work/$t"
	rm -f "$out/fuzz-$t.status"
done
echo "fuzz: $* for $secs s each, $jobs at a time"
printf '%s\n' "$@" | xargs -P "$jobs" -I{} "$0" --one "$secs" "$out" {}

fails=""
for t in "$@"; do
	echo "fuzz: $t"
	if [ "$(cat "$out/fuzz-$t.status" 2>/dev/null)" = 0 ]; then
		grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' \
			"$out/fuzz-$t.log" | tr '\n' ' '
		echo
	else
		tail -n 60 "$out/fuzz-$t.log"
		fails="$fails $t"
	fi
done
if [ -n "$fails" ]; then
	echo "fuzz: FAILED:$fails (inputs in $out/crash-*)"
	exit 1
fi
echo "fuzz: all passed ($*)"
