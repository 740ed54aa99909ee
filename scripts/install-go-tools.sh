#!/usr/bin/env bash
# Builds the Go programs berth's compatibility tests (tests/e2e/compat*.rs,
# conformance.rs) drive, from the Go module proxy, into a per-machine cache so
# they are built once and reused. Nothing here is needed to build or run berth
# itself.
#
#   registry     distribution 3.x: the newest registry line; verifies tokens
#                differently from 2.8 (thumbprint kids, JWKS files, aud lists)
#   crane        go-containerregistry's client: login/push/pull against berth
#   oras         ORAS client: login/push/pull of artifacts against berth
#   helm         helm 3: registry login, push and pull of OCI charts
#   regctl       regclient's client: login/push/pull against berth
#   cosign       sigstore's signer: signs and verifies images in the registry
#                (the slowest build, about 4 minutes)
#   conformance  the OCI distribution-spec conformance suite, run against a
#                registry with berth as its realm (the module is not tagged;
#                pinned to a pseudo-version)
#
# The tests look for the binaries in $BERTH_GO_TOOLS (default below), then PATH.
# A binary is rebuilt only when missing or built from another module version
# (checked with `go version -m`), so a fresh machine builds everything and a
# warm one does nothing. Prints how long each build took.
set -euo pipefail

dest="${BERTH_GO_TOOLS:-${HOME:-/root}/.cache/berth-test-tools/bin}"

# name | package to install | module whose version must match | version
tools=(
  "registry|github.com/distribution/distribution/v3/cmd/registry|github.com/distribution/distribution/v3|v3.1.2"
  "crane|github.com/google/go-containerregistry/cmd/crane|github.com/google/go-containerregistry|v0.22.1"
  "oras|oras.land/oras/cmd/oras|oras.land/oras|v1.3.6"
  "helm|helm.sh/helm/v3/cmd/helm|helm.sh/helm/v3|v3.22.0"
  "regctl|github.com/regclient/regclient/cmd/regctl|github.com/regclient/regclient|v0.11.7"
  "cosign|github.com/sigstore/cosign/v2/cmd/cosign|github.com/sigstore/cosign/v2|v2.6.5"
  "conformance|github.com/opencontainers/distribution-spec/conformance|github.com/opencontainers/distribution-spec/conformance|v0.0.0-20260831232431-97274622c111"
)
# zot (zotregistry.dev/zot) is not built: its module is not served by the Go
# module proxy this project can reach, so it cannot be installed the same way.

if ! command -v go >/dev/null; then
  echo "install-go-tools: go not found; the Go-built registries and clients cannot be installed" >&2
  exit 1
fi
mkdir -p "$dest"

built_version() { # prints the main module's version of binary $1, if any
  [ -x "$1" ] || return 0
  go version -m "$1" 2>/dev/null | awk '$1 == "mod" { print $2 " " $3; exit }'
}

status=0
for entry in "${tools[@]}"; do
  IFS='|' read -r name pkg module version <<<"$entry"
  have="$(built_version "$dest/$name")"
  if [ "$have" = "$module $version" ]; then
    echo "install-go-tools: $name $version present in $dest"
    continue
  fi
  echo "install-go-tools: building $name ($pkg@$version) into $dest${have:+ (found: $have)}"
  t0=$SECONDS
  # CGO off: static binaries, no C toolchain needed; -trimpath keeps paths out.
  if GOBIN="$dest" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
    go install -trimpath -ldflags='-s -w' "$pkg@$version"; then
    echo "install-go-tools: built $name in $((SECONDS - t0))s"
  else
    echo "install-go-tools: FAILED to build $name after $((SECONDS - t0))s" >&2
    status=1
  fi
done
exit "$status"
