#!/bin/sh
# Assembles the root filesystem of berth's container image (see Dockerfile):
#
#   usr/local/bin/berth            the given binary, debug sections stripped
#   lib…/                          the shared libraries it links, found with ldd,
#                                  and the dynamic loader
#   etc/ssl/certs/ca-certificates.crt   CA certificates for OIDC providers and
#                                  PostgreSQL over TLS
#   etc/passwd, etc/group          the unprivileged user and group berth (10001)
#   tmp/
#
# and, beside it in DEST_DIR/home/, berth's working directory /var/lib/berth
# (data/ and keys/; policies/ is written there on first start), which the
# Dockerfile copies owned by berth.
#
# Nothing else: no shell, no package manager. The Dockerfile's build stage runs
# this on the release binary; scripts/build-image.sh runs it on a binary built
# on the host, which is how the tests build the image without pulling any base
# image.
#
# Usage: scripts/image-rootfs.sh BERTH_BINARY DEST_DIR
#   (DEST_DIR is replaced; it gets rootfs/ and home/)
set -eu

if [ "$#" -ne 2 ]; then
  echo "usage: $0 BERTH_BINARY DEST_DIR" >&2
  exit 2
fi
bin=$1
out=$2
dest=$out/rootfs
home=$out/home
uid=10001
ca=/etc/ssl/certs/ca-certificates.crt

[ -x "$bin" ] || { echo "image-rootfs: $bin is not an executable" >&2; exit 1; }
[ -f "$ca" ] || { echo "image-rootfs: $ca missing (install ca-certificates)" >&2; exit 1; }
command -v ldd >/dev/null || { echo "image-rootfs: ldd not found" >&2; exit 1; }

case "$out" in
  "" | / | /*/.. | ..*) echo "image-rootfs: refusing DEST_DIR $out" >&2; exit 2 ;;
esac
rm -rf "$out"
# data/ and keys/ exist in the image, owned by berth, so that a volume mounted
# on either one alone starts out writable by berth.
mkdir -p "$dest/usr/local/bin" "$dest/etc/ssl/certs" "$dest/tmp" "$home/data" "$home/keys"

if command -v objcopy >/dev/null; then
  objcopy --strip-debug "$bin" "$dest/usr/local/bin/berth"
else
  cp "$bin" "$dest/usr/local/bin/berth"
fi
chmod 0755 "$dest/usr/local/bin/berth"

# Every library ldd resolves (`name => /path (addr)`) and the loader (`/path (addr)`).
libs=$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
if ldd "$bin" | grep -q 'not found'; then
  echo "image-rootfs: unresolved libraries:" >&2
  ldd "$bin" | grep 'not found' >&2
  exit 1
fi
for lib in $libs; do
  mkdir -p "$dest$(dirname "$lib")"
  cp -L "$lib" "$dest$lib"
done

cp "$ca" "$dest$ca"
printf 'root:x:0:0:root:/:/nonexistent\nberth:x:%s:%s:berth:/var/lib/berth:/nonexistent\n' "$uid" "$uid" >"$dest/etc/passwd"
printf 'root:x:0:\nberth:x:%s:\n' "$uid" >"$dest/etc/group"
chmod 1777 "$dest/tmp"
chmod 0700 "$home" "$home/data" "$home/keys"
echo "image-rootfs: $dest ($(du -sh "$dest" | cut -f1)): berth + $(echo "$libs" | wc -w) libraries"
