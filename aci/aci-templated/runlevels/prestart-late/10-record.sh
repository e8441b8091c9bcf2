# Runs after the templates were rendered, before the app.
echo "late: app.conf present: $(test -f /etc/app/app.conf && echo yes || echo no)" >> /tmp/start-order
