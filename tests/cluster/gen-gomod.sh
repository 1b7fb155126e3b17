#!/usr/bin/env bash
# Writes the replace block of go.mod for one Kubernetes release. k8s.io/kubernetes requires
# its staging modules (k8s.io/api, k8s.io/kubelet, ...) at v0.0.0 and replaces them with
# ./staging paths; replace directives of a dependency are ignored, so this module needs its
# own `k8s.io/X => k8s.io/X v0.N.M` for each. The list comes from that release's go.mod in
# the module cache (`go mod download` fetches it; nothing else).
# Usage: tests/cluster/gen-gomod.sh v1.N.M   (then `go mod tidy` in tests/cluster)
set -euo pipefail
cd "$(dirname "$0")"
version=${1:?usage: gen-gomod.sh v1.N.M}
case "$version" in v1.*.*) ;; *) echo "gen-gomod: $version is not v1.N.M" >&2; exit 2 ;; esac
staging="v0.${version#v1.}"
mod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[ -f "$mod" ] || { echo "gen-gomod: no go.mod for k8s.io/kubernetes@$version" >&2; exit 1; }
block=$(awk -v v="$staging" '$2 == "=>" && $3 ~ /^\.\/staging\// { printf "\t%s => %s %s\n", $1, $1, v }' "$mod")
[ -n "$block" ] || { echo "gen-gomod: no staging replaces in $mod" >&2; exit 1; }
# Replace the generated block (between the markers) and the pinned release, keep the rest.
awk -v block="$block" -v version="$version" '
  /^\/\/ BEGIN staging replaces/ { print; print "replace ("; print block; print ")"; skip = 1; next }
  /^\/\/ END staging replaces/ { skip = 0 }
  skip { next }
  $1 == "k8s.io/kubernetes" && $2 ~ /^v1\./ { sub($2, version) }
  { print }
' go.mod > go.mod.new
mv go.mod.new go.mod
echo "gen-gomod: $(grep -c '=> k8s.io/' go.mod) staging replaces for $version" >&2
