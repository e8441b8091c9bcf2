# `herd test aci/aci-tripsearch` runs these inside a container of the image
# (build aci/aci-busybox first: it is the base).

@test "the page is rendered from the image's default attributes" {
  [ "$(head -1 /srv/www/index.html)" = "tripsearch 2.15.0 on port 8080, log level info" ]
}

@test "the app serves it on the rendered port" {
  wget -q -O - http://127.0.0.1:8080/ | grep -q "^tripsearch 2.15.0 on port 8080"
}
