#!/bin/sh
# Runs in the builder (the host's system, read-only); the image root is at
# $ROOTFS. Installs the static busybox and one link per applet.
set -eu
busybox=$(command -v busybox)
mkdir -p "$ROOTFS/bin" "$ROOTFS/sbin" "$ROOTFS/tmp" "$ROOTFS/root" "$ROOTFS/var/lib"
chmod 1777 "$ROOTFS/tmp"
cp "$busybox" "$ROOTFS/bin/busybox"
for applet in $("$ROOTFS/bin/busybox" --list); do
  [ -e "$ROOTFS/bin/$applet" ] || ln -s busybox "$ROOTFS/bin/$applet"
done
echo "installed $(ls "$ROOTFS/bin" | wc -l) commands from $busybox"
