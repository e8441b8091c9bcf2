#!/usr/bin/env bash
# Benchmark: a tree of 50 images (a chain of 10 bases, 40 leaves on them,
# each a few MB of files): cold build, then a no-op rebuild (target < 0.5 s).
# Then a 500-image tree (a base and 499 images on it, files only, in a git
# repository as in CI): cold build with the scheduler's overhead per image
# (wall time less the images' own build time spread over the jobs; target
# < 20 ms), and no-op rebuilds (target < 0.5 s).
#
#   bash tests/bench/tree.sh
#   HERD=path/to/herd bash tests/bench/tree.sh   # that binary (herd-init beside it)
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${HERD:-}" ]; then
  cargo build --release --quiet --bin herd --bin herd-init
fi
herd=${HERD:-$(ls -d target/*/release/herd | head -1)}
work=$(mktemp -d /tmp/herd-bench-tree.XXXXXX)
trap 'rm -rf "$work"' EXIT

# tree ROOT small|big: writes the 50-image tree (~3 MB of files per image,
# half text, half random) or the 500-image one (four small files each).
tree() {
  python3 - "$1" "$2" <<'PY'
import os, random, sys
root, size = sys.argv[1], sys.argv[2]
random.seed(7)
def image(name, deps):
    d = os.path.join(root, name)
    os.makedirs(os.path.join(d, "files", "opt", name), exist_ok=True)
    with open(os.path.join(d, "aci-manifest.yml"), "w") as f:
        f.write(f"name: bench.example.com/{name}:1\n")
        if deps:
            f.write("aci:\n  dependencies: [" + ", ".join(f"bench.example.com/{x}:1" for x in deps) + "]\n")
    for i in range(20 if size == "small" else 4):
        path = os.path.join(d, "files", "opt", name, f"f{i}")
        with open(path, "wb") as f:
            if size == "big":
                f.write((f"{name} file {i}\n" * 64).encode())
            else:
                f.write(os.urandom(75_000) if i % 2 else (("%s line %d\n" % (name, i)) * 5000).encode()[:75_000])
if size == "small":
    for i in range(10):
        image(f"base{i}", [f"base{i-1}"] if i else [])
    for i in range(40):
        image(f"leaf{i}", [f"base{i % 10}"])
else:
    image("base", [])
    for i in range(499):
        image(f"app{i:03d}", ["base"])
PY
}
tree "$work/tree" small
du -sh "$work/tree"

measure() {
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
  cat "$work/time"
}
read -r cold cold_rss < <(measure "$herd" build "$work/tree" --store "$work/store")
noop=()
for i in 1 2 3 4 5; do
  read -r t rss < <(measure "$herd" build "$work/tree" --store "$work/store")
  noop+=("$t")
done
grep -c cached "$work/err" | sed 's/^/images reported cached in the last run: /'
echo "cold build of 50 images: ${cold} s (peak RSS $((cold_rss / 1024)) MB)"
echo "no-op rebuilds: ${noop[*]} s (target < 0.5 s)"

echo
tree "$work/big" big
git -C "$work/big" init -q
git -C "$work/big" add -A
git -C "$work/big" -c user.name=bench -c user.email=bench@example.com commit -qm tree
jobs=$(nproc)
/usr/bin/time -f "%e %M" -o "$work/time" "$herd" build "$work/big" --store "$work/big-store" --json --jobs "$jobs" >"$work/big.json" 2>"$work/err" || { cat "$work/err"; exit 1; }
read -r big_cold big_rss <"$work/time"
python3 - "$work/big.json" "$big_cold" "$jobs" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
wall, jobs = float(sys.argv[2]), int(sys.argv[3])
own = sum(u["seconds"] for u in report["units"])
n = len(report["units"])
overhead = (wall - own / jobs) / n
print(f"cold build of {n} images: {wall:.2f} s wall, images' own work {own:.2f} s over {jobs} jobs; "
      f"scheduler overhead {overhead * 1000:.1f} ms per image (target < 20 ms)")
PY
big_noop=()
for i in 1 2 3 4 5; do
  read -r t rss < <(measure "$herd" build "$work/big" --store "$work/big-store")
  big_noop+=("$t")
done
echo "no-op rebuilds of 500 images: ${big_noop[*]} s (target < 0.5 s; peak RSS of the last $((rss / 1024)) MB)"
