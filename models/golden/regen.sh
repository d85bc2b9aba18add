#!/usr/bin/env bash
# Regenerates the golden outputs in testdata/ from the original TensorFlow.js
# models, in one go: Go writes the inputs, npm installs the pinned tfjs (no
# install scripts run), and Node runs every model on the pure-JS CPU backend.
#
#   models/golden/regen.sh            (from anywhere; about 30 s on 2 cores)
#
# Needs Go, Node >= 20 with npm, the model cache ($FACEGATE_CACHE, default
# $HOME/.cache/facegate, filled by `facegate models fetch`) and the shared
# datasets beside the repository (or $FACEGATE_DATASETS).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$root" && go run ./models/golden/cmd/prepare -out "$work/in")
(cd "$here" && npm ci --ignore-scripts --no-audit --no-fund)
(cd "$here" && node golden.mjs "$work/in" "$here/testdata")
