#!/bin/sh
# Runs in the image's own root (its base applied). A real image would
# install a package here and read its version.
set -eu
version=2.4
echo "$version" > /etc/greeter-version
# The tag comes from here: aci-manifest.yml's name uses {{ version }}.
printf 'default:\n  version: "%s"\n' "$version" > "$HERD_BUILD_ATTRIBUTES/version.yml"
rm /etc/motd
