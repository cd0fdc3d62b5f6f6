#!/usr/bin/env bash
# Per-host half of tests/bench/tier3_baseline.sh: the MIGRATION_QUICKSTART way of upgrading ONE host
# from ai-memory v0.6.x to v0.7.0, as an operator pipes it over SSH:
#
#     ssh -F CFG HOST "H=HOST BASE_URL=... EXPECTED_SHA256=... bash -s" < tier3_host.sh
#
# It is the guide's Tier 3 snippet plus the Tier 2 steps that snippet leaves out (stop, DB backup,
# staged env, start, verify, identity), in the guide's order of operations and with the guide's
# `|| true` habits, corrected ONLY where the facts file (§8.2) says the guide's command cannot work:
#   * no SHA256SUMS file upstream: the pin comes from the inventory (EXPECTED_SHA256), sha256sum -c;
#   * assets are named by target triple (ai-memory-<triple>.tar.gz), served here by the fleet mirror;
#   * `jq -e '... | empty'` / `.ok` gates never pass: use doctor's exit code and `chain_holds`;
#   * `governance migrate-to-permissions --apply` does not exist: `--config-out <config>` (which
#     APPENDS on every run — the guide's way, kept);
#   * `systemctl --user` does not exist on these hosts: the init script (SIGINT drain) stops/starts;
#   * the v0.7.0 secure-posture flip (Tier 3 step 6 / Tier 2 step 10) comes after fleet enrolment,
#     so the staged permissive lines of Tier 2 step 5 are what goes into the env file here.
# No scratch in /tmp (project rule): the work dir is a mktemp dir next to the data.
set -euo pipefail

: "${H:?H (the name of this host) is required}"
: "${BASE_URL:?BASE_URL (release mirror, e.g. http://10.77.0.1:18080) is required}"
: "${EXPECTED_SHA256:?EXPECTED_SHA256 (pin of the asset from your inventory) is required}"
VER=${VER:-v0.7.0}
TARGET=${TARGET:-$(uname -m)-unknown-linux-gnu}   # Rust target triple
BIN=${BIN:-/usr/local/bin/ai-memory}
SVC_USER=${SVC_USER:-aimem}
SVC_HOME=${SVC_HOME:-/var/lib/ai-memory}
DB=${DB:-$SVC_HOME/ai-memory.db}
CONFIG=${CONFIG:-$SVC_HOME/.config/ai-memory/config.toml}
ENV_FILE=${ENV_FILE:-/etc/ai-memory/env}
INIT=${INIT:-/etc/init.d/ai-memory}
PORT=${PORT:-9077}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-30}

TMP=$(mktemp -d "$SVC_HOME/.ai-memory-upgrade-XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# Read one key of a JSON document on stdin (jq if the host has it, else python3).
jget() {
  if command -v jq >/dev/null 2>&1; then
    jq -r "$1"
  else
    python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].lstrip(".").split("."): v=v.get(k) if isinstance(v, dict) else None
print(json.dumps(v) if isinstance(v, bool) or v is None else v)' "$1"
  fi
}

# Run ai-memory as the service user with its HOME and the daemon's env file (AI_MEMORY_DB, posture).
as_svc() {
  ( set -a; [ -r "$ENV_FILE" ] && . "$ENV_FILE"; set +a
    export HOME="$SVC_HOME"
    cd "$SVC_HOME"
    su -s /bin/sh "$SVC_USER" -c "$*" )
}

# --- Tier 2 step 1: drain (SIGINT through the service manager) + back up the DB
"$INIT" stop
for f in "$DB" "$DB-wal"; do
  if [ -e "$f" ]; then cp "$f" "$f.v064.bak"; fi
done

# --- Tier 3 step 1: install v0.7.0 (only fetches if the version differs), pinned sha256
if ! "$BIN" --version 2>/dev/null | grep -q "${VER#v}"; then
  curl -fsSL "${BASE_URL}/${VER}/ai-memory-${TARGET}.tar.gz" -o "$TMP/m.tgz"
  echo "${EXPECTED_SHA256}  $TMP/m.tgz" | sha256sum -c -
  tar -xzf "$TMP/m.tgz" -C "$TMP"
  install -m 0755 "$TMP/ai-memory" "$BIN"
fi

# --- Tier 3 step 2: config migration, as the service user (no-op on schema_version >= 2)
as_svc "$BIN config migrate" || true

# --- Tier 3 step 4 / Tier 2 step 6: governance -> permissions, merged in place (appends)
as_svc "$BIN governance migrate-to-permissions --config-out $CONFIG" || true

# --- Tier 2 step 5: staged (permissive) posture, appended once
grep -q '^AI_MEMORY_PERMISSIONS_MODE=' "$ENV_FILE" || cat >> "$ENV_FILE" <<'EOF'
# v0.6.x → v0.7.0 staged rollout — flip these back to '1' / '0'
# after fleet enrolment completes (Step 10 below).
AI_MEMORY_FED_REQUIRE_SIG=0
AI_MEMORY_FED_REQUIRE_NONCE=0
AI_MEMORY_PERMISSIONS_MODE=advisory
AI_MEMORY_GOVERNANCE_FAIL_OPEN_ON_ERROR=1
AI_MEMORY_SSRF_GUARD_ALLOW_DNS_FAIL=1
EOF

# --- Tier 2 step 7: start (the DB walks v20 -> v54 on first open), wait for health
"$INIT" start
ok=
for _ in $(seq 1 "$HEALTH_TIMEOUT"); do
  if v=$(curl -fsS "http://127.0.0.1:${PORT}/api/v1/health" 2>/dev/null | jget .version) \
     && [ "$v" = "${VER#v}" ]; then ok=1; break; fi
  sleep 1
done
[ -n "$ok" ] || { echo "$H: /api/v1/health did not report ${VER#v} within ${HEALTH_TIMEOUT}s" >&2; exit 1; }

# --- Tier 3 step 5 / Tier 2 step 8: health gate — doctor's exit code (2 = critical), chain_holds
if ! as_svc "$BIN doctor --json" > "$TMP/doctor.json"; then
  echo "$H: doctor reports CRIT" >&2; as_svc "$BIN doctor" >&2 || true; exit 1
fi
holds=$(as_svc "$BIN verify-signed-events-chain --format json" | jget .chain_holds) || true
[ "$holds" = true ] || { echo "$H: signed-events chain does not hold" >&2; exit 1; }

# --- Tier 2 step 9: this host's federation keypair (refused without --force when it exists)
as_svc "$BIN identity generate --agent-id ai:daemon@$H" || true

echo "$H: upgraded to $("$BIN" --version 2>/dev/null)"
