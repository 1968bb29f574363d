#!/usr/bin/env bash
# Benchmarks of SPEC §12: one command, one line per figure.
#
# Role: build the release binaries, start the bundled emulator (mixpeek-mock)
# on 127.0.0.1 with a free port, drive mixpeek-ingest through each scenario of
# the performance table, and print
#
#     name value unit target ratio
#
# on stdout, one line per figure; lines starting with '#' are context (the
# machine, the sizes, raw timings). ratio >= 1 means the target is met: it is
# value/target for figures where more is better (throughput) and target/value
# where less is better (latency, seconds, memory, CPU); for counts whose
# target is zero it is 1 when the count is zero and 0 otherwise. Progress
# goes to stderr. See BENCHMARKS.md for the method.
#
# Needs: bash >= 5 (EPOCHREALTIME), coreutils, grep, sed, openssl, cargo, and
# GNU time at /usr/bin/time (without it peak RSS is read by polling
# /proc/PID/status VmHWM). Everything it creates lives in one directory under
# ${TMPDIR:-/tmp}, removed on exit (also on Ctrl-C); every process it starts
# is stopped by its own PID.
#
# Usage: benches/run.sh [--quick] [--no-build] [--only LIST] [--keep]
#   --quick      small sizes (minutes instead of tens of minutes); the figures
#                are then not comparable with the targets, only the method is
#   --no-build   use the binaries already in the cargo target directory
#   --only LIST  comma-separated subset of: sha256,e2e,latency,restart,memory,idle
#   --keep       keep the temp directory (logs, configs) for inspection

set -euo pipefail
shopt -s nullglob
export LC_ALL=C

readonly ALL_FIGURES="sha256,e2e,latency,restart,memory,idle"
MODE=full
BUILD=1
ONLY=$ALL_FIGURES
KEEP=0

# usage [STATUS]: the usage block of the header; on stderr unless STATUS is 0.
usage() {
    local status=${1:-2}
    if ((status == 0)); then
        sed -n '/^# Usage:/,/^$/{s/^# \{0,1\}//;p}' "$0"
    else
        sed -n '/^# Usage:/,/^$/{s/^# \{0,1\}//;p}' "$0" >&2
    fi
    exit "$status"
}

while (($#)); do
    case $1 in
        --quick) MODE=quick ;;
        --no-build) BUILD=0 ;;
        --only)
            (($# >= 2)) || usage
            ONLY=$2
            shift
            ;;
        --keep) KEEP=1 ;;
        -h | --help) usage 0 ;;
        *)
            echo "run.sh: unknown argument '$1'" >&2
            usage
            ;;
    esac
    shift
done

for figure in ${ONLY//,/ }; do
    [[ ",$ALL_FIGURES," == *",$figure,"* ]] || {
        echo "run.sh: unknown figure '$figure' (known: $ALL_FIGURES)" >&2
        exit 2
    }
done

# Sizes. Full mode is the table of SPEC §12; quick mode checks the method.
if [[ $MODE == full ]]; then
    SHA_BYTES=$((1024 * 1024 * 1024))  # 1 GiB
    E2E_DIRS=1000                      # x E2E_PER_DIR files of 1 KiB
    LAT_DROPS=200
    RESTART_FILES=100000
    TRACKED_FILES=1000000
    BIG_BYTES=$((4 * 1024 * 1024 * 1024)) # 4 GiB
    IDLE_SECONDS=60
else
    SHA_BYTES=$((100 * 1024 * 1024))
    E2E_DIRS=100
    LAT_DROPS=20
    RESTART_FILES=10000
    TRACKED_FILES=10000
    BIG_BYTES=$((256 * 1024 * 1024))
    IDLE_SECONDS=10
fi
readonly E2E_PER_DIR=10
readonly FILES_PER_DIR=100 # restart and memory trees
readonly E2E_SETTLE_MS=200
readonly LAT_SETTLE_MS=500
readonly SHA_ROUNDS=3
readonly BUCKET=bench
# The emulator and the daemon read the same local key from the environment.
export MIXPEEK_MOCK_API_KEY=sk_bench_local MIXPEEK_BENCH_KEY=sk_bench_local
# Generous bounds: a scenario that does not finish in time is reported as
# failed instead of hanging the run.
readonly STEP_TIMEOUT_S=30
readonly BULK_TIMEOUT_S=3600

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PIDS=()
WORK=

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}

cleanup() {
    local status=$?
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ -n $WORK && -d $WORK ]]; then
        if ((KEEP)); then
            log "kept $WORK"
        else
            rm -rf -- "$WORK"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- numbers ---------------------------------------------------------------
# bash has integers only: times are microseconds, other values are scaled
# integers, and `fixed` prints num/den with a fixed number of decimals.

