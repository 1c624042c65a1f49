#!/bin/sh
# Fetch lwIP 2.1 from Debian's source package into $1 (default third_party/lwip).
# Uses a throwaway apt configuration so the host's apt state is untouched, and
# untars the orig tarball directly (no dpkg-source, no Debian patches needed).
set -eu
DEST=${1:-third_party/lwip}
if [ -f "$DEST/src/core/tcp.c" ]; then exit 0; fi
T=$(mktemp -d)
STAGE=
trap 'rm -rf "$T" ${STAGE:+"$STAGE"}' EXIT
mkdir -p "$T/lists/partial" "$T/cache/archives/partial" "$T/src"
echo "deb-src http://deb.debian.org/debian bookworm main" > "$T/sources.list"
O="-o Dir::Etc::SourceList=$T/sources.list -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=$T/lists -o Dir::Cache=$T/cache -o Debug::NoLocking=1"
apt-get -q $O update >&2
(cd "$T/src" && apt-get -q $O source --download-only lwip >&2)
TARBALL=$(ls "$T"/src/lwip_*.orig.tar.* | head -n1)
# Unpack beside the destination and rename, so an interrupted build never
# leaves a half tree that looks complete.
mkdir -p "$(dirname "$DEST")"
STAGE=$(mktemp -d "$(dirname "$DEST")/.lwip.XXXXXX")
tar -xf "$TARBALL" -C "$STAGE" --strip-components=1
test -f "$STAGE/src/core/tcp.c"
rm -rf "$DEST"
mv "$STAGE" "$DEST"
echo "lwIP unpacked into $DEST" >&2
