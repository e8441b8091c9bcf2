#!/usr/bin/env bash
# Benchmark of `herd gen`: an environment of SERVICES services with NODES
# nodes each (default 2,000 x 5 = 10,000 units), generated twice (into an
# empty output directory, then replacing it) by the release build under
# /usr/bin/time -v. Prints wall time and peak memory (max RSS) of each run.
# Target: under 2 s and 200 MB.
#
#   tests/bench/gen.sh [SERVICES] [NODES]
#   BENCH_OUT=/dev/shm/units HERD_BIN=path/to/herd tests/bench/gen.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
services=${1:-2000}
nodes=${2:-5}

# HERD_BIN=path skips the release build (to rerun against a binary).
herd=${HERD_BIN:-}
if [ -z "$herd" ]; then
  cargo build --release --quiet --bin herd
  herd=target/x86_64-unknown-linux-gnu/release/herd
  [ -x "$herd" ] || herd=target/release/herd
fi

work=$(mktemp -d)
# KEEP=1 keeps the generated environment for profiling.
trap '[ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"' EXIT
env_dir=$work/env/bench
mkdir -p "$env_dir/attributes" "$env_dir/common-attributes/nerve" "$env_dir/templates" "$env_dir/services"

cat > "$env_dir/config.yml" <<YAML
envName: bench
registry: {domain: aci.example.com}
YAML
cat > "$env_dir/attributes/env.yml" <<YAML
default:
  dc: bench
  log: {level: info}
  zookeeper: {hosts: [zk1:2181, zk2:2181, zk3:2181]}
YAML
cat > "$env_dir/common-attributes/nerve/base.yml" <<YAML
default:
  nerve: {checkInterval: 2, weight: 255}
YAML
cat > "$env_dir/templates/header.partial" <<'TMPL'
# {{ env_name }} {{ service_name }} on {{ hostname }}
TMPL

# Every service: a pod on NODES hosts with fleet placement, nerve attributes
# with an include; every 10th has its own unit.tmpl, every 20th a timer.
for ((s = 0; s < services; s++)); do
  dir=$env_dir/services/svc$s
  mkdir -p "$dir/attributes"
  {
    echo "containers: [aci.example.com/pod-svc$s:1.0-$s]"
    echo "mountPoints: [{name: data, path: /data}]"
    echo "nodes:"
    for ((n = 0; n < nodes; n++)); do
      echo "  - hostname: host$s-$n"
      echo "    ip: 10.$((s / 250)).$((s % 250)).$n"
      echo "    fleet: [MachineMetadata=name=r$s-srv$n]"
    done
  } > "$dir/service-manifest.yml"
  cat > "$dir/attributes/nerve.yml" <<YAML
include: [nerve.base]
override:
  nerve:
    services:
      - name: svc$s-read
        port: $((3000 + s))
        reporters: [{type: zookeeper, path: /services/svc$s/read}]
        checks: [{type: sql, driver: mysql, datasource: "mon:mon@tcp(127.0.0.1:3306)/"}]
      - name: svc$s-write
        port: $((3000 + s))
        reporters: [{type: zookeeper, path: /services/svc$s/write}]
        haproxyServerOptions: backup
  app: {name: svc$s, threads: 8, cache: {size: 512M, ttl: 60}}
YAML
  if ((s % 10 == 0)); then
    cat > "$dir/unit.tmpl" <<'TMPL'
{% include "header.partial" %}
[Service]
{{ environment_lines | safe }}
ExecStart=/bin/sh -c 'export HERD_ATTRIBUTES="{{ attributes_from_environment | safe }}"; exec /usr/bin/podman run --rm --name {{ unit_name }} --env HERD_ATTRIBUTES {{ images.0.reference }}'
[X-Fleet]
{% for line in fleet_lines %}{{ line }}
{% endfor %}
TMPL
  fi
  if ((s % 20 == 0)); then
    printf '[Timer]\nOnCalendar=daily\n' > "$dir/unit.timer.tmpl"
  fi
done

# BENCH_OUT=/dev/shm/x puts the output on another file system (tmpfs: no disk).
out=${BENCH_OUT:-$work/units/bench}
measure() {
  /usr/bin/time -v "$herd" gen "$env_dir" --out "$out" 2> "$work/time.txt" || { cat "$work/time.txt"; exit 1; }
  wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/time.txt")
  user=$(sed -n 's/.*User time (seconds): //p' "$work/time.txt")
  sys=$(sed -n 's/.*System time (seconds): //p' "$work/time.txt")
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time.txt")
  echo "$1: wall $wall, cpu ${user}s user + ${sys}s sys, max RSS $((rss / 1024)) MB"
}
echo "herd gen: $services services x $nodes nodes ($(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg))"
measure "first run (empty output)"
measure "unchanged rerun"
sed -i 's/level: info/level: debug/' "$env_dir/attributes/env.yml"
measure "rerun with every unit changed"
echo "$(find "$out" -type f | wc -l) files, $(du -sh "$out" | cut -f1)"
# The file system's own floor, in the same run: copying the generated tree
# to a new directory beside it and flushing it, as herd does (one syncfs).
# On a disk this is most of herd's time: creating 10,000 inodes costs 1-4 s
# on a journal-less ext4 that recently deleted files (the kernel checks each
# candidate inode's deletion time), whatever writes them.
floor_start=$(date +%s.%N)
cp -r "$out" "$out.copy" && sync -f "$out.copy"
floor=$(awk -v a="$floor_start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
rm -rf "$out.copy"
printf 'file system floor (cp -r of the units + sync): %.2f s\n' "$floor"
[ -n "${BENCH_OUT:-}" ] && rm -rf "$out"
true
