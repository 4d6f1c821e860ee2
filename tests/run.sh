#!/usr/bin/env bash
# The whole test suite: system packages first (if missing), then every crate's unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh
exec cargo test --workspace --all-targets --locked "$@"
