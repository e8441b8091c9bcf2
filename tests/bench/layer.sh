#!/usr/bin/env bash
# Benchmark: an image on a 200 MB base whose build script changes 1 MB.
# Target: its layer is about 1 MB and `herd build` takes under 2 s on top of
# the script's own time.
#
# The base: busybox and 200 MiB of random bytes in 3,200 files (64 KiB each,
# 32 directories). The dependent's build script rewrites 8 of them, adds 8
# new ones (1 MiB in all) and deletes 4 (whiteouts); it times itself from
# inside the container (/proc/uptime) into a build mount, so
#   overhead = herd build's wall time - the script's own time
# counts everything herd adds: roots, the runtime's container start, the
# diff, tar, compression, the store.
#
# Rounds: the first build of the dependent extracts the base's layers into
# the store's cache (once per store: "cold"); the others rebuild with
# --no-cache on the extracted base ("warm"). In the same run, `podman build`
# of the same script (RUN on the same base, its own storage, offline) is the
# reference (its one-off cost, the pull of the base into its storage, is
# printed beside herd's cold build). Prints every round and the medians.
#
#   bash tests/bench/layer.sh [ROUNDS]     (root; podman for the reference)
#   HERD_BENCH_KEEP=1 keeps the work directory (store, images) for profiling.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
cargo build --release --quiet --bin herd --bin herd-init
herd=$PWD/target/x86_64-unknown-linux-gnu/release/herd
# Lowercase path: podman turns an oci: path into an image name.
work=/tmp/herd-bench-layer-$$
mkdir "$work"
export CONTAINERS_CONF=$PWD/tests/containers.conf
podman_storage=(--root "$work/podman/root" --runroot "$work/podman/run" --storage-driver overlay)
cleanup() {
  [ -n "${HERD_BENCH_KEEP:-}" ] && { echo "kept $work" >&2; return; }
  podman "${podman_storage[@]}" system reset --force >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }

echo "generating the base: 3,200 files, 200 MiB of random bytes ..."
mkdir -p "$work/base/runlevels/builder" "$work/base/files/data"
cat >"$work/base/aci-manifest.yml" <<'EOF'
name: bench.example.com/base:1
aci:
  app:
    exec: [/bin/sh]
EOF
cat >"$work/base/runlevels/builder/10-busybox.sh" <<'EOF'
set -eu
mkdir -p "$ROOTFS/bin" "$ROOTFS/tmp"
cp "$(command -v busybox)" "$ROOTFS/bin/busybox"
for applet in $("$ROOTFS/bin/busybox" --list); do [ -e "$ROOTFS/bin/$applet" ] || ln -s busybox "$ROOTFS/bin/$applet"; done
EOF
python3 - "$work/base/files/data" <<'PY'
import os, sys
root = sys.argv[1]
for i in range(3200):
    d = os.path.join(root, f"d{i % 32:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:04d}"), "wb") as f:
        f.write(os.urandom(64 * 1024))
PY

# The dependent's script, shared with the podman reference.
cat >"$work/change.sh" <<'EOF'
set -eu
read -r start _ </proc/uptime
for i in 0 1 2 3 4 5 6 7; do
  head -c 65536 /dev/urandom >/data/d0$i/f000$i           # rewrite 8 x 64 KiB
  head -c 65536 /dev/urandom >/data/d0$i/new-$i           # add 8 x 64 KiB
done
rm /data/d10/f0010 /data/d11/f0011 /data/d12/f0012 /data/d13/f0013   # 4 whiteouts
read -r end _ </proc/uptime
echo "$start $end" >/bench-out/times
EOF
mkdir -p "$work/dep/runlevels/build" "$work/out"
cp "$work/change.sh" "$work/dep/runlevels/build/10-change.sh"
cat >"$work/dep/aci-manifest.yml" <<EOF
name: bench.example.com/dep:1
build:
  mountPoints: [{from: $work/out, to: /bench-out}]
aci:
  dependencies: [bench.example.com/base:1]
EOF

