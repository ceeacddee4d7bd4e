#!/usr/bin/env bash
# Fetches the rsyslog peer for bench/peers_bench.py from Debian's packages, without installing it:
# rsyslog (imfile, mmjsonparse), rsyslog-kafka (omkafka) and the libraries they need that a new
# machine lacks, each extracted with dpkg-deb -x under $PEERS_CACHE/rsyslog-<version>. rsyslogd then
# runs with LD_LIBRARY_PATH and -M (module directory) pointing there. Cached: a second run does nothing.
#
#   bench/peers/build_rsyslog.sh            # prints the root of the extracted tree
set -euo pipefail
PEERS_CACHE=${PEERS_CACHE:-$HOME/.cache/tether/peers}
packages=(rsyslog rsyslog-kafka libestr0 libfastjson4 liblognorm5 librdkafka1)
version=$(apt-cache policy rsyslog | sed -n 's/^ *Candidate: //p')
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  echo "apt knows no rsyslog: run apt-get update once" >&2
  exit 1
fi
root=$PEERS_CACHE/rsyslog-$version
if [ -x "$root/usr/sbin/rsyslogd" ] && [ -e "$root/usr/lib/x86_64-linux-gnu/rsyslog/omkafka.so" ]; then
  echo "$root"
  exit 0
fi
debs=$(mktemp -d)
trap 'rm -rf "$debs"' EXIT
chmod a+rwx "$debs"  # apt drops root to _apt for the download
(cd "$debs" && apt-get download "${packages[@]}" >/dev/null)
mkdir -p "$root.partial"
for deb in "$debs"/*.deb; do
  dpkg-deb -x "$deb" "$root.partial"
  dpkg-deb -f "$deb" Package Version | paste -sd' ' >>"$root.partial/PACKAGES"
done
rm -rf "$root"
mv "$root.partial" "$root"
echo "$root"
