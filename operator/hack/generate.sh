#!/usr/bin/env bash
# Regenerates the operator's deep-copy code, CRDs and RBAC role with
# controller-gen (pinned in go.mod's tool block) and copies the CRDs into the
# Helm chart. Run from anywhere; TestGeneratedFilesAreCurrent fails when the
# committed files differ from what this produces.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
out="${1:-$root}"

go tool controller-gen object paths=./operator/api/...
go tool controller-gen \
  crd:allowDangerousTypes=true \
  rbac:roleName=facegate-operator \
  paths=./operator/api/... paths=./operator/internal/controller/... \
  output:crd:artifacts:config="$out/operator/config/crd/bases" \
  output:rbac:artifacts:config="$out/operator/config/rbac"
mkdir -p "$out/charts/facegate/crds"
rm -f "$out"/charts/facegate/crds/*.yaml
cp "$out"/operator/config/crd/bases/*.yaml "$out/charts/facegate/crds/"
echo "generated into $out"
