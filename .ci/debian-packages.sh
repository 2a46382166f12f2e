#!/usr/bin/env bash
# Install the Debian packages named in $DEBS that are missing. MBROLA's voices live in
# Debian's contrib and non-free components, which a default sources list does not enable.
# As root this installs; otherwise it names the commands to run and fails.
set -euo pipefail
missing=()
for p in $DEBS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

needs_contrib=0
for p in "${missing[@]}"; do case "$p" in mbrola*) needs_contrib=1;; esac; done
src=/etc/apt/sources.list.d/debian.sources
extra=/etc/apt/sources.list.d/vgsme-contrib-nonfree.sources

if [ "$(id -u)" -ne 0 ]; then
  echo "vgsme needs these Debian packages: ${missing[*]}" >&2
  [ $needs_contrib -eq 1 ] && echo "MBROLA voices need the contrib and non-free components enabled in /etc/apt/sources.list.d/." >&2
  echo "Run as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if [ $needs_contrib -eq 1 ] && [ ! -f "$extra" ] && [ -f "$src" ]; then
  sed -e 's/^Components: .*/Components: contrib non-free/' "$src" > "$extra"
fi
echo "installing Debian packages: ${missing[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
