//! Build scripts in a box: their own network (no way to the host's
//! loopback), no raw sockets, pids and memory limits, a timeout, signals
//! that stop and clean everything, host secrets hidden from builders, and
//! output lines labelled by image when several build at once.
//!
//! Most images here have only a `builder` script and no dependencies: the
//! script then runs on the host's system directories, read-only, which is
//! also what a hostile builder would use.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// An image directory with one builder script (run by /bin/sh) and the
/// given manifest lines after its name.
fn builder_image(dir: &Path, name: &str, manifest: &str, script: &str) {
    needs_build_sandbox();
    std::fs::create_dir_all(dir.join("runlevels/builder")).unwrap();
    std::fs::write(
        dir.join("aci-manifest.yml"),
        format!("name: aci.example.com/{name}:1\n{manifest}"),
    )
    .unwrap();
    std::fs::write(dir.join("runlevels/builder/10-script.sh"), script).unwrap();
}

fn build(dir: &Path, store: &Path) -> Command {
    let mut command = herd();
    command.arg("build").arg(dir).arg("--store").arg(store);
    command
}

/// A TCP service on the host's 127.0.0.1 counting the connections it
/// accepts (each is answered and closed).
struct Service {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Service {
    fn start() -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = std::io::Write::write_all(&mut stream, b"secret-from-the-host\n");
            }
        });
        Service { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A script that tries the service at the host's loopback and at the
/// private network's gateway (which slirp4netns could map to it), with
/// bash's /dev/tcp, tries to open a packet socket (what captures traffic)
/// with the host's python3, and prints its capabilities.
fn reach_script(port: u16) -> String {
    format!(
        "for address in 127.0.0.1 10.0.2.2; do\n\
         if timeout 5 bash -c \"exec 3<>/dev/tcp/$address/{port}; head -n 1 <&3\"; then echo reached $address; else echo unreachable $address; fi\n\
         done\n\
         python3 -c 'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))' 2>/dev/null && echo packet-socket-opened || echo packet-socket-refused\n\
         grep CapEff /proc/self/status\n"
    )
}

/// Whether the CapEff line of `output` has CAP_NET_RAW (bit 13).
fn has_net_raw(output: &str) -> bool {
    let line = output
        .lines()
        .find(|l| l.contains("CapEff:"))
        .unwrap_or_else(|| panic!("no CapEff line in:\n{output}"));
    let hex = line.rsplit(|c: char| c.is_whitespace()).next().unwrap();
    u64::from_str_radix(hex, 16).unwrap() & (1 << 13) != 0
}

#[test]
fn a_build_script_reaches_the_hosts_loopback_only_when_host_networking_is_asked() {
    tool("slirp4netns");
    tool("python3");
    let service = Service::start();
    let work = workdir();
    let store = work.path().join("store");
    let dir = work.path().join("reach");
    builder_image(&dir, "reach", "", &reach_script(service.port));

    let output = build(&dir, &store).output().unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("unreachable 127.0.0.1"), "{stderr}");
    assert!(stderr.contains("unreachable 10.0.2.2"), "{stderr}");
    assert!(!stderr.contains("secret-from-the-host"), "{stderr}");
    assert_eq!(service.accepted(), 0, "the script connected:\n{stderr}");
    assert!(!has_net_raw(&stderr), "CAP_NET_RAW by default:\n{stderr}");
    assert!(stderr.contains("packet-socket-refused"), "{stderr}");

    // Asked for on the command line...
    let output = build(&dir, &store)
        .args(["--network", "host", "--no-cache"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("secret-from-the-host"), "{stderr}");
    assert!(stderr.contains("reached 127.0.0.1"), "{stderr}");
    assert_eq!(service.accepted(), 1);
    assert!(!has_net_raw(&stderr), "CAP_NET_RAW with --network host");
    assert!(stderr.contains("packet-socket-refused"), "{stderr}");

    // ...or in the manifest.
    let manifested = work.path().join("reach-host");
    builder_image(
        &manifested,
        "reach-host",
        "build:\n  sandbox:\n    network: host\n",
        &reach_script(service.port),
    );
    let stderr = text(&build(&manifested, &store).output().unwrap().stderr);
    assert!(stderr.contains("reached 127.0.0.1"), "{stderr}");
    assert_eq!(service.accepted(), 2);
}

#[test]
fn herd_env_variables_still_reach_a_script_with_its_own_network() {
    let work = workdir();
    let dir = work.path().join("env");
    builder_image(
        &dir,
        "env",
        "",
        "echo \"proxy=$http_proxy\"\ngrep nameserver /etc/resolv.conf\n",
    );
    let output = build(&dir, &work.path().join("store"))
        .env("HERD_ENV_http_proxy", "http://proxy.example:3128")
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("proxy=http://proxy.example:3128"),
        "{stderr}"
    );
    // The private network's DNS forwarder.
    assert!(stderr.contains("nameserver 10.0.2.3"), "{stderr}");
}

