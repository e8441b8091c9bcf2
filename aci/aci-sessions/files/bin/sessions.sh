#!/bin/sh
# The service: warms up for $WARMUP seconds (2 by default), then keeps three
# client sessions open (files in /run/sessions/open). Once the prestop
# script set its weight to 0, it opens no more and its clients leave, one a
# second. Its flusher, like a database writing out its buffers, needs a
# second after SIGTERM: the init waits for it too.
state=/run/sessions
rm -rf "$state"
mkdir -p "$state/open"
echo "app: warming up"
sleep "${WARMUP:-2}"
: > "$state/warm"
echo "app: warm"
(
    trap 'sleep 1; echo "flusher: flushed"; exit 0' TERM
    while true; do sleep 0.1; done
) &
trap 'echo "app: got TERM with $(ls "$state/open" | wc -l) sessions open"; exit 0' TERM
opened=0
while true; do
    if [ -e "$state/weight-0" ]; then
        last=$(ls "$state/open" | head -n 1)
        if [ -n "$last" ]; then
            sleep 1
            rm "$state/open/$last"
            echo "app: session $last closed"
        fi
    elif [ "$opened" -lt 3 ]; then
        opened=$((opened + 1))
        : > "$state/open/$opened"
        echo "app: session $opened opened"
    fi
    sleep 0.1
done
