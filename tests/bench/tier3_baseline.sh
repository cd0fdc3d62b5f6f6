#!/usr/bin/env bash
# Baseline for tests/bench/bench_upgrade.py: the MIGRATION_QUICKSTART way of upgrading a fleet —
# a loop over the hosts, host by host, each one piped the per-host script over SSH:
#
#     tests/bench/tier3_baseline.sh -F SSH_CONFIG -u BASE_URL -s SHA256 [-t TRIPLE] HOST...
#
#   -F  ssh -F config that makes plain `ssh HOST` work (the test fleet's $FLEET_DIR/ssh_config)
#   -u  release mirror base URL (assets at <url>/v0.7.0/ai-memory-<triple>.tar.gz)
#   -s  sha256 pin of the asset (pins.json "0.7.0" -> triple)
#   -t  target triple (default: each host's `uname -m`-unknown-linux-gnu)
#
# Prints "HOST <seconds>s" per host and stops at the first failing host (set -e), like an operator's
# loop would. The per-host steps are in tier3_host.sh (next to this file); see its header for what
# was corrected against the facts file.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CFG= BASE_URL= SHA= TARGET=
while getopts F:u:s:t: opt; do
  case $opt in
    F) CFG=$OPTARG ;;
    u) BASE_URL=$OPTARG ;;
    s) SHA=$OPTARG ;;
    t) TARGET=$OPTARG ;;
    *) echo "usage: $0 -F SSH_CONFIG -u BASE_URL -s SHA256 [-t TRIPLE] HOST..." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ -n "$CFG" ] && [ -n "$BASE_URL" ] && [ -n "$SHA" ] && [ $# -gt 0 ] || {
  echo "usage: $0 -F SSH_CONFIG -u BASE_URL -s SHA256 [-t TRIPLE] HOST..." >&2; exit 2; }
[ -r "$CFG" ] || { echo "$0: ssh config $CFG is not readable (start the fleet first)" >&2; exit 2; }

FLEET="$*"
for H in $FLEET; do
  t0=$(date +%s.%N)
  ssh -F "$CFG" "$H" "H=$H BASE_URL=$BASE_URL EXPECTED_SHA256=$SHA ${TARGET:+TARGET=$TARGET} bash -s" \
    < "$HERE/tier3_host.sh"
  t1=$(date +%s.%N)
  awk -v h="$H" -v a="$t0" -v b="$t1" 'BEGIN { printf "%s %.2fs\n", h, b - a }'
done
