#!/bin/sh
# Runs in the image's own root, after the builder runlevel installed
# busybox. A real image installs its package here; this one installs a
# small app and the user it runs as.
set -eu
mkdir -p /etc /usr/local/bin /var/lib/@TINY@
cat > /etc/passwd <<'END'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:@TINY@:/var/lib/@TINY@:/bin/sh
END
cat > /etc/group <<'END'
root:x:0:
app:x:1000:
END
cat > /usr/local/bin/@TINY@ <<'END'
#!/bin/sh
# The app: reads the configuration herd-init rendered, reports it, and
# runs until it is stopped.
set -eu
message=$(sed -n 's/^message=//p' /etc/@TINY@/@TINY@.conf)
echo "$message" > /var/lib/@TINY@/status
echo "@TINY@: $message"
trap 'exit 0' TERM INT
while :; do sleep 1; done
END
chmod 0755 /usr/local/bin/@TINY@
chown 1000:1000 /var/lib/@TINY@
