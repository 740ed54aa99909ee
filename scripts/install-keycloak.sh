#!/usr/bin/env bash
# Installs the Keycloak server that berth's Keycloak end-to-end tests start
# (tests/e2e/keycloak.rs): the keycloak-quarkus-dist zip from Maven Central,
# unpacked once per machine under ~/.cache/berth/keycloak-$VERSION and
# pre-built for `start-dev`, so each test run skips Quarkus' build step.
# Also installs the headless browser the sign-in test drives.
#
# Prints `BERTH_KEYCLOAK_HOME=…` and `BERTH_KEYCLOAK_JAVA_HOME=…` as its last lines.
# Idempotent and quiet when everything is in place.
set -euo pipefail

version="${BERTH_KEYCLOAK_VERSION:-26.7.3}"
cache="${BERTH_KEYCLOAK_CACHE:-$HOME/.cache/berth}"
home="$cache/keycloak-$version"

say() { echo "install-keycloak: $*" >&2; }

sudo=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then sudo=(sudo); fi
fi

apt_install() {
  if [ "$(id -u)" != 0 ] && [ ${#sudo[@]} = 0 ]; then
    say "need $* but not root (no sudo)"
    exit 1
  fi
  say "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Keycloak 26 needs Java 21 or newer; Debian 12 ships 17, so look for another
# JDK (a Temurin JDK lives under /usr/lib/jvm on the project's machines).
java_major() {
  "$1/bin/java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1
}
find_java() {
  local best="" best_v=0 d v
  for d in ${BERTH_KEYCLOAK_JAVA_HOME:-} ${JAVA_HOME:-} /usr/lib/jvm/*; do
    [ -x "$d/bin/java" ] || continue
    v=$(java_major "$d")
    [ -n "$v" ] || continue
    if [ "$v" -ge 21 ] && [ "$v" -gt "$best_v" ]; then
      best="$d"
      best_v="$v"
    fi
  done
  echo "$best"
}
java_home=$(find_java)
if [ -z "$java_home" ]; then
  # Debian 12 has no JDK 21; try the distribution's packages anyway (newer releases do).
  apt_install openjdk-21-jre-headless 2>/dev/null || true
  java_home=$(find_java)
fi
if [ -z "$java_home" ]; then
  say "no Java 21+ found (looked in \$BERTH_KEYCLOAK_JAVA_HOME, \$JAVA_HOME, /usr/lib/jvm/*)"
  exit 1
fi

if [ ! -x "$home/bin/kc.sh" ] || [ ! -e "$home/.berth-prebuilt" ]; then
  for tool in mvn unzip curl; do
    command -v "$tool" >/dev/null || apt_install "$([ "$tool" = mvn ] && echo maven || echo "$tool")"
  done
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/.keycloak-download.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  if [ ! -x "$home/bin/kc.sh" ]; then
    say "fetching org.keycloak:keycloak-quarkus-dist:$version:zip from Maven Central (~170 MB, kept in ~/.m2)"
    start=$SECONDS
    mvn -q -B -Dstyle.color=never dependency:copy \
      -Dartifact="org.keycloak:keycloak-quarkus-dist:$version:zip" \
      -DoutputDirectory="$tmp"
    unzip -q "$tmp/keycloak-quarkus-dist-$version.zip" -d "$tmp/unpacked"
    rm -rf "$home"
    mv "$tmp/unpacked/keycloak-$version" "$home"
    say "unpacked Keycloak $version in $((SECONDS - start))s"
  fi
  # Quarkus builds ("augments") the server on the first start-dev, which takes
  # one to two minutes; do it here once, with the options the tests use, by
  # starting the server until it answers and stopping it again.
  say "pre-building Keycloak for start-dev (one to two minutes, once per machine)"
  start=$SECONDS
  port=$((20000 + RANDOM % 20000))
  mgmt=$((port + 1))
  work="$tmp/prebuild"
  cp -a "$home" "$work"
  (
    cd "$work"
    JAVA_HOME="$java_home" KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD=prebuild \
      exec setsid bin/kc.sh start-dev --db=dev-mem --http-host=127.0.0.1 \
      --http-port="$port" --http-management-port="$mgmt"
  ) >"$tmp/prebuild.log" 2>&1 &
  kc=$!
  ready=0
  for _ in $(seq 1 600); do
    if curl -sf "http://127.0.0.1:$port/realms/master/.well-known/openid-configuration" >/dev/null; then
      ready=1
      break
    fi
    kill -0 "$kc" 2>/dev/null || break
    sleep 1
  done
  kill -TERM -- -"$kc" 2>/dev/null || kill -TERM "$kc" 2>/dev/null || true
  wait "$kc" 2>/dev/null || true
  if [ "$ready" != 1 ]; then
    tail -40 "$tmp/prebuild.log" >&2
    say "Keycloak did not start during the pre-build"
    exit 1
  fi
  # Keep the built server (lib/quarkus), not the run's data.
  rm -rf "$home/lib/quarkus"
  cp -a "$work/lib/quarkus" "$home/lib/quarkus"
  touch "$home/.berth-prebuilt"
  say "pre-built in $((SECONDS - start))s"
fi

# The browser sign-in test drives Debian's Chromium through chromedriver.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  apt_install chromium chromium-driver
fi

echo "BERTH_KEYCLOAK_HOME=$home"
echo "BERTH_KEYCLOAK_JAVA_HOME=$java_home"