# Sets NOW to the wall clock in microseconds (no subprocess).
now_us() { NOW=${EPOCHREALTIME/./}; }

# fixed NUM DEN DECIMALS: NUM/DEN rounded to DECIMALS places.
fixed() {
    local num=$1 den=$2 places=$3 sign=
    if ((num < 0)); then
        sign=-
        num=$((-num))
    fi
    local scale=1 i
    for ((i = 0; i < places; i++)); do scale=$((scale * 10)); done
    local scaled=$(((num * scale * 2 + den) / (den * 2)))
    if ((places == 0)); then
        printf '%s%d' "$sign" "$scaled"
    else
        printf '%s%d.%0*d' "$sign" $((scaled / scale)) "$places" $((scaled % scale))
    fi
}

# An RFC 3339 UTC timestamp from a log line, in microseconds since the epoch.
ts_us() { date -u -d "$1" +%s%6N; }

# report NAME VALUE_NUM VALUE_DEN DECIMALS UNIT TARGET_NUM TARGET_DEN BETTER
#   BETTER: higher | lower | zero (a count whose target is 0) | none (no target)
report() {
    local name=$1 num=$2 den=$3 places=$4 unit=$5 tnum=$6 tden=$7 better=$8
    local value target ratio
    value=$(fixed "$num" "$den" "$places")
    case $better in
        none)
            target=-
            ratio=-
            ;;
        zero)
            target=0
            if ((num == 0)); then ratio=1.00; else ratio=0.00; fi
            ;;
        higher)
            target=$(fixed "$tnum" "$tden" 2)
            ratio=$(fixed $((num * tden)) $((den * tnum)) 2)
            ;;
        lower)
            target=$(fixed "$tnum" "$tden" 2)
            if ((num <= 0)); then
                ratio=inf
            else
                ratio=$(fixed $((tnum * den)) $((tden * num)) 2)
            fi
            ;;
    esac
    target=${target%.00}
    printf '%s %s %s %s %s\n' "$name" "$value" "$unit" "$target" "$ratio"
}

info() { printf '# %s\n' "$*"; }

# --- waiting ---------------------------------------------------------------

# wait_until TIMEOUT_S WHAT COMMAND...: polls COMMAND until it succeeds,
# every POLL_S seconds (default 0.01). Figures are read from log timestamps,
# never from when a poll noticed something: the interval only trades the
# CPU the polls take from the daemon against the run's length.
wait_until() {
    local timeout_s=$1 what=$2
    shift 2
    now_us
    local deadline=$((NOW + timeout_s * 1000000))
    until "$@"; do
        now_us
        ((NOW < deadline)) || die "timed out after ${timeout_s}s waiting for $what"
        sleep "${POLL_S:-0.01}"
    done
}

# count PATTERN FILE: lines of FILE holding the fixed string PATTERN.
count() {
    local n
    n=$(grep -cF -- "$1" "$2" 2>/dev/null) || true
    echo "${n:-0}"
}

at_least() {
    local n
    n=$(count "$1" "$2")
    ((${n:-0} >= $3))
}

# --- files -----------------------------------------------------------------

# A 32-byte MP4 'ftyp' box, so the sniffer classifies the file as video/mp4.
mp4_header() { printf '\0\0\0\040ftypisom\0\0\002\0isomiso2avc1mp41'; }

# random_bytes N: N pseudo-random bytes on stdout (AES-CTR keystream: far
# faster than /dev/urandom, and incompressible like real media).
random_bytes() {
    head -c "$1" < <(openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass pass:bench \
        -in /dev/zero 2>/dev/null)
}

