#!/usr/bin/env bash
# Benchmark: the registry build cache on CI runners. A tree of 100 images
# (a busybox base, 10 mid-level images on it, 89 apps on those; every image
# but the base has a build script) is built once and published with its
# cache keys to Debian's docker-registry on loopback. Then, each from an
# empty store, as a fresh runner would:
#   (a) nothing changed: no build script may run, no layer blob may be
#       downloaded, target < 3 s;
#   (b) one mid-level image changed: exactly it and its 9 apps rebuild;
#   (c) no cache at all, for the ratio.
#
#   bash tests/bench/ci.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${HERD:-}" ]; then
  cargo build --release --quiet --bin herd --bin herd-init
fi
herd=$(realpath "${HERD:-$(ls -d target/*/release/herd | head -1)}")
registry_bin=$(command -v docker-registry || echo /usr/sbin/docker-registry)
[ -x "$registry_bin" ] || { echo "docker-registry is not installed (Debian package docker-registry)"; exit 1; }
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || { echo "busybox is not installed (Debian package busybox-static)"; exit 1; }
work=$(mktemp -d /tmp/herd-bench-ci.XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
host="127.0.0.1:$port"
cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $host
  secret: herd-bench
EOF
"$registry_bin" serve "$work/registry.yml" >"$work/access.log" 2>"$work/registry.log" &
registry_pid=$!
trap 'kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
  sleep 0.1
done
printf 'registries:\n  "%s": {insecure: true}\n' "$host" >"$work/config.yml"
export HERD_CONFIG="$work/config.yml"
unset HERD_STORE SOURCE_DATE_EPOCH

python3 - "$work/tree" "$host" "$busybox" <<'PY'
import os, shutil, sys
root, host, busybox = sys.argv[1:]
def image(name, deps, script):
    d = os.path.join(root, name)
    os.makedirs(os.path.join(d, "files", "opt", name), exist_ok=True)
    with open(os.path.join(d, "aci-manifest.yml"), "w") as f:
        f.write(f"name: {host}/bench/{name}:1\n")
        if deps:
            f.write("aci:\n  dependencies: [" + ", ".join(f"{host}/bench/{x}:1" for x in deps) + "]\n")
    for i in range(4):
        with open(os.path.join(d, "files", "opt", name, f"f{i}"), "w") as f:
            f.write(f"{name} file {i}\n" * 256)
    if script:
        os.makedirs(os.path.join(d, "runlevels", "build"), exist_ok=True)
        path = os.path.join(d, "runlevels", "build", "10-build.sh")
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\necho bench-script-ran:{name}\nmkdir -p /opt/{name}\nseq 1 2000 > /opt/{name}/generated\n")
        os.chmod(path, 0o755)
    return d
base = image("base", [], False)
bin_dir = os.path.join(base, "files", "bin")
os.makedirs(bin_dir)
shutil.copy(busybox, os.path.join(bin_dir, "busybox"))
for applet in ["sh", "echo", "seq", "cat", "mkdir"]:
    os.symlink("busybox", os.path.join(bin_dir, applet))
for m in range(10):
    image(f"mid{m}", ["base"], True)
for a in range(89):
    image(f"app{a:02d}", [f"mid{a % 10}"], True)
PY

# run NAME STORE ARGS...: builds the tree, prints "seconds scripts" and
# keeps the JSON summary in $work/NAME.json.
run() {
  local name=$1 store=$2
  shift 2
  local start end
  start=$(date +%s.%N)
  "$herd" build "$work/tree" --store "$store" --json "$@" >"$work/$name.json" 2>"$work/$name.err" || {
    tail -30 "$work/$name.err"
    exit 1
  }
  end=$(date +%s.%N)
  echo "$(python3 -c "print(f'{$end - $start:.2f}')") $(grep -c bench-script-ran "$work/$name.err" || true)"
}
summary() {
  python3 - "$work/$1.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"built {s['built']}, cached locally {s['cached']}, cached from the registry "
      f"{s['cached_from_registry']}, fetched {s['bytes_fetched']} bytes")
PY
}
# layer_gets SINCE: blob GETs of layers (not configs) after access log line SINCE.
layer_gets() {
  python3 - "$work/publisher/index.json" "$work/publisher" "$work/access.log" "$1" <<'PY'
import json, os, sys
index, store, log, since = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
layers = set()
for m in json.load(open(index))["manifests"]:
    manifest = json.load(open(os.path.join(store, "blobs", "sha256", m["digest"].split(":")[1])))
    layers.update(l["digest"] for l in manifest.get("layers", []))
lines = open(log).read().splitlines()[since:]
print(sum(1 for l in lines if '"GET /v2/' in l and any(d in l for d in layers)))
PY
}

read -r publish_s publish_scripts < <(run publish "$work/publisher" --cache "$host" --cache-push)
echo "publish (cold build of 100 images + push with cache keys): ${publish_s} s, ${publish_scripts} scripts ran"

mark=$(wc -l <"$work/access.log")
read -r a_s a_scripts < <(run a "$work/a" --cache "$host")
echo "(a) nothing changed, empty store, --cache: ${a_s} s (target < 3 s), ${a_scripts} scripts ran (target 0), $(layer_gets "$mark") layer blobs downloaded (target 0); $(summary a)"

echo "changed" >>"$work/tree/mid3/files/opt/mid3/f0"
read -r b_s b_scripts < <(run b "$work/b" --cache "$host")
expected=$(printf '%s\n' mid3 app03 app13 app23 app33 app43 app53 app63 app73 app83 | sort | tr '\n' ' ')
actual=$(grep -o 'bench-script-ran:[a-z0-9]*' "$work/b.err" | cut -d: -f2 | sort -u | tr '\n' ' ')
verdict=$([ "$expected" = "$actual" ] && echo "exactly mid3 and its 9 apps" || echo "WRONG: ran $actual, expected $expected")
echo "(b) mid3 changed, empty store, --cache: ${b_s} s, ${b_scripts} scripts ran ($verdict); $(summary b)"
sed -i '$d' "$work/tree/mid3/files/opt/mid3/f0"

read -r c_s c_scripts < <(run c "$work/c")
echo "(c) no cache, empty store: ${c_s} s, ${c_scripts} scripts ran; $(summary c)"
python3 -c "print(f'ratio no cache / registry cache (nothing changed): {$c_s / $a_s:.1f}x')"
