#!/bin/sh
# Out of the load balancer first (go-nerve set the weight to 0): new
# clients go elsewhere, the open sessions may finish.
echo "prestop: weight 0"
: > /run/sessions/weight-0
