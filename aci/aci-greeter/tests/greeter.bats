# `herd test aci/aci-greeter` runs these inside a container of the image
# (build aci/aci-busybox first: it is the base). The app prints its
# greeting and exits; the container stays up for the tests.

@test "files/ were copied and made read-only by build-late" {
  [ "$(cat /usr/share/greeter/greeting)" = "Hello from aci-greeter" ]
  [ "$(stat -c %a /usr/share/greeter/greeting)" = 444 ]
}

@test "the build script wrote the version the tag carries" {
  [ "$(cat /etc/greeter-version)" = 2.4 ]
}

@test "the build script removed a file of the base" {
  [ ! -e /etc/motd ]
}

@test "the base's inherit-build-early script ran in this image" {
  [ "$(cat /etc/herd/base)" = "built on aci-busybox" ]
}
