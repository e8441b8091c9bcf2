#!/bin/sh
# The app: shows what the start prepared, then serves until told to stop.
echo "app: uid=$(id -u) gid=$(id -g)"
cat /tmp/start-order
cat /etc/app/app.conf
cat /etc/app/secret
trap 'echo "app: got TERM, stopping"; exit 0' TERM
echo "app: ready"
while true; do sleep 0.1; done
