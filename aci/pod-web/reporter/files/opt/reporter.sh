#!/bin/sh
# The sidecar: reports what the web app serves, like nerve reporting a
# service's health.
while true; do
  if page=$(wget -q -O - http://127.0.0.1:18080/index.html 2>/dev/null); then
    echo "reporter: web is up: $(echo "$page" | head -1)"
  else
    echo "reporter: web is down"
  fi
  sleep 1
done
