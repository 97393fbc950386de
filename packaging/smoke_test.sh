#!/usr/bin/env bash
# Smoke-test the built bundle: packaging/smoke_test.sh [path/to/CaptionDesk executable]
#
# Runs, from the bundle only (no source tree on sys.path, user folders redirected to a
# temp dir so nothing of yours is touched):
#   1. --version           prints "CaptionDesk <version from pyproject.toml>"
#   2. self-check          exits 0 (versions, device, migrations, temp library, Qt plugins)
#   3. CLI round trip      add --no-scan + status on a temporary library
#   4. GUI                 self-check --smoke-test: opens the main window offscreen on a
#                          temp library and closes it (CAPTIONDESK_SMOKE_EXIT_MS, default 1500)
# Prints timings; exits non-zero at the first failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
APP="${1:-$ROOT/dist/CaptionDesk/CaptionDesk}"
[[ -x "$APP" ]] || { echo "no executable at $APP (run packaging/build.sh first)" >&2; exit 2; }
APP="$(cd "$(dirname "$APP")" && pwd)/$(basename "$APP")"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
export HOME="$TMP/home" XDG_CONFIG_HOME="$TMP/config" XDG_DATA_HOME="$TMP/data" XDG_CACHE_HOME="$TMP/cache"
mkdir -p "$HOME"
export HF_HOME="${SMOKE_HF_HOME:-$TMP/hf}"  # SMOKE_HF_HOME=~/.cache/huggingface to see your model cache
export HF_HUB_OFFLINE=1 QT_QPA_PLATFORM=offscreen
export CAPTIONDESK_SMOKE_EXIT_MS="${CAPTIONDESK_SMOKE_EXIT_MS:-1500}"
cd "$TMP"  # nothing from the source tree can be imported by accident

step() { printf '\n== %s\n' "$*"; }
timed() {  # timed LABEL CMD...: run, echo output, record wall time
    local label="$1"; shift
    local t0 rc=0
    t0=$EPOCHREALTIME
    "$@" || rc=$?
    awk -v l="$label" -v r="$rc" -v a="$t0" -v b="$EPOCHREALTIME" \
        'BEGIN { printf "-- %s: exit %s, %.2f s\n", l, r, b - a }' >&2
    return $rc
}

expected="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -1)"

step "--version"
out="$(timed version "$APP" --version)"
echo "$out"
grep -qx "CaptionDesk $expected" <<<"$out" || { echo "FAIL: expected 'CaptionDesk $expected'" >&2; exit 1; }

step "self-check"
timed self-check "$APP" self-check

step "CLI round trip"
mkdir -p "$TMP/photos"
timed add "$APP" --library "$TMP/lib.db" add --no-scan "$TMP/photos"
timed status "$APP" --library "$TMP/lib.db" status

step "GUI (offscreen)"
timed gui "$APP" self-check --smoke-test

printf '\nsmoke test passed: %s\n' "$APP"