store=$work/store
"$herd" build "$work/base" --store "$store" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
echo "base: $("$herd" images --store "$store" | awk '$1 ~ /base/ {print $3, $4}') compressed"

# herd: one round = one build of the dependent. Prints
# "wall script overhead layer_compressed layer_uncompressed".
herd_round() {
  local start end
  start=$(now)
  "$herd" build "$work/dep" --store "$store" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  end=$(now)
  read -r s_start s_end <"$work/out/times"
  python3 - "$store" "$start" "$end" "$s_start" "$s_end" <<'PY'
import json, os, subprocess, sys
store, start, end, s_start, s_end = sys.argv[1], *map(float, sys.argv[2:])
index = json.load(open(os.path.join(store, "index.json")))
desc = next(m for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name", "").endswith("dep:1"))
blob = lambda d: os.path.join(store, "blobs", *d.split(":"))
manifest = json.load(open(blob(desc["digest"])))
layer = manifest["layers"][-1]
tool = "zstd" if "zstd" in layer["mediaType"] else "gzip"
raw = subprocess.run([tool, "-dc", blob(layer["digest"])], capture_output=True, check=True).stdout
wall, script = end - start, s_end - s_start
print(f"{wall:.3f} {script:.3f} {wall - script:.3f} {layer['size']} {len(raw)}")
PY
}

# podman: the same script in a RUN on the same base.
pull_start=$(now)
podman "${podman_storage[@]}" pull -q "oci:$store:bench.example.com/base:1" >/dev/null
pull_end=$(now)
podman "${podman_storage[@]}" tag "$(podman "${podman_storage[@]}" images -q | head -1)" localhost/bench-base:1
mkdir "$work/ctx"
cat >"$work/ctx/Containerfile" <<'EOF'
FROM localhost/bench-base:1
RUN sh /change.sh
EOF
podman_round() {
  local start end
  start=$(now)
  podman "${podman_storage[@]}" build -q --pull=never --no-cache --network host \
    -v "$work/change.sh:/change.sh:ro" -v "$work/out:/bench-out" -t localhost/bench-dep:1 "$work/ctx" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  end=$(now)
  read -r s_start s_end <"$work/out/times"
  local size
  size=$(podman "${podman_storage[@]}" image inspect localhost/bench-dep:1 --format '{{.Size}}')
  local base_size
  base_size=$(podman "${podman_storage[@]}" image inspect localhost/bench-base:1 --format '{{.Size}}')
  python3 -c "w=$end-$start; s=$s_end-$s_start; print(f'{w:.3f} {s:.3f} {w-s:.3f} - {$size-$base_size}')"
}

echo "columns: wall_s script_s overhead_s layer_compressed_B layer_uncompressed_B"
cold=$(herd_round)
echo "herd cold (extracts the base once): $cold"
echo "podman's one-off counterpart, pulling the base into its storage: $(elapsed "$pull_start" "$pull_end") s"
for round in $(seq "$rounds"); do
  h=$(herd_round --no-cache)
  p=$(podman_round)
  echo "round $round: herd $h | podman build $p"
  echo "$h" >>"$work/herd.txt"
  echo "$p" >>"$work/podman.txt"
done
python3 - "$work/herd.txt" "$work/podman.txt" <<'PY'
import sys, statistics
def load(p): return [l.split() for l in open(p)]
h, p = load(sys.argv[1]), load(sys.argv[2])
med = lambda rows, i: statistics.median(float(r[i]) for r in rows)
print(f"herd build (warm):  median wall {med(h,0):.2f} s, script {med(h,1):.2f} s, "
      f"overhead {med(h,2):.2f} s (target < 2 s); layer {med(h,3)/1e6:.2f} MB compressed, "
      f"{med(h,4)/1e6:.2f} MB uncompressed (target ~1 MB)")
print(f"podman build:       median wall {med(p,0):.2f} s, script {med(p,1):.2f} s, "
      f"overhead {med(p,2):.2f} s; layer {med(p,4)/1e6:.2f} MB uncompressed (image size - base size)")
print(f"ratio herd/podman overhead: {med(h,2)/med(p,2):.2f}")
PY
