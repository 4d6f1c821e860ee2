#!/usr/bin/env bash
# The whole test suite: system packages first (if missing), then every crate's unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh
# The CRI suite runs every case against our agent too; a missing `agent --cri-only` is a failure, not a skip.
export BASALT_CRI_REQUIRED=1
exec cargo test --workspace --all-targets --locked "$@"
