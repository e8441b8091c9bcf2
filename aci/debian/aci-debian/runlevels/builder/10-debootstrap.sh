#!/bin/sh
# Runs in the builder (the host's system, read-only): bootstraps Debian 12
# into the image root at $ROOTFS from Debian's package archive.
# Another mirror: HERD_ENV_DEBIAN_MIRROR=http://... (and
# HERD_ENV_DEBIAN_SECURITY_MIRROR) on the host.
#
# debootstrap warns that it cannot mount /proc and /sys in $ROOTFS: build
# scripts have no CAP_SYS_ADMIN, and a minbase system installs without them.
set -eu
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
debootstrap --variant=minbase --include=ca-certificates bookworm "$ROOTFS" "$mirror"

# Point releases and security updates, as in Debian's own images, applied now.
cat > "$ROOTFS/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
chroot "$ROOTFS" apt-get update -q
# No pty in the chroot (no /dev/pts): dpkg logs without one.
DEBIAN_FRONTEND=noninteractive chroot "$ROOTFS" apt-get upgrade -y -q -o Dpkg::Use-Pty=0

# No caches or logs in the image; no device nodes either (debootstrap made
# them to run the packages' scripts; runtimes mount their own /dev).
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/*
rm -rf "$ROOTFS"/dev/*
