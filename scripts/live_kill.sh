#!/usr/bin/env bash
# Random-kill test of the live index (issue 12): a writer process applying
# adds (with metadata), deletes and updates is SIGKILLed at random moments
# (KILLS times, default 60); after each kill the index must reopen exactly at
# the last acknowledged commit or with the interrupted mutation committed
# (ids, generation, a sample's stored vectors and exact scores, metadata and
# filters), and the next writer must clean up. The suite runs 6 kills.
# Usage: scripts/live_kill.sh [KILLS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
COLWGPU_KILLS="${1:-60}" COLWGPU_KILL_SEED="${2:-2026}" \
  cargo test --release --locked --test live_kill random_kills -- --nocapture
