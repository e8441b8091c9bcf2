#!/bin/sh
# Runs after files/ were copied in: they are there to be checked or fixed.
set -eu
test -f /usr/share/greeter/greeting
chmod 0444 /usr/share/greeter/greeting
