#!/usr/bin/env bash
# Installs what berth's end-to-end tests (tests/e2e) drive, on Debian 12.
# Idempotent: does nothing (and touches no package index) when all is present.
set -euo pipefail

# dockerd runs with --bridge=none --iptables=false and vfs storage, podman as
# root with vfs, so no uidmap/fuse-overlayfs/slirp4netns; iptables,
# runc and containers-common (policy.json) come as dependencies.
packages=(docker.io docker-registry podman skopeo containernetworking-plugins postgresql faketime buildah containerd slapd ldap-utils)
declare -A why=(
  [buildah]="buildah login/push/pull end-to-end tests (compatibility matrix)"
  [containerd]="containerd + ctr: the tests start their own containerd and pull/push with ctr (compatibility matrix)"
  [containernetworking-plugins]="podman 4.3 (CNI backend) refuses every command, even pull/push, when no CNI plugin dir exists"
  [faketime]="libfaketime: berth doctor's clock-skew test runs berth with a clock 10 minutes off"
  [docker.io]="dockerd + docker client: docker login/push/pull end-to-end tests"
  [docker-registry]="distribution 2.8 registry, configured with auth.token pointing at berth"
  [podman]="podman login/push/pull end-to-end tests"
  [postgresql]="PostgreSQL server: the store's test suite and the two-replica tests run against it"
  [slapd]="OpenLDAP server: the [[ldap]] tests start their own slapd (own config dir and port) with a seeded tree"
  [ldap-utils]="ldapadd/ldapmodify/ldapsearch: the [[ldap]] tests seed and change the test directory"
  [skopeo]="skopeo login/copy tests; converts the test image for docker load"
)

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install-test-deps: all present (${packages[*]})"
else
  for p in "${missing[@]}"; do
    echo "install-test-deps: installing $p - ${why[$p]}"
  done
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then
      sudo=(sudo)
    else
      echo "install-test-deps: missing ${missing[*]} and not root (no sudo)" >&2
      exit 1
    fi
  fi
  # The tests start their own dockerd and registry on private sockets/ports;
  # keep apt from starting the system services while installing.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo[@]}" chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  cleanup() {
    if [ "$created_policy" = 1 ]; then "${sudo[@]}" rm -f /usr/sbin/policy-rc.d; fi
  }
  trap cleanup EXIT
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update
  "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi

# The exact binaries the tests call (docker: Debian's client, not another one
# that may sit earlier in PATH).
status=0
for bin in /usr/bin/docker /usr/sbin/dockerd /usr/bin/docker-registry /usr/bin/podman /usr/bin/skopeo \
  /usr/bin/buildah /usr/bin/containerd /usr/bin/ctr; do
  if [ ! -x "$bin" ]; then
    echo "install-test-deps: $bin missing after install" >&2
    status=1
  fi
done
if [ ! -e /etc/containers/policy.json ]; then
  echo "install-test-deps: /etc/containers/policy.json missing (containers-common)" >&2
  status=1
fi
# distribution 3.x, crane, oras, helm, regctl, cosign and the OCI conformance
# suite for the compatibility tests: built from the Go module proxy once per
# machine (cached; see the script).
if ! "$(dirname "${BASH_SOURCE[0]}")/install-go-tools.sh"; then
  echo "install-test-deps: the Go-built registry and clients are missing" >&2
  status=1
fi
# Keycloak 26 (from Maven Central) and Chromium + chromedriver for the Keycloak
# tests (tests/e2e/keycloak.rs); unpacked and pre-built once per machine.
if ! "$(dirname "${BASH_SOURCE[0]}")/install-keycloak.sh" >/dev/null; then
  echo "install-test-deps: Keycloak or the browser for the Keycloak tests is missing" >&2
  status=1
fi
if ! command -v cargo >/dev/null; then
  echo "install-test-deps: cargo not found; install a Rust toolchain (>= 1.85) first" >&2
  status=1
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-test-deps: note: the docker tests start dockerd and need root" >&2
fi
exit "$status"
