#!/bin/sh
# Runs in the root of every image built on this one, before its build
# scripts: records which base it was built on.
set -eu
mkdir -p /etc/herd
echo "built on aci-busybox" > /etc/herd/base
