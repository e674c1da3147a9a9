#!/bin/sh
# deps.sh PKG... - make sure the Debian packages recd builds with are present.
# As root, installs what is missing; otherwise prints the apt-get line.
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
        { echo "apt-get install failed for:$missing" >&2; exit 1; }
else
    echo "missing Debian packages; run:" >&2
    echo "  sudo apt-get install$missing" >&2
    exit 1
fi
