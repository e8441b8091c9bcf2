#!/bin/sh
# `herd test` runs this until it succeeds (or its --timeout passes) before
# the tests: the app writes its status once it has read its configuration.
test -s /var/lib/@TINY@/status
