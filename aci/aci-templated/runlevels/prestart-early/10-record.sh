# Runs before the attributes are merged and the templates rendered.
mkdir -p /tmp && echo "early: app.conf present: $(test -f /etc/app/app.conf && echo yes || echo no)" > /tmp/start-order
