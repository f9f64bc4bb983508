#!/usr/bin/env bash
# Bounded fuzzing run, as CI does it (tests/run.sh calls this).
#
# Builds the cargo-fuzz targets in fuzz/ (nightly, AddressSanitizer, debug
# assertions and overflow checks on), then runs each one for FUZZ_SECONDS
# (default 60) from a scratch copy of its committed seeds, with libFuzzer's
# leak detection on. Any crash, panic, leak, timeout or out-of-memory fails
# the script; the input that did it is kept under fuzz/artifacts/<target>/.
#
#   FUZZ_SECONDS=600 tests/fuzz.sh            # longer run
#   FUZZ_TARGETS="lines" tests/fuzz.sh        # one target
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
read -r -a targets <<<"${FUZZ_TARGETS:-decode lines session pipeline}"

# The toolchain and cargo-fuzz, if this machine lacks them (cargo-fuzz
# compiles for a few minutes the first time).
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/ftpsesame-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

cd fuzz
echo "fuzz: building the targets"
cargo +nightly fuzz build >/dev/null 2>"$scratch/build.log" || {
    cat "$scratch/build.log" >&2
    exit 1
}

passed=0
failed=0
for t in "${targets[@]}"; do
    corpus="$scratch/corpus/$t"
    mkdir -p "$corpus" "artifacts/$t"
    cp seeds/"$t"/* "$corpus"/
    if [ "$t" = pipeline ]; then
        # The recorded lab captures (real servers and clients) as seeds too,
        # rewritten into the target's record format (Ethernet, link index 0).
        python3 - "$corpus" ../tests/captures/*.pcap <<'PY'
import struct, sys, os
out = sys.argv[1]
for path in sys.argv[2:]:
    data = open(path, "rb").read()
    buf, last, off = bytearray([0]), None, 24
    while off + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack_from("<IIII", data, off)
        frame = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        ts = sec * 1_000_000 + usec
        delta = 0 if last is None else max(0, ts - last)
        last = ts
        buf += struct.pack("<IH", min(delta, 0xFFFFFFFF), len(frame) & 0x7FFF) + frame
    open(os.path.join(out, "lab-" + os.path.basename(path)), "wb").write(buf)
PY
    fi
    log="$scratch/$t.log"
    rc=0
    # -detect_leaks=1 is libFuzzer's default, spelled out because a leak
    # must fail the run; -timeout turns a hang into a failure.
    cargo +nightly fuzz run "$t" "$corpus" -- \
        -max_total_time="$FUZZ_SECONDS" -detect_leaks=1 -timeout=10 \
        -dict=ftp.dict -print_final_stats=1 >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 || true)
    crashes=$(grep -cE '^==[0-9]+==ERROR|panicked at|^SUMMARY: libFuzzer' "$log" || true)
    if [ "$rc" -eq 0 ] && [ "$crashes" -eq 0 ] && [ -n "$execs" ]; then
        echo "fuzz $t: ${FUZZ_SECONDS}s, ${execs} executions, ${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l), 0 crashes"
        passed=$((passed + 1))
    else
        echo "fuzz $t: FAILED (exit $rc) after ${execs:-?} executions; log tail:" >&2
        tail -n 40 "$log" >&2
        ls -l "artifacts/$t" >&2 || true
        failed=$((failed + 1))
    fi
done

echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
