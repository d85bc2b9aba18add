#!/usr/bin/env bash
# Builds a real kube-apiserver and etcd for controller-runtime's envtest from
# the Go module proxy alone (setup-envtest downloads release archives from the
# web, which CI and these machines cannot reach), caches them in a folder keyed
# by the two versions, and prints that folder for KUBEBUILDER_ASSETS.
#
#   export KUBEBUILDER_ASSETS="$(operator/hack/envtest-assets.sh)"
#
# Cold: ~15 min on 2 cores (kube-apiserver ~13 min, etcd ~2.5 min), 2.4 GB RAM
# peak. Warm (both binaries present): returns at once.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.7.3}"
CACHE_ROOT="${FACEGATE_ENVTEST_CACHE:-$HOME/.cache/facegate/envtest}"
DEST="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"

log() { echo "envtest-assets: $*" >&2; }

if [[ -x "$DEST/kube-apiserver" && -x "$DEST/etcd" ]]; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$DEST"
WORK="$DEST/.build"
mkdir -p "$WORK"
# The throwaway modules live under the cache, outside any project go.mod, and
# must not inherit a workspace or the project's toolchain pins.
export GOWORK=off GOFLAGS=-mod=mod

# The k8s.io staging modules are required at v0.0.0 by kubernetes' own go.mod
# and replaced with local paths there; a consumer must replace each with the
# matching published v0.X.Y tag.
staging_version="v0.${K8S_VERSION#1.}"

build_apiserver() {
  local dir="$WORK/kube-apiserver"
  mkdir -p "$dir"
  log "resolving k8s.io/kubernetes@v$K8S_VERSION"
  local gomod
  gomod="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
  if [[ -z "$gomod" || ! -f "$gomod" ]]; then
    log "could not locate kubernetes' go.mod in the module cache"
    exit 1
  fi
  local staged
  staged="$(awk '/^require[[:space:]]*\(/{r=1;next} r&&/^\)/{r=0} r&&$1 ~ /^k8s\.io\// && $2=="v0.0.0"{print $1}' "$gomod" \
    | grep -v -e '^k8s.io/sample-controller$' -e '^k8s.io/sample-cli-plugin$' | sort -u)"
  local n
  n="$(printf '%s\n' "$staged" | grep -c .)"
  log "$n staging modules to replace with $staging_version"
  {
    echo "module envtestassets/kubeapiserver"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    echo "replace ("
    printf '%s\n' "$staged" | while read -r m; do echo "	$m => $m $staging_version"; done
    echo ")"
  } > "$dir/go.mod"
  cat > "$dir/tools.go" <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
  (cd "$dir" && go mod tidy)
  log "building kube-apiserver (slow: ~13 min cold on 2 cores)"
  local start=$SECONDS
  # `go build -o`, not `go tool`: go tool keeps its own cache of linked tools
  # and recompiled everything on every cold cache here.
  (cd "$dir" && go build -trimpath \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X k8s.io/component-base/version.gitTreeState=clean" \
    -o "$DEST/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
  mv "$DEST/kube-apiserver.tmp" "$DEST/kube-apiserver"
  log "kube-apiserver built in $((SECONDS - start)) s"
}

build_etcd() {
  local dir="$WORK/etcd"
  mkdir -p "$dir"
  log "resolving go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
  cat > "$dir/go.mod" <<MOD
module envtestassets/etcd

go 1.26

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
MOD
  cat > "$dir/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  (cd "$dir" && go mod tidy)
  log "building etcd (~2.5 min cold)"
  local start=$SECONDS
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$DEST/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$DEST/etcd.tmp" "$DEST/etcd"
  log "etcd built in $((SECONDS - start)) s"
}

[[ -x "$DEST/etcd" ]] || build_etcd
[[ -x "$DEST/kube-apiserver" ]] || build_apiserver

"$DEST/kube-apiserver" --version >&2
"$DEST/etcd" --version >&2
echo "$DEST"
