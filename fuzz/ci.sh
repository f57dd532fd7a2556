#!/usr/bin/env bash
# Fuzz every cairn target for a bounded time; exits non-zero on the first crash, timeout or OOM.
#
#   FUZZ_SECONDS=60 fuzz/ci.sh            # all targets, 60 s each (default 30)
#   fuzz/ci.sh canonical_json id_json     # only these targets
#
# Needs a nightly toolchain (rustup toolchain install nightly) and cargo-fuzz (installed here if
# missing). Each target starts from its tracked seeds (fuzz/seeds/<target>/) plus any minimized
# reproducers (fuzz/regressions/<target>/); the corpus it grows goes to fuzz/corpus/<target>/
# (gitignored) and crashes to fuzz/artifacts/<target>/ (gitignored).
set -euo pipefail

cd "$(dirname "$0")"

SECONDS_PER_TARGET="${FUZZ_SECONDS:-30}"
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
ALL_TARGETS=(id_json model_json canonical_json canonical_cbor index_record resource_record env_file file_uri remote_manifest model_ops)
if [ "$#" -gt 0 ]; then
  TARGETS=("$@")
else
  TARGETS=("${ALL_TARGETS[@]}")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
  echo "error: the $TOOLCHAIN toolchain is missing (rustup toolchain install $TOOLCHAIN)" >&2
  exit 2
fi

echo "== building fuzz targets"
cargo "+$TOOLCHAIN" fuzz build

failed=()
for t in "${TARGETS[@]}"; do
  echo "== fuzzing $t for ${SECONDS_PER_TARGET}s"
  mkdir -p "corpus/$t"
  inputs=("corpus/$t" "seeds/$t")
  if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t")" ]; then
    inputs+=("regressions/$t")
  fi
  args=(-max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1)
  case "$t" in
    *_json) args+=(-dict=dict/json.dict) ;;
  esac
  # New inputs are written to the first corpus directory only (the scratch one).
  if ! cargo "+$TOOLCHAIN" fuzz run "$t" "${inputs[@]}" -- "${args[@]}"; then
    echo "!! $t failed: see fuzz/artifacts/$t/" >&2
    failed+=("$t")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: all ${#TARGETS[@]} target(s) ran ${SECONDS_PER_TARGET}s without a crash"