/// The pids of processes whose command line is exactly `args`.
fn processes_running(args: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect()
}

#[test]
fn a_script_forking_5000_sleeps_is_stopped_by_the_pids_limit() {
    let work = workdir();
    let dir = work.path().join("forks");
    // dash stops at the first fork refused; 5,000 are never reached.
    builder_image(
        &dir,
        "forks",
        "build:\n  sandbox:\n    pids: 64\n",
        "i=0\nwhile [ $i -lt 5000 ]; do sleep 4241 & i=$((i+1)); done\necho all-5000-started\nwait\n",
    );
    let started = Instant::now();
    let output = run_fails(&mut build(&dir, &work.path().join("store")));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("builder script 10-script.sh failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("it reached the pids limit of 64 processes"),
        "{stderr}"
    );
    assert!(!stderr.contains("all-5000-started"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(processes_running(&["sleep", "4241"]), Vec::<u32>::new());

    // The command line wins over the manifest.
    let output = run_fails(build(&dir, &work.path().join("store")).args(["--pids-limit", "32"]));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("it reached the pids limit of 32 processes"),
        "{stderr}"
    );
}

#[test]
fn a_script_over_the_memory_limit_fails_naming_the_limit() {
    let work = workdir();
    let dir = work.path().join("memory");
    // 200 MB in a shell variable: far past 32 MiB.
    builder_image(
        &dir,
        "memory",
        "",
        "big=$(head -c 200000000 /dev/zero | tr '\\0' a)\necho survived ${#big}\n",
    );
    let output =
        run_fails(build(&dir, &work.path().join("store")).args(["--memory-limit", "32MiB"]));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("it reached the memory limit of 32.0 MiB"),
        "{stderr}"
    );
    assert!(!stderr.contains("survived"), "{stderr}");
}

#[test]
fn a_script_past_its_timeout_is_killed_and_named() {
    let work = workdir();
    let dir = work.path().join("slow");
    builder_image(&dir, "slow", "", "echo waiting\nsleep 4242\n");
    let started = Instant::now();
    let output =
        run_fails(build(&dir, &work.path().join("store")).args(["--script-timeout", "2s"]));
    let elapsed = started.elapsed();
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("builder script 10-script.sh timed out: still running after 2s"),
        "{stderr}"
    );
    assert!(stderr.contains("runlevel builder"), "{stderr}");
    assert!(stderr.contains("  | waiting"), "{stderr}");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    assert_eq!(processes_running(&["sleep", "4242"]), Vec::<u32>::new());

    // The manifest's timeout, in another unit.
    builder_image(
        &dir,
        "slow",
        "build:\n  sandbox:\n    timeout: 1s\n",
        "sleep 4242\n",
    );
    let stderr = text(&run_fails(&mut build(&dir, &work.path().join("store"))).stderr);
    assert!(stderr.contains("still running after 1s"), "{stderr}");
}

#[test]
fn a_bad_sandbox_key_is_an_error_at_its_line() {
    let work = workdir();
    let dir = work.path().join("bad");
    builder_image(
        &dir,
        "bad",
        "build:\n  sandbox:\n    memory: lots\n",
        "true\n",
    );
    let stderr = text(&run_fails(&mut build(&dir, &work.path().join("store"))).stderr);
    assert!(stderr.contains("aci-manifest.yml:4"), "{stderr}");
    assert!(stderr.contains("\"lots\" is not a size"), "{stderr}");
}

/// The runc containers of herd process `pid`.
fn containers_of(pid: u32) -> Vec<String> {
    let out = run_ok(Command::new(tool("runc")).args(["list", "--quiet"]));
    let prefix = format!("herd-build-{pid}-");
    out.lines()
        .filter(|l| l.starts_with(&prefix))
        .map(String::from)
        .collect()
}

/// A `herd build` of `dir` in its own process group, its stderr lines sent
/// as they come.
fn start_build(dir: &Path, store: &Path) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = build(dir, store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    (child, receiver)
}

/// Waits (at most a minute) for a line containing `needle`; the lines seen.
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!("no line with {needle:?}; saw:\n{}", seen.join("\n"));
}

