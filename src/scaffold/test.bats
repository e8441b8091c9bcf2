# `herd test` runs these inside a container of the image, once
# tests/wait.sh succeeded: templates are rendered and the app runs.

@test "the configuration is rendered from the attributes" {
  run cat /etc/@TINY@/@TINY@.conf
  [ "$status" -eq 0 ]
  [[ "$output" == *"message=Hello, world!"* ]]
}

@test "the app read its configuration" {
  [ "$(cat /var/lib/@TINY@/status)" = "Hello, world!" ]
}

@test "the app runs as its own user" {
  [ "$(stat -c %U /var/lib/@TINY@/status)" = app ]
}
