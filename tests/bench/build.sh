#!/usr/bin/env bash
# Benchmark: herd build against `umoci repack` of the same tree, in the same
# run, on two data sets: a generated 300 MB tree (10,000 files, half
# compressible text, half random bytes) and real files (this machine's
# /usr/lib/gcc, /usr/lib/python3, /usr/libexec, /usr/share/perl). Prints wall and CPU times, peak memory, layer sizes and the
# ratios.
#
#   bash tests/bench/build.sh            # uses target/.../release/herd (builds it)
#   HERD=path/to/herd bash tests/bench/build.sh   # that binary instead
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${HERD:-}" ]; then
  cargo build --release --quiet --bin herd --bin herd-init
fi
herd=${HERD:-$(ls -d target/*/release/herd 2>/dev/null | head -1)}
work=$(mktemp -d /tmp/herd-bench-build.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "generating 10,000 files, 300 MB in $work/mixed/tree ..."
mkdir -p "$work/mixed"
python3 - "$work/mixed/tree" <<'PY'
import os, random, sys
root = sys.argv[1]
random.seed(42)
words = [("".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(random.randint(3, 9)))) for _ in range(2000)]
size = 30_000
for i in range(10_000):
    d = os.path.join(root, f"d{i % 100:02d}")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"f{i:05d}")
    if i % 2 == 0:
        out = []
        n = 0
        while n < size:
            w = random.choice(words) + (" " if random.random() > 0.1 else "\n")
            out.append(w); n += len(w)
        data = "".join(out)[:size].encode()
    else:
        data = os.urandom(size)
    with open(path, "wb") as f:
        f.write(data)
PY
du -sh "$work/mixed/tree"

measure() { # label, command... -> prints "label seconds maxrss_kb cpu_seconds"
  local label=$1; shift
  /usr/bin/time -f "%e %M %U %S" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
  read -r secs rss user sys < "$work/time"
  echo "$label $secs $rss $(python3 -c "print(round($user + $sys, 2))")"
}
largest_blob() { find "$1/blobs" -type f -printf '%s\n' | sort -n | tail -1; }

# One data set: its tree in $work/$1/tree becomes an image directory and an
# umoci bundle, both built three times, alternating.
bench_dataset() {
  local set=$1 dir="$work/$1"
  mkdir -p "$dir/img"
  printf 'name: bench.example.com/tree:1\n' > "$dir/img/aci-manifest.yml"
  mv "$dir/tree" "$dir/img/files"
  local umoci_layout="$dir/umoci"
  umoci init --layout "$umoci_layout"
  umoci new --image "$umoci_layout:t"
  umoci unpack --image "$umoci_layout:t" "$dir/bundle" >/dev/null
  cp -a "$dir/img/files/." "$dir/bundle/rootfs/"
  sync
  : > "$dir/herd.txt"; : > "$dir/umoci.txt"
  for round in 1 2 3; do
    rm -rf "$dir/store"
    h=$(measure herd "$herd" build "$dir/img" --store "$dir/store")
    u=$(measure umoci umoci repack --image "$umoci_layout:t$round" "$dir/bundle")
    echo "$set round $round: $h | $u (label seconds peak_kb cpu_seconds)"
    echo "$h" >> "$dir/herd.txt"; echo "$u" >> "$dir/umoci.txt"
  done
  python3 - "$set" "$dir/herd.txt" "$dir/umoci.txt" "$(largest_blob "$dir/store")" "$(largest_blob "$umoci_layout")" <<'PY'
import sys, statistics
def load(p): return [(float(l.split()[1]), int(l.split()[2]), float(l.split()[3])) for l in open(p)]
name = sys.argv[1]
h, u = load(sys.argv[2]), load(sys.argv[3])
hlayer, ulayer = int(sys.argv[4]), int(sys.argv[5])
med = lambda rows, i: statistics.median(r[i] for r in rows)
hm, um = med(h, 0), med(u, 0)
hc, uc = med(h, 2), med(u, 2)
print(f"[{name}] herd build:   median {hm:.2f} s wall, {hc:.2f} s CPU, peak RSS {max(r[1] for r in h)/1024:.0f} MB, layer {hlayer/1e6:.1f} MB")
print(f"[{name}] umoci repack: median {um:.2f} s wall, {uc:.2f} s CPU, peak RSS {max(r[1] for r in u)/1024:.0f} MB, layer {ulayer/1e6:.1f} MB")
print(f"[{name}] ratio herd/umoci: wall {hm/um:.2f} (target <= 0.45), CPU {hc/uc:.2f}, layer {hlayer/ulayer:.3f}")
PY
  rm -rf "$dir"
}

bench_dataset mixed

# The second data set is real files: this machine's compilers, Python and
# Perl libraries (binaries, shared objects, sources; about 235 MB), the
# same for both tools in one run.
echo "copying /usr/lib/gcc, /usr/lib/python3, /usr/libexec, /usr/share/perl into $work/system/tree ..."
mkdir -p "$work/system/tree"
tar -C / -cf - usr/lib/gcc usr/lib/python3 usr/libexec usr/share/perl | tar -C "$work/system/tree" -xf -
du -sh "$work/system/tree"
bench_dataset system
