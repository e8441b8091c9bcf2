#!/bin/sh
# Runs in the builder (the host's system, read-only): bootstraps Debian 12
# into the image root at $ROOTFS from Debian's package archive.
set -eu
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
debootstrap --variant=minbase --include=ca-certificates bookworm "$ROOTFS" "$mirror"
# No caches or logs in the image.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/*