/// Waits for `child` at most `limit`; its exit code.
fn wait_at_most(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn sigint_or_sigterm_during_a_script_stops_and_removes_everything() {
    let work = workdir();
    let store = work.path().join("store");
    // The image root is an overlay (a dependency), the builder's too: two
    // build roots mounted while the script runs.
    let base = work.path().join("base");
    busybox_image(&base, "name: aci.example.com/signal-base:1\n");
    run_ok(&mut build(&base, &store));
    let dir = work.path().join("long");
    std::fs::create_dir_all(dir.join("runlevels/build")).unwrap();
    std::fs::write(
        dir.join("aci-manifest.yml"),
        "name: aci.example.com/long:1\naci:\n  dependencies: [aci.example.com/signal-base:1]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("runlevels/build/10-long.sh"),
        "echo long-script-started\nsleep 4243 &\nsleep 4243\n",
    )
    .unwrap();

    for (signal, code) in [
        (nix::sys::signal::Signal::SIGINT, 130),
        (nix::sys::signal::Signal::SIGTERM, 143),
    ] {
        let (mut child, lines) = start_build(&dir, &store);
        let pid = child.id();
        wait_for_line(&lines, "long-script-started");
        assert_eq!(containers_of(pid).len(), 1);
        assert!(!mounted_under(&store).is_empty());
        assert!(!tmp_entries(&store).is_empty());
        let sent = Instant::now();
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
        let exit = wait_at_most(&mut child, Duration::from_secs(15));
        let took = sent.elapsed();
        let rest: Vec<String> = lines.try_iter().collect();
        assert_eq!(exit, Some(code), "after {signal}: {rest:?}");
        assert!(took < Duration::from_secs(15), "{took:?}");
        let interrupted: Vec<&String> = rest.iter().filter(|l| l.contains("interrupted")).collect();
        assert_eq!(interrupted.len(), 1, "{rest:?}");
        assert!(interrupted[0].contains(&signal.to_string()), "{rest:?}");
        assert_eq!(containers_of(pid), Vec::<String>::new());
        assert_eq!(mounted_under(&store), Vec::<String>::new());
        assert_eq!(tmp_entries(&store), Vec::<String>::new());
        assert_eq!(processes_running(&["sleep", "4243"]), Vec::<u32>::new());
    }
}

#[test]
fn herd_clean_stops_the_script_containers_of_a_killed_herd() {
    let work = workdir();
    let store = work.path().join("store");
    let dir = work.path().join("orphan");
    builder_image(&dir, "orphan", "", "echo orphan-started\nsleep 4244\n");
    let (mut child, lines) = start_build(&dir, &store);
    let pid = child.id();
    wait_for_line(&lines, "orphan-started");
    // SIGKILL: herd cleans nothing.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(containers_of(pid).len(), 1);
    assert_eq!(processes_running(&["sleep", "4244"]).len(), 1);
    let out = run_ok(herd().args(["clean", "--store"]).arg(&store));
    assert!(out.contains("and 1 build script containers"), "{out}");
    assert_eq!(containers_of(pid), Vec::<String>::new());
    assert_eq!(processes_running(&["sleep", "4244"]), Vec::<u32>::new());
}

#[test]
fn a_builder_does_not_see_the_hosts_secrets() {
    let work = workdir();
    let store = work.path().join("store");
    let dir = work.path().join("secrets");
    assert!(
        std::fs::metadata("/etc/shadow").unwrap().len() > 0,
        "the host has an empty /etc/shadow: nothing to test"
    );
    builder_image(
        &dir,
        "secrets",
        "",
        "for f in /etc/shadow /etc/gshadow; do\n\
         if [ -s $f ]; then echo readable $f; cp $f $ROOTFS/; else echo hidden $f; fi\n\
         done\n\
         echo root-holds: $(ls -A /root) home-holds: $(ls -A /home)\n\
         for key in /etc/ssh/*key*; do [ -s \"$key\" ] && echo readable $key; done\n\
         true\n",
    );
    let output = build(&dir, &store).output().unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("hidden /etc/shadow"), "{stderr}");
    assert!(stderr.contains("hidden /etc/gshadow"), "{stderr}");
    assert!(!stderr.contains("readable"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.ends_with("| root-holds: home-holds:")),
        "/root or /home not empty: {stderr}"
    );
}

#[test]
fn output_lines_carry_the_image_name_when_several_build_at_once() {
    let work = workdir();
    let store = work.path().join("store");
    let (a, b) = (work.path().join("one"), work.path().join("two"));
    builder_image(&a, "label-one", "", "echo line-from-one\n");
    builder_image(&b, "label-two", "", "echo line-from-two\n");
    let output = herd()
        .arg("build")
        .arg(&a)
        .arg(&b)
        .args(["--jobs", "2", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("label-one | line-from-one"), "{stderr}");
    assert!(stderr.contains("label-two | line-from-two"), "{stderr}");

    // One image: no label.
    let output = build(&a, &store).arg("--no-cache").output().unwrap();
    let stderr = text(&output.stderr);
    assert!(stderr.contains("  | line-from-one"), "{stderr}");
    assert!(!stderr.contains("label-one | "), "{stderr}");
}
