#!/usr/bin/env bash
# Push benchmark: herd push of a ~300 MB image to a local registry against
# `skopeo copy oci:STORE:NAME docker://...` of the same image in the same
# run, then a re-push of the unchanged image.
#
# Each timed push goes to a fresh registry (new port, empty storage), so
# neither tool finds blobs to skip or mount from an earlier round. The
# store's blobs are read once first so both tools start from a warm page
# cache. Prints every round, the medians and the ratios.
#
# The same run also uploads the store's blobs with bare `curl -T` (one
# monolithic PUT each, one after another): the registry's ingest floor.
# Targets: herd <= 0.7x skopeo, at the registry's floor; re-push < 0.3 s.
# Usage: tests/bench/push.sh [ROUNDS]   (needs docker-registry and skopeo)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}

cargo build --release --quiet --bin herd --bin herd-init
herd=$PWD/target/x86_64-unknown-linux-gnu/release/herd
work=$(mktemp -d)
# The registry keeps its blobs in memory when it can (tmpfs): a disk's
# write-back stalls would time the disk, not the clients.
registry_root=$work
[ -d /dev/shm ] && [ -w /dev/shm ] && registry_root=$(mktemp -d /dev/shm/herd-bench.XXXXXX)
registry_pid=
cleanup() {
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null
  rm -rf "$work" "$registry_root"
}
trap cleanup EXIT

now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts an empty registry; sets $port.
start_registry() {
  port=$(free_port)
  local dir=$registry_root/registry-$port
  mkdir -p "$dir"
  cat >"$dir/config.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $dir/storage}}
http: {addr: "127.0.0.1:$port", secret: bench}
EOF
  docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && return
    sleep 0.05
  done
  echo "the registry did not start" >&2
  exit 1
}

stop_registry() {
  kill "$registry_pid"
  wait "$registry_pid" 2>/dev/null || true
  registry_pid=
  rm -rf "$registry_root/registry-$port"
}

# The image: 280 MB of random files (incompressible, like binaries) and
# ~40 MB of text in many small files.
image=$work/image
mkdir -p "$image/files/opt/random" "$image/files/usr/share/doc"
for i in $(seq 35); do
  head -c 8M /dev/urandom >"$image/files/opt/random/blob-$i.bin"
done
python3 - "$image/files/usr/share/doc" <<'EOF'
import os, random, sys
random.seed(1)
words = [w.strip() for w in open("/usr/share/dict/words")] if os.path.exists("/usr/share/dict/words") else \
    ["herd", "image", "layer", "registry", "push", "blob", "digest", "manifest", "store", "pod", "unit", "node"]
for d in range(40):
    os.makedirs(f"{sys.argv[1]}/dir{d}", exist_ok=True)
    for f in range(100):
        with open(f"{sys.argv[1]}/dir{d}/file{f}.txt", "w") as out:
            out.write(" ".join(random.choice(words) for _ in range(1700)))
EOF
name=bench.example.com/herd/bench:1
echo "name: $name" >"$image/aci-manifest.yml"
store=$work/store
"$herd" build "$image" --store "$store" >/dev/null
size=$(du -sb "$store/blobs" | cut -f1)
cat "$store"/blobs/sha256/* >/dev/null
echo "image: $name, $((size / 1000000)) MB in the store"

# Uploads every blob of the store as a bare HTTP client would: POST for
# an upload URL, then one PUT of the whole blob with its digest.
curl_push() {
  local base=http://127.0.0.1:$port blob location
  for blob in "$store"/blobs/sha256/*; do
    location=$(curl -sf -X POST -D - -o /dev/null "$base/v2/herd/bench/blobs/uploads/" |
      tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
    case $location in http*) ;; *) location=$base$location ;; esac
    case $location in *\?*) location="$location&" ;; *) location="$location?" ;; esac
    curl -sf -T "$blob" -H 'Content-Type: application/octet-stream' \
      "${location}digest=sha256:$(basename "$blob")" >/dev/null
  done
}

herd_times=()
skopeo_times=()
curl_times=()
for round in $(seq "$rounds"); do
  start_registry
  rm -f "$store/registry-blobs.json"
  t0=$(now)
  "$herd" push "$name" --store "$store" --registry "127.0.0.1:$port" --insecure >/dev/null 2>&1
  t1=$(now)
  herd_time=$(echo "$t1 - $t0" | bc)
  herd_times+=("$herd_time")
  if [ "$round" -eq "$rounds" ]; then
    t0=$(now)
    summary=$("$herd" push "$name" --store "$store" --registry "127.0.0.1:$port" --insecure --json 2>/dev/null)
    t1=$(now)
    repush_time=$(echo "$t1 - $t0" | bc)
    repush_uploaded=$(echo "$summary" | python3 -c 'import json,sys; print(json.load(sys.stdin)["blobs_uploaded"])')
  fi
  stop_registry

  start_registry
  t0=$(now)
  skopeo copy --quiet --dest-tls-verify=false "oci:$store:$name" "docker://127.0.0.1:$port/herd/bench:1"
  t1=$(now)
  skopeo_time=$(echo "$t1 - $t0" | bc)
  skopeo_times+=("$skopeo_time")
  stop_registry

  start_registry
  t0=$(now)
  curl_push
  t1=$(now)
  curl_time=$(echo "$t1 - $t0" | bc)
  curl_times+=("$curl_time")
  stop_registry
  printf 'round %d: herd push %.3f s, skopeo copy %.3f s, curl -T of the blobs %.3f s\n' "$round" "$herd_time" "$skopeo_time" "$curl_time"
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
herd_median=$(median "${herd_times[@]}")
skopeo_median=$(median "${skopeo_times[@]}")
curl_median=$(median "${curl_times[@]}")
ratio=$(echo "scale=3; $herd_median / $skopeo_median" | bc)
floor=$(echo "scale=3; $herd_median / $curl_median" | bc)
printf 'median: herd push %.3f s, skopeo copy %.3f s, curl -T %.3f s; ratio to skopeo %.2f (target <= 0.70), to curl %.2f\n' "$herd_median" "$skopeo_median" "$curl_median" "$ratio" "$floor"
printf 're-push of the unchanged image: %.3f s, %s blobs uploaded (target < 0.3 s, 0)\n' "$repush_time" "$repush_uploaded"
