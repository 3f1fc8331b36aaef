#!/usr/bin/env bash
# Fuzz the parsers that read untrusted bytes (fuzz/, one AFL++ target each) on stable Rust.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    default: 60 s, every target
#
# Installs what is missing: Debian's afl++ (apt-get), and cargo-afl (crates.io, pinned to the
# afl crate's version) into $CA_FUZZ_TOOLS (default ~/.cache/ca-fuzz); installing cargo-afl
# also builds the AFL++ it ships (source inside the crate: no network beyond crates.io) and
# its runtime. Builds the targets with `cargo afl build --release` into fuzz/target/afl
# (never the workspace's target dir), runs each for SECONDS from its seeds in
# fuzz/corpus/<target>, and prints executions, corpus size, crashes and hangs per target.
# Exits 1 when any target crashed; the crashing inputs are copied to fuzz/crashes/<target>/.
# AFL's state is left in fuzz/out/<target>/ (each run starts afresh).
#
#   CA_FUZZ_TOOLS   where cargo-afl and its AFL++ live (kept between runs)
#   CA_FUZZ_TARGET  the instrumented build's target dir (default fuzz/target/afl); point it
#                   outside the checkout to reuse the build across fresh clones (CI)
#   FUZZ_JOBS       cargo build jobs (default: cargo's)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
all_targets=(csr jws ocsp_request event journal acme_json)
secs=${1:-60}
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "unknown target $t; known: ${all_targets[*]}" >&2; exit 2; }
done
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "SECONDS_PER_TARGET must be a number, not $secs" >&2; exit 2; }

CARGO_AFL_VERSION=0.18.2 # = the afl crate in fuzz/Cargo.toml
tools=${CA_FUZZ_TOOLS:-$HOME/.cache/ca-fuzz}
# cargo-afl keeps the AFL++ it builds (afl-fuzz and the runtime object) under
# $XDG_DATA_HOME/afl.rs/rustc-<version>-<commit>/afl.rs-<version>/.
export XDG_DATA_HOME=$tools/share
export PATH=$tools/bin:$PATH

# Debian's afl++: the tool set the project relies on being installable (afl-tmin,
# afl-showmap, afl-cmin for triage). The fuzzing itself runs cargo-afl's afl-fuzz, which is
# the same AFL++ version as the runtime linked into the targets (see fuzz/README.md).
if ! command -v afl-fuzz >/dev/null 2>&1; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "installing: afl++" >&2
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends afl++
fi

rustc_dir=$(rustc -vV | awk '/^release:/ {r=$2} /^commit-hash:/ {c=substr($2,1,7)} END {print "rustc-" r "-" c}')
afl_home=$XDG_DATA_HOME/afl.rs/$rustc_dir/afl.rs-$CARGO_AFL_VERSION
if ! cargo-afl afl --version 2>/dev/null | grep -q "cargo-afl $CARGO_AFL_VERSION"; then
  echo "installing: cargo-afl $CARGO_AFL_VERSION into $tools" >&2
  cargo install cargo-afl --version "$CARGO_AFL_VERSION" --locked --root "$tools"
fi
if [ ! -e "$afl_home/afl-llvm/afl-compiler-rt.o" ] || [ ! -x "$afl_home/afl/bin/afl-fuzz" ]; then
  # A new rustc (or an install whose build step failed): build AFL++ and its runtime for it.
  cargo afl config --build --force
fi

afl_target=${CA_FUZZ_TARGET:-$root/fuzz/target/afl}
build_start=$(date +%s)
(
  cd fuzz
  bins=()
  for t in "${targets[@]}"; do bins+=(--bin "$t"); done
  CARGO_TARGET_DIR="$afl_target" cargo afl build --release ${FUZZ_JOBS:+-j "$FUZZ_JOBS"} "${bins[@]}"
)
build_secs=$(($(date +%s) - build_start))

# A container as root: no CPU frequency governor to check, core dumps usually piped to a
# handler we cannot change, other processes on the cores (so no CPU binding).
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
export AFL_QUIET=1

declare -A dict=([jws]=fuzz/dict/jws.dict [acme_json]=fuzz/dict/acme_json.dict)
status=0
summary=()
run_start=$(date +%s)
for t in "${targets[@]}"; do
  out=fuzz/out/$t
  rm -rf "$out" "fuzz/crashes/$t"
  mkdir -p "$out"
  args=(-V "$secs" -t 1000 -i "fuzz/corpus/$t" -o "$out")
  [ -n "${dict[$t]:-}" ] && args+=(-x "${dict[$t]}")
  echo "== $t: ${secs}s" >&2
  # afl-fuzz exits 0 after -V seconds; a failure to start is an error of this script.
  if ! cargo afl fuzz "${args[@]}" -- "$afl_target/release/$t" >"$out/afl-fuzz.log" 2>&1; then
    tail -30 "$out/afl-fuzz.log" >&2
    echo "afl-fuzz failed to run $t (log: $out/afl-fuzz.log)" >&2
    exit 2
  fi
  stats=$out/default/fuzzer_stats
  stat() { awk -F' *: *' -v k="$1" '$1 == k {print $2}' "$stats"; }
  execs=$(stat execs_done)
  corpus=$(stat corpus_count)
  crashes=$(stat saved_crashes)
  hangs=$(stat saved_hangs)
  speed=$(stat execs_per_sec)
  summary+=("$(printf '%-13s %10s %9s %7s %7s %7s' "$t" "$execs" "$speed" "$corpus" "$crashes" "$hangs")")
  if [ "${crashes:-0}" != 0 ]; then
    status=1
    mkdir -p "fuzz/crashes/$t"
    cp "$out"/default/crashes/id:* "fuzz/crashes/$t/"
    echo "$t: $crashes crash(es); inputs in fuzz/crashes/$t/ (replay: $afl_target/release/$t < FILE)" >&2
  fi
done
run_secs=$(($(date +%s) - run_start))

printf '%-13s %10s %9s %7s %7s %7s\n' target execs execs/s corpus crashes hangs
printf '%s\n' "${summary[@]}"
echo "build ${build_secs}s, fuzzing ${run_secs}s"
exit "$status"
