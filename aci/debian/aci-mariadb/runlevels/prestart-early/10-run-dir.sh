#!/bin/sh
# The server's socket directory (systemd's tmpfiles make it on a host).
set -eu
mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld
