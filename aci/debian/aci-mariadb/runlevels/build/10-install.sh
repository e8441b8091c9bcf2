#!/bin/sh
# Runs in the image's root (Debian applied): installs MariaDB and takes the
# image version from the installed package.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends mariadb-server
version=$(dpkg-query -W -f='${Version}' mariadb-server | sed 's/^[0-9]*://; s/[^0-9.].*//')
printf 'default:\n  version: "%s"\n' "$version" > "$HERD_BUILD_ATTRIBUTES/version.yml"
rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