# make_tree DIR FILES PER_DIR: FILES small text files, PER_DIR per directory,
# each with distinct content (so skip_duplicates leaves none out).
make_tree() {
    local dir=$1 files=$2 per_dir=$3 d f names=()
    local dirs=$(((files + per_dir - 1) / per_dir))
    # One mkdir per thousand directories rather than one per directory.
    for ((d = 0; d < dirs; d++)); do
        names+=("$dir/d$d")
        if ((${#names[@]} == 1000 || d == dirs - 1)); then
            mkdir -p "${names[@]}"
            names=()
        fi
    done
    for ((d = 0; d < dirs; d++)); do
        for ((f = 0; f < per_dir && d * per_dir + f < files; f++)); do
            printf 'file %d of directory %d\n' "$f" "$d" >"$dir/d$d/f$f.txt"
        done
    done
}

# finished DIR: a scenario's files go as soon as it is done (the large trees
# would otherwise add up), unless --keep.
finished() {
    if ((!KEEP)); then rm -rf -- "$1"; fi
}

# --- processes -------------------------------------------------------------

# measure OUT_PREFIX COMMAND...: runs COMMAND with stdout/stderr to
# OUT_PREFIX.out/.err, killed after BULK_TIMEOUT_S; sets RUN_STATUS, RUN_US
# (wall time) and RUN_RSS_KB (peak resident set size of COMMAND).
measure() {
    local prefix=$1
    shift
    local start
    RUN_STATUS=0
    now_us
    start=$NOW
    if [[ -x /usr/bin/time ]]; then
        # time's child is `timeout`; the peak it reports is the largest of
        # that child and the children it waited for, i.e. COMMAND's.
        /usr/bin/time -v -o "$prefix.time" timeout --kill-after=10 "$BULK_TIMEOUT_S" "$@" \
            >"$prefix.out" 2>"$prefix.err" || RUN_STATUS=$?
        RUN_RSS_KB=$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$prefix.time")
    else
        "$@" >"$prefix.out" 2>"$prefix.err" &
        local pid=$! hwm=0 kb deadline=$((start + BULK_TIMEOUT_S * 1000000))
        PIDS+=("$pid")
        while kill -0 "$pid" 2>/dev/null; do
            kb=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB$/\1/p' "/proc/$pid/status" 2>/dev/null || true)
            if [[ -n $kb ]] && ((kb > hwm)); then hwm=$kb; fi
            now_us
            if ((NOW > deadline)); then kill -KILL "$pid" 2>/dev/null || true; fi
            sleep 0.01
        done
        wait "$pid" || RUN_STATUS=$?
        RUN_RSS_KB=$hwm
    fi
    now_us
    RUN_US=$((NOW - start))
    if ((RUN_STATUS == 124 || RUN_STATUS == 137)); then
        die "$* did not finish within ${BULK_TIMEOUT_S}s"
    fi
}

# start_mock DIR: the emulator with bucket $BUCKET, requiring the key in
# MIXPEEK_MOCK_API_KEY; sets MOCK_PID, MOCK_URL, MOCK_LOG.
start_mock() {
    local dir=$1
    MOCK_LOG=$dir/mock.log
    RUST_LOG=info "$BIN/mixpeek-mock" --bucket "$BUCKET" >"$dir/mock.out" 2>"$MOCK_LOG" &
    MOCK_PID=$!
    PIDS+=("$MOCK_PID")
    wait_until "$STEP_TIMEOUT_S" "the emulator's address" grep -qs '^listening on ' "$dir/mock.out"
    MOCK_URL=$(sed -n 's/^listening on //p' "$dir/mock.out")
}

# stop PID: SIGTERM and wait.
stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# stop_mock: stops the emulator; sets MOCK_OBJECTS, the objects it accepted
# (from its last log line).
stop_mock() {
    stop "$MOCK_PID"
    MOCK_OBJECTS=$(sed -n 's/.* stopping .*objects=\([0-9]*\).*/\1/p' "$MOCK_LOG" | tail -n 1)
    MOCK_OBJECTS=${MOCK_OBJECTS:-0}
}

# Emulator log lines of create requests (single and batch), any status.
CREATE_OK="method=POST path=/v1/buckets/$BUCKET/objects"

# write_config FILE WATCH STATE SETTLE GROUP_BY [EXTRA WATCH LINE...]
write_config() {
    local file=$1 watch=$2 state=$3 settle=$4 group_by=$5
    shift 5
    {
        printf '[api]\nbase_url = "%s"\ndialect = "objects"\napi_key_env = "MIXPEEK_BENCH_KEY"\n' \
            "${MOCK_URL:-http://127.0.0.1:9}"
        printf '\n[state]\ndir = "%s"\n' "$state"
        printf '\n[log]\nformat = "json"\nlevel = "info"\n'
        printf '\n[[watch]]\npath = "%s"\nbucket = "%s"\ngroup_by = "%s"\nsettle = "%s"\n' \
            "$watch" "$BUCKET" "$group_by" "$settle"
        local line
        for line in "$@"; do printf '%s\n' "$line"; done
    } >"$file"
    chmod 600 "$file"
}

# The daemon binary with a configuration; an external command, so that
# /usr/bin/time measures the daemon itself.
ingest() { "$BIN/mixpeek-ingest" --config "$@"; }

# start_daemon CONFIG LOG: `run` in the background; returns once it watches
# ("watching with OS events", or "watching by polling" where inotify fails).
start_daemon() {
    "$BIN/mixpeek-ingest" --config "$1" run 2>"$2" &
    DAEMON_PID=$!
    PIDS+=("$DAEMON_PID")
    wait_until "$STEP_TIMEOUT_S" "the daemon to watch" at_least '"message":"watching ' "$2" 1
    if grep -qF '"message":"watching by polling"' "$2"; then
        log "warning: the daemon polls instead of using OS events; figures are not representative"
    fi
}

# Blobs of the objects the daemon logged as delivered.
delivered_blobs() {
    local n sum=0
    while read -r n; do sum=$((sum + n)); done < <(grep -F '"message":"delivered"' "$1" 2>/dev/null |
        sed -n 's/.*"blobs":\([0-9]*\).*/\1/p')
    echo "$sum"
}

blobs_at_least() {
    local n
    n=$(delivered_blobs "$1")
    ((${n:-0} >= $2))
}

alive() { kill -0 "$1" 2>/dev/null || die "$2 exited early; see its log (--keep keeps it)"; }

# The counters `once` prints on its last line: once_counter FILE NAME.
once_counter() {
    sed -n "s/^once: .*\\b$2=\\([0-9]*\\).*/\\1/p" "$1" | tail -n 1
}

# --- the machine -----------------------------------------------------------

machine() {
    local cpu mem_kb kernel
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    mem_kb=$(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\) kB/\1/p' /proc/meminfo)
    kernel=$(uname -sr)
    info "mixpeek-ingest benchmarks (SPEC §12), mode: $MODE"
    info "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    info "machine: $(nproc) cores, $(fixed "$mem_kb" $((1024 * 1024)) 1) GiB memory, cpu: ${cpu:-unknown}, $kernel"
    info "filesystem of the temp dir: $(df -hT "$WORK" | sed -n '2{s/  */ /g;p}')"
    info "build: $("$BIN/mixpeek-ingest" --version), $(rustc --version 2>/dev/null || echo 'rustc unknown')"
    if git -C "$ROOT" rev-parse --short HEAD >/dev/null 2>&1; then
        local dirty=
        if [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null) ]]; then
            dirty=" (with uncommitted changes)"
        fi
        info "commit: $(git -C "$ROOT" rev-parse --short HEAD)$dirty"
    fi
    if [[ -x /usr/bin/time ]]; then
        info "peak RSS from /usr/bin/time -v"
    else
        info "peak RSS from /proc/PID/status VmHWM, polled every 10 ms (no /usr/bin/time)"
    fi
    info "columns: name value unit target ratio (ratio >= 1 meets the target)"
}

# --- figures ---------------------------------------------------------------

# SPEC §12 row 1: SHA-256 of a large file against `openssl dgst -sha256`.
# `plan` reads and hashes a file above inline_max_bytes (its upload blob shows
# the digest) without network or state writes: the daemon's own hashing path,
# plus its process start and one scan, counted against it. Cold: the file's
# pages are dropped from the page cache before each run (posix_fadvise
# DONTNEED through `dd iflag=nocache`, no root needed); warm: read from the
# cache. Best of SHA_ROUNDS runs each, the two tools taking turns.
figure_sha256() {
    local dir=$WORK/sha256
    mkdir -p "$dir/drop" "$dir/state"
    log "sha256: writing a $(size_name "$SHA_BYTES") file"
    local file=$dir/drop/big.mp4
    { mp4_header && random_bytes $((SHA_BYTES - 32)); } >"$file"
    (($(stat -c %s "$file") == SHA_BYTES)) || die "sha256: the test file has the wrong size"
    # Dirty pages cannot be dropped: write them out first.
    sync "$file"
    MOCK_URL='' write_config "$dir/config.toml" "$dir/drop" "$dir/state" 2s file

    # Both tools must agree on the digest.
    local expected planned
    expected=$(openssl dgst -sha256 -r "$file" | cut -d' ' -f1)
    ingest "$dir/config.toml" plan >"$dir/plan.out" 2>"$dir/plan.err" ||
        die "sha256: plan failed: $(cat "$dir/plan.err")"
    planned=$(grep -o 'sha256:[0-9a-f]*' "$dir/plan.out" | head -n 1)
    [[ $planned == "sha256:$expected" ]] ||
        die "sha256: plan shows '${planned:-no digest}', openssl says $expected"

    local cache
    for cache in cold warm; do
        local best_openssl=0 best_daemon=0 round t0 o p
        for ((round = 1; round <= SHA_ROUNDS; round++)); do
            [[ $cache == cold ]] && uncache "$file"
            now_us
            t0=$NOW
            openssl dgst -sha256 "$file" >/dev/null
            now_us
            o=$((NOW - t0))
            [[ $cache == cold ]] && uncache "$file"
            now_us
            t0=$NOW
            ingest "$dir/config.toml" plan >/dev/null 2>&1 || die "sha256: plan failed"
            now_us
            p=$((NOW - t0))
            if ((best_openssl == 0 || o < best_openssl)); then best_openssl=$o; fi
            if ((best_daemon == 0 || p < best_daemon)); then best_daemon=$p; fi
        done
        info "sha256 $cache: best of $SHA_ROUNDS: openssl $(fixed "$best_openssl" 1000 0) ms ($(mib_per_s "$SHA_BYTES" "$best_openssl") MiB/s), mixpeek-ingest plan $(fixed "$best_daemon" 1000 0) ms ($(mib_per_s "$SHA_BYTES" "$best_daemon") MiB/s)"
        # Throughput relative to openssl, in percent: t_openssl / t_daemon.
        report "sha256_${cache}_$(size_name "$SHA_BYTES")_vs_openssl" $((best_openssl * 100)) "$best_daemon" 1 % 90 1 higher
    done
    finished "$dir"
}

# uncache FILE: drop FILE's pages from the page cache.
uncache() {
    dd if="$1" iflag=nocache count=0 status=none
}

# mib_per_s BYTES MICROSECONDS
mib_per_s() { fixed $(($1 * 1000000 / (1024 * 1024))) "$2" 0; }

size_name() {
    local bytes=$1
    if ((bytes % (1024 * 1024 * 1024) == 0)); then
        printf '%dGiB' $((bytes / 1024 / 1024 / 1024))
    else
        printf '%dMiB' $((bytes / 1024 / 1024))
    fi
}

# SPEC §12 row 2: a drop of E2E_DIRS directories of E2E_PER_DIR files of
# 1 KiB into a running daemon, from the drop's first moment to the emulator's
# answer to the last create. Two ways to drop:
#   moved:   the tree is written beside the watch, then its directories are
#            renamed into it by one `mv` (the atomic-drop pattern); this
#            times the daemon alone.
#   written: the files are written in place by this script, one by one, so
#            the daemon works while they arrive; the writer's own speed on
#            this machine bounds the figure (its time is printed).
figure_e2e() {
    e2e_drop moved
    e2e_drop written
}

# The directory-name list and 1 KiB bodies of the e2e tree, under $1.
e2e_write_tree() {
    local root=$1 pad d f line names=()
    printf -v pad '%1024s' ''
    pad=${pad// /x}
    for ((d = 0; d < E2E_DIRS; d++)); do
        for ((f = 0; f < E2E_PER_DIR; f++)); do
            # A distinct first line (so no blob is a duplicate), padded.
            line="file $f of directory $d "
            printf '%s%s\n' "$line" "${pad:0:$((1023 - ${#line}))}" >"$root/d$d/f$f.txt"
        done
    done
}

e2e_drop() {
    local style=$1
    local dir=$WORK/e2e-$style files=$((E2E_DIRS * E2E_PER_DIR))
    mkdir -p "$dir/drop" "$dir/state" "$dir/staging"
    start_mock "$dir"
    write_config "$dir/config.toml" "$dir/drop" "$dir/state" "${E2E_SETTLE_MS}ms" directory
    start_daemon "$dir/config.toml" "$dir/daemon.log"

    local d names=() start written
    if [[ $style == moved ]]; then
        for ((d = 0; d < E2E_DIRS; d++)); do names+=("$dir/staging/d$d"); done
        mkdir "${names[@]}"
        e2e_write_tree "$dir/staging"
        log "e2e: moving $files files of 1 KiB in $E2E_DIRS directories into the watch"
        now_us
        start=$NOW
        mv "${names[@]}" "$dir/drop/"
    else
        # The directories first, in one process: a mkdir per directory would
        # time process starts. Empty directories make no object.
        for ((d = 0; d < E2E_DIRS; d++)); do names+=("$dir/drop/d$d"); done
        mkdir "${names[@]}"
        log "e2e: writing $files files of 1 KiB into $E2E_DIRS directories of the watch"
        now_us
        start=$NOW
        e2e_write_tree "$dir/drop"
    fi
    now_us
    written=$NOW
    # Blobs, not objects: a directory caught half-written is sent as two
    # objects, and only the second one completes the drop.
    POLL_S=0.2 wait_until "$BULK_TIMEOUT_S" "$files files to be delivered" \
        blobs_at_least "$dir/daemon.log" "$files"
    alive "$DAEMON_PID" "the daemon"

    local last_ts last blobs requests objects
    last_ts=$(grep -F -- "$CREATE_OK" "$MOCK_LOG" | grep -F 'status=200' | tail -n 1 | cut -d' ' -f1)
    [[ -n $last_ts ]] || die "e2e: the emulator logged no accepted create"
    last=$(ts_us "$last_ts")
    blobs=$(delivered_blobs "$dir/daemon.log")
    objects=$(count '"message":"delivered"' "$dir/daemon.log")
    requests=$(count "$CREATE_OK" "$MOCK_LOG")
    stop "$DAEMON_PID"
    stop_mock
    ((blobs == files)) || die "e2e: $blobs blobs delivered, expected $files"
    ((MOCK_OBJECTS == objects)) || die "e2e: the emulator accepted $MOCK_OBJECTS objects, the daemon delivered $objects"
    info "e2e $style: settle ${E2E_SETTLE_MS}ms; the drop took $(fixed $((written - start)) 1000 0) ms; last create answered $(fixed $((last - start)) 1000 0) ms after the drop began; $objects objects for $E2E_DIRS directories in $requests create requests"
    report "e2e_${files}_files_$style" $((files * 1000000)) $((last - start)) 0 files/s 5000 1 higher
    finished "$dir"
}

# SPEC §12 row 3: one file at a time into an idle daemon; from the end of the
# write (the file is closed) to the emulator receiving the create, minus settle.
figure_latency() {
    local dir=$WORK/latency
    mkdir -p "$dir/drop" "$dir/state"
    start_mock "$dir"
    write_config "$dir/config.toml" "$dir/drop" "$dir/state" "${LAT_SETTLE_MS}ms" file
    start_daemon "$dir/config.toml" "$dir/daemon.log"
    log "latency: $LAT_DROPS single-file drops, settle ${LAT_SETTLE_MS}ms"

    local samples=() i before closed entry ts elapsed_ms arrived
    for ((i = 1; i <= LAT_DROPS; i++)); do
        before=$(count "$CREATE_OK" "$MOCK_LOG")
        printf 'latency sample %d at %s\n' "$i" "$EPOCHREALTIME" >"$dir/drop/sample-$i.txt"
        now_us
        closed=$NOW
        wait_until "$STEP_TIMEOUT_S" "drop $i to reach the emulator" \
            at_least "$CREATE_OK" "$MOCK_LOG" $((before + 1))
        entry=$(grep -F -- "$CREATE_OK" "$MOCK_LOG" | sed -n "$((before + 1))p")
        ts=${entry%% *}
        elapsed_ms=$(sed -n 's/.*elapsed_ms=\([0-9]*\).*/\1/p' <<<"$entry")
        # The line is written when the answer is; the request arrived
        # elapsed_ms before that.
        arrived=$(($(ts_us "$ts") - ${elapsed_ms:-0} * 1000))
        samples+=($((arrived - closed - LAT_SETTLE_MS * 1000)))
        # Idle again: the delivery is recorded before the next drop.
        wait_until "$STEP_TIMEOUT_S" "drop $i to be recorded" \
            at_least '"message":"delivered"' "$dir/daemon.log" "$i"
    done
    alive "$DAEMON_PID" "the daemon"
    stop "$DAEMON_PID"
    stop_mock

    local sorted
    mapfile -t sorted < <(printf '%s\n' "${samples[@]}" | sort -n)
    local n=${#sorted[@]}
    # Nearest rank: the smallest sample with at least p% of samples at or below it.
    local p50=${sorted[$(((50 * n + 99) / 100 - 1))]}
    local p99=${sorted[$(((99 * n + 99) / 100 - 1))]}
    local slowest=() k
    for ((k = n - 1; k >= 0 && k >= n - 5; k--)); do slowest+=("$(fixed "${sorted[k]}" 1000 1)"); done
    info "latency: $n drops, settle ${LAT_SETTLE_MS}ms subtracted; min $(fixed "${sorted[0]}" 1000 1) ms; slowest ${slowest[*]} ms"
    report latency_p50 "$p50" 1000 1 ms 250 1 none
    report latency_p99 "$p99" 1000 1 ms 250 1 lower
    finished "$dir"
}

# SPEC §12 row 4: deliver a tree with `once`, then time a second `once` over
# it, which is what a restart does: scan, compare with the store, send nothing.
figure_restart() {
    local dir=$WORK/restart
    mkdir -p "$dir/drop" "$dir/state"
    start_mock "$dir"
    write_config "$dir/config.toml" "$dir/drop" "$dir/state" 2s directory
    log "restart: writing $RESTART_FILES files"
    make_tree "$dir/drop" "$RESTART_FILES" "$FILES_PER_DIR"
    local objects=$(((RESTART_FILES + FILES_PER_DIR - 1) / FILES_PER_DIR))
    log "restart: first delivery"
    measure "$dir/first" "$BIN/mixpeek-ingest" --config "$dir/config.toml" once
    ((RUN_STATUS == 0)) || die "restart: the first once failed ($RUN_STATUS): $(tail -n 3 "$dir/first.err")"
    local delivered
    delivered=$(once_counter "$dir/first.err" objects_delivered)
    ((delivered == objects)) || die "restart: $delivered objects delivered, expected $objects"
    info "restart: first delivery of $RESTART_FILES files ($objects objects) took $(fixed "$RUN_US" 1000000 2) s"

    log "restart: second once over the delivered tree"
    local mock_before
    mock_before=$(count ' request ' "$MOCK_LOG")
    measure "$dir/second" "$BIN/mixpeek-ingest" --config "$dir/config.toml" once
    ((RUN_STATUS == 0)) || die "restart: the second once failed ($RUN_STATUS): $(tail -n 3 "$dir/second.err")"
    local hashed requests mock_after
    hashed=$(once_counter "$dir/second.err" files_hashed)
    requests=$(once_counter "$dir/second.err" requests)
    mock_after=$(count ' request ' "$MOCK_LOG")
    stop_mock
    info "restart: second once: $(grep '^once: ' "$dir/second.err" | tail -n 1 | cut -c7-); the emulator received $((mock_after - mock_before)) requests; peak RSS $(fixed "$RUN_RSS_KB" 1024 1) MiB"
    report "restart_${RESTART_FILES}_files" "$RUN_US" 1000000 2 s 3 1 lower
    report restart_files_rehashed "${hashed:-0}" 1 0 files 0 1 zero
    report restart_requests $((mock_after - mock_before)) 1 0 requests 0 1 zero
    finished "$dir"
}

# SPEC §12 row 5: peak RSS of `once` delivering, then re-checking, a tree of
# TRACKED_FILES files; then the extra peak RSS of a large file hashed and
# uploaded over the same flow with a small one.
figure_memory() {
    local dir=$WORK/memory
    mkdir -p "$dir/drop" "$dir/state"
    start_mock "$dir"
    write_config "$dir/config.toml" "$dir/drop" "$dir/state" 2s directory
    log "memory: writing $TRACKED_FILES files"
    make_tree "$dir/drop" "$TRACKED_FILES" "$FILES_PER_DIR"
    log "memory: delivering them"
    measure "$dir/ingest" "$BIN/mixpeek-ingest" --config "$dir/config.toml" once
    ((RUN_STATUS == 0)) || die "memory: once failed ($RUN_STATUS): $(tail -n 3 "$dir/ingest.err")"
    local ingest_kb=$RUN_RSS_KB ingest_us=$RUN_US
    measure "$dir/recheck" "$BIN/mixpeek-ingest" --config "$dir/config.toml" once
    ((RUN_STATUS == 0)) || die "memory: the second once failed ($RUN_STATUS)"
    local recheck_kb=$RUN_RSS_KB
    stop_mock
    info "memory: delivering $TRACKED_FILES files took $(fixed "$ingest_us" 1000000 1) s"
    report "rss_deliver_${TRACKED_FILES}_files" "$ingest_kb" 1024 1 MiB 64 1 lower
    report "rss_restart_${TRACKED_FILES}_tracked" "$recheck_kb" 1024 1 MiB 64 1 lower
    finished "$dir"

    # The same upload flow for a 1 MiB file and for the large one: the
    # difference is what the file's size costs. The large file is sparse
    # after its header: reading it costs no disk, hashing and sending cost
    # the same as for real data.
    local base_kb big_kb run size
    for run in small big; do
        local rdir=$WORK/memory-$run
        mkdir -p "$rdir/drop" "$rdir/state"
        start_mock "$rdir"
        write_config "$rdir/config.toml" "$rdir/drop" "$rdir/state" 2s file 'delivery = "upload"'
        if [[ $run == small ]]; then
            size=$((1024 * 1024))
            { mp4_header && random_bytes $((size - 32)); } >"$rdir/drop/clip.mp4"
        else
            size=$BIG_BYTES
            { mp4_header && random_bytes $((1024 * 1024 - 32)); } >"$rdir/drop/clip.mp4"
            truncate -s "$size" "$rdir/drop/clip.mp4"
        fi
        log "memory: uploading a $(size_name "$size") file"
        measure "$rdir/once" "$BIN/mixpeek-ingest" --config "$rdir/config.toml" once
        ((RUN_STATUS == 0)) || die "memory: once over the $run file failed ($RUN_STATUS): $(tail -n 3 "$rdir/once.err")"
        (($(count 'method=PUT' "$MOCK_LOG") >= 1)) || die "memory: the $run file was not uploaded"
        grep -F 'method=PUT' "$MOCK_LOG" | grep -qF 'status=200' || die "memory: the upload of the $run file was refused"
        stop_mock
        ((MOCK_OBJECTS == 1)) || die "memory: the emulator accepted $MOCK_OBJECTS objects for the $run file"
        if [[ $run == small ]]; then base_kb=$RUN_RSS_KB; else big_kb=$RUN_RSS_KB; fi
        info "memory: once uploading the $(size_name "$size") file: $(fixed "$RUN_US" 1000000 2) s, peak RSS $(fixed "$RUN_RSS_KB" 1024 1) MiB"
        finished "$rdir"
    done
    report "rss_extra_upload_$(size_name "$BIG_BYTES")" $((big_kb - base_kb)) 1024 1 MiB 32 1 lower
}

# utime + stime of PID, in clock ticks (fields 14 and 15 of /proc/PID/stat,
# counted after the parenthesised command name, which may hold spaces).
cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }
    local fields
    read -ra fields <<<"$stat"
    # fields[0] is field 3 (state), so field N is fields[N-3].
    echo $((fields[11] + fields[12]))
}

# SPEC §12 row 6: CPU time of a `run` daemon with delivered files and nothing
# to do, over IDLE_SECONDS, scaled to a minute.
figure_idle() {
    local dir=$WORK/idle
    mkdir -p "$dir/drop" "$dir/state"
    start_mock "$dir"
    write_config "$dir/config.toml" "$dir/drop" "$dir/state" 2s directory
    make_tree "$dir/drop" 100 10
    start_daemon "$dir/config.toml" "$dir/daemon.log"
    wait_until "$STEP_TIMEOUT_S" "the idle tree to be delivered" \
        at_least '"message":"delivered"' "$dir/daemon.log" 10
    # Quiet: no request at the emulator (task polls included) for 2 s.
    local lines quiet_since
    lines=$(count ' request ' "$MOCK_LOG")
    now_us
    quiet_since=$NOW
    while ((NOW - quiet_since < 2000000)); do
        sleep 0.1
        now_us
        local current
        current=$(count ' request ' "$MOCK_LOG")
        if ((current != lines)); then
            lines=$current
            quiet_since=$NOW
        fi
    done
    local hz
    hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
    local t0 c0 t1 c1
    c0=$(cpu_ticks "$DAEMON_PID")
    now_us
    t0=$NOW
    log "idle: watching the daemon's CPU time for ${IDLE_SECONDS}s"
    sleep "$IDLE_SECONDS"
    c1=$(cpu_ticks "$DAEMON_PID")
    now_us
    t1=$NOW
    alive "$DAEMON_PID" "the daemon"
    local after
    after=$(count ' request ' "$MOCK_LOG")
    stop "$DAEMON_PID"
    stop_mock
    local ticks=$((c1 - c0))
    info "idle: $ticks ticks of ${hz} Hz over $(fixed $((t1 - t0)) 1000000 1) s; $((after - lines)) requests meanwhile"
    # CPU seconds per minute = ticks/hz * 60 s / window.
    report idle_cpu_per_minute $((ticks * 60 * 1000000)) $((hz * (t1 - t0))) 3 s/min 1 2 lower
    finished "$dir"
}

# --- main ------------------------------------------------------------------

command -v openssl >/dev/null || die "openssl is required"
((BASH_VERSINFO[0] >= 5)) || die "bash 5 or newer is required (EPOCHREALTIME)"

cd "$ROOT"
if ((BUILD)); then
    log "building release binaries"
    cargo build --release -p mixpeek-ingest -p mixpeek-mock --bins >&2
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
TARGET_DIR=${TARGET_DIR:-$ROOT/target}
for bin in mixpeek-ingest mixpeek-mock; do
    [[ -x $TARGET_DIR/release/$bin ]] || die "$TARGET_DIR/release/$bin is missing; run without --no-build"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mixpeek-bench.XXXXXX")
# Private copies: a rebuild in the tree during the run changes nothing here.
BIN=$WORK/bin
mkdir -p "$BIN"
cp "$TARGET_DIR/release/mixpeek-ingest" "$TARGET_DIR/release/mixpeek-mock" "$BIN/"

# Room for the largest trees at once: the SHA-256 file, the tracked tree
# (a block and an inode per file) and the large upload's first MiB (the rest
# is sparse).
need_kb=$(((SHA_BYTES + TRACKED_FILES * 4096) / 1024 + 1024 * 1024))
need_inodes=$((TRACKED_FILES + TRACKED_FILES / FILES_PER_DIR + 1000))
read -r avail_kb avail_inodes < <(df --output=avail,iavail -k "$WORK" | tail -n 1)
if ((avail_kb < need_kb)); then
    die "$WORK has $((avail_kb / 1024)) MiB free, the run needs about $((need_kb / 1024)) MiB (set TMPDIR)"
fi
if [[ $avail_inodes =~ ^[0-9]+$ ]] && ((avail_inodes > 0 && avail_inodes < need_inodes)); then
    die "$WORK has $avail_inodes free inodes, the run needs about $need_inodes (set TMPDIR)"
fi

machine
if [[ $MODE == quick ]]; then
    info "quick mode: reduced sizes, figures are not comparable with the targets"
fi
info "sizes: sha256 $(size_name "$SHA_BYTES"); e2e $((E2E_DIRS * E2E_PER_DIR)) files in $E2E_DIRS dirs; latency $LAT_DROPS drops; restart $RESTART_FILES files; tracked $TRACKED_FILES files; upload $(size_name "$BIG_BYTES"); idle ${IDLE_SECONDS}s"

for figure in ${ALL_FIGURES//,/ }; do
    if [[ ",$ONLY," == *",$figure,"* ]]; then
        "figure_$figure"
    fi
done
log "done"
