//! Be Quiet and Die in Peace end to end: the example aci/aci-sessions (warms
//! up for 2 s, then keeps three client sessions open), built by `herd
//! build` and run by podman. herd-init says READY=1 only once its
//! readiness command succeeds, `/herd/init ready` follows, a failing
//! stable command is reported, and a stop runs the prestop script, waits
//! for the sessions to drain and only then sends the app SIGTERM, within
//! the stop timeout.

mod common;

use common::*;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const NAME: &str = "aci.example.com/aci-sessions:1-1";

/// `oci:STORE:NAME` of the example, built once for all tests of this file
/// (under cargo's target/tmp: podman refuses upper case in the names it
/// derives from the store's path).
fn image() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("herd-lifecycle-test");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let store = work.join("store");
        build_examples(&store, &["aci-busybox", "aci-sessions"]);
        oci_ref(&store, NAME)
    })
}

/// A detached container of the example, removed when dropped.
struct Container(String);

impl Container {
    /// `podman run -d` with `options`; `NOTIFY_SOCKET` for podman itself
    /// when `notify` is given.
    fn start(options: &[&str], notify: Option<&Path>) -> Container {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "herd-lifecycle-test-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        );
        let _ = podman().args(["rm", "-f", &name]).output();
        let mut command = podman();
        command.args(["run", "-d", "--name", &name]).args(options);
        match notify {
            Some(socket) => command.env("NOTIFY_SOCKET", socket),
            None => command.env_remove("NOTIFY_SOCKET"),
        };
        run_ok(command.arg(image()));
        Container(name)
    }

    /// The container's log lines with their times (podman's k8s-file
    /// log records each line's arrival), stdout and stderr interleaved.
    fn log(&self) -> Vec<(f64, String)> {
        let output = podman().args(["logs", "-t", &self.0]).output().unwrap();
        let both = text(&output.stdout) + &text(&output.stderr);
        let mut lines: Vec<(f64, String)> = both
            .lines()
            .filter_map(|line| {
                let (stamp, text) = line.split_once(' ')?;
                let time = humantime::parse_rfc3339(stamp).ok()?;
                let seconds = time
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?
                    .as_secs_f64();
                Some((seconds, text.to_string()))
            })
            .collect();
        lines.sort_by(|a, b| a.0.total_cmp(&b.0));
        lines
    }

    fn log_text(&self) -> String {
        self.log()
            .iter()
            .map(|(t, l)| format!("{t:.3} {l}\n"))
            .collect()
    }

    /// The time of the first log line holding `needle`; fails the test
    /// if there is none.
    fn time_of(&self, log: &[(f64, String)], needle: &str) -> f64 {
        log.iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("no `{needle}` in the log:\n{}", self.log_text()))
    }

    fn wait_for_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().iter().any(|(_, l)| l.contains(needle)) {
            assert!(
                Instant::now() < deadline,
                "`{needle}` never appeared in the log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ready_check(&self) -> std::process::Output {
        podman()
            .args(["exec", &self.0, "/herd/init", "ready"])
            .output()
            .unwrap()
    }

    fn inspect(&self, format: &str) -> String {
        run_ok(podman().args(["inspect", "--format", format, &self.0]))
            .trim()
            .to_string()
    }

    fn wait_exited(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.inspect("{{.State.Status}}") != "exited" {
            assert!(
                Instant::now() < deadline,
                "the container did not stop:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.0]).output();
    }
}

/// The datagrams `socket` receives until one holds `needle` (within
/// `within`), each with the time it arrived.
fn receive_until(
    socket: &UnixDatagram,
    needle: &str,
    within: Duration,
) -> Vec<(std::time::SystemTime, String)> {
    let deadline = Instant::now() + within;
    let mut received = vec![];
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no datagram with `{needle}` within {within:?}; received {received:?}"
        );
        socket.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = socket.recv(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
            let done = text.contains(needle);
            received.push((std::time::SystemTime::now(), text));
            if done {
                return received;
            }
        }
    }
}

fn unix_seconds(time: std::time::SystemTime) -> f64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn ready_is_notified_through_podman_only_once_the_readiness_command_succeeds() {
    let work = tempfile::tempdir().unwrap();
    let socket_path = work.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let container = Container::start(&["--sdnotify=container"], Some(&socket_path));
    // Warming up: not ready.
    let before = container.ready_check();
    assert_eq!(
        before.status.code(),
        Some(1),
        "{}",
        text(&before.stdout) + &text(&before.stderr)
    );
    assert_eq!(text(&before.stdout).trim(), "not ready");

    let received = receive_until(&socket, "READY=1", Duration::from_secs(30));
    let ready_at = unix_seconds(received.last().unwrap().0);
    let log = container.log();
    let warm = container.time_of(&log, "app: warm");
    let warming = container.time_of(&log, "app: warming up");
    assert!(
        warm <= ready_at + 0.05,
        "READY=1 at {ready_at:.3} came before the app was warm at {warm:.3}:\n{}",
        container.log_text()
    );
    assert!(
        ready_at - warming >= 1.9,
        "READY=1 only {:.3} s after the app started",
        ready_at - warming
    );
    container.time_of(&log, "herd-init: ready after");

    let after = container.ready_check();
    assert!(after.status.success(), "{}", text(&after.stderr));
    assert_eq!(text(&after.stdout).trim(), "ready");
}

#[test]
fn an_unstable_app_is_reported_on_an_abstract_notify_socket() {
    // The init's own protocol, without podman's proxy in between (it only
    // passes READY=1 on): the host network shares abstract sockets.
    let name = format!("herd-lifecycle-test-{}", std::process::id());
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&address).unwrap();
    let notify = format!("NOTIFY_SOCKET=@{name}");
    let container = Container::start(&["--sdnotify=ignore", "--env", &notify], None);
    let received = receive_until(&socket, "READY=1", Duration::from_secs(30));
    assert!(
        received.last().unwrap().1.contains("STATUS=ready"),
        "{received:?}"
    );
    run_ok(podman().args(["exec", &container.0, "touch", "/run/sessions/slow"]));
    let received = receive_until(&socket, "STATUS=unstable", Duration::from_secs(10));
    assert!(
        received
            .last()
            .unwrap()
            .1
            .contains("the stable command failed with status 1"),
        "{received:?}"
    );
    container.wait_for_log(
        "herd-init: stable: the stable command failed with status 1",
        Duration::from_secs(5),
    );
    run_ok(podman().args(["exec", &container.0, "rm", "/run/sessions/slow"]));
    receive_until(&socket, "STATUS=ready, stable", Duration::from_secs(10));
    // Still ready: stability is reported, not a reason to leave.
    assert!(container.ready_check().status.success());
}

#[test]
fn podman_stop_runs_prestop_waits_for_the_drain_then_stops_the_app_and_its_children() {
    let container = Container::start(&["--env", "HERD_STOP_TIMEOUT=30"], None);
    container.wait_for_log("app: session 3 opened", Duration::from_secs(30));
    container.wait_for_log("herd-init: ready after", Duration::from_secs(5));
    let started = Instant::now();
    run_ok(podman().args(["stop", "-t", "30", &container.0]));
    let took = started.elapsed();
    let log = container.log();
    let order = [
        "herd-init: stop: SIGTERM received",
        "prestop: weight 0",
        "app: session 1 closed",
        "app: session 3 closed",
        "herd-init: stop: drained after",
        "herd-init: stop: SIGTERM to the app's process group",
        "app: got TERM with 0 sessions open",
        "herd-init: stop: the app exited with status 0",
        "flusher: flushed",
        "herd-init: stop: every process ended",
    ];
    let times: Vec<f64> = order.iter().map(|n| container.time_of(&log, n)).collect();
    // The app's lines (stdout) and the init's (stderr) come through two
    // pipes: lines written within a few milliseconds may swap.
    for (i, pair) in times.windows(2).enumerate() {
        assert!(
            pair[0] <= pair[1] + 0.05,
            "`{}` came after `{}`:\n{}",
            order[i],
            order[i + 1],
            container.log_text()
        );
    }
    // Three sessions closing one a second: the app was stopped only then.
    assert!(
        times[5] - times[0] >= 2.5,
        "the app got SIGTERM {:.2} s after the stop request:\n{}",
        times[5] - times[0],
        container.log_text()
    );
    // The flusher outlived the app's main process by a second; the init
    // waited for it before exiting, well before podman's KILL.
    assert!(
        times[9] - times[8] < 0.5 && times[8] - times[6] >= 0.9,
        "{}",
        container.log_text()
    );
    assert!(took < Duration::from_secs(15), "podman stop took {took:?}");
    assert_eq!(container.inspect("{{.State.ExitCode}}"), "0");
}

#[test]
fn a_short_stop_timeout_cuts_the_drain_and_still_stops_the_app_before_the_kill() {
    let container = Container::start(&["--env", "HERD_STOP_TIMEOUT=3"], None);
    container.wait_for_log("herd-init: ready after", Duration::from_secs(30));
    container.wait_for_log("app: session 3 opened", Duration::from_secs(5));
    let started = Instant::now();
    run_ok(podman().args(["stop", "-t", "3", &container.0]));
    let took = started.elapsed();
    let log = container.log();
    let received = container.time_of(&log, "herd-init: stop: SIGTERM received");
    let spent = container.time_of(&log, "herd-init: stop: the drain budget of 2.00 s is spent");
    let term = container.time_of(&log, "app: got TERM with");
    let exited = container.time_of(&log, "herd-init: stop: the app exited with status 0");
    assert!(
        (1.9..2.6).contains(&(spent - received)) && term + 0.05 >= spent && exited - received < 3.0,
        "{}",
        container.log_text()
    );
    // Sessions were still open: the budget, not the drain, ended the wait.
    assert!(
        !container.log_text().contains("with 0 sessions open"),
        "{}",
        container.log_text()
    );
    assert!(took < Duration::from_secs(6), "podman stop took {took:?}");
    // The app's own status, not the runtime's SIGKILL (137).
    assert_eq!(container.inspect("{{.State.ExitCode}}"), "0");
}

#[test]
fn a_second_sigterm_skips_the_drain() {
    let container = Container::start(&["--env", "HERD_STOP_TIMEOUT=60"], None);
    container.wait_for_log("herd-init: ready after", Duration::from_secs(30));
    container.wait_for_log("app: session 3 opened", Duration::from_secs(5));
    run_ok(podman().args(["kill", "--signal", "TERM", &container.0]));
    container.wait_for_log("prestop: weight 0", Duration::from_secs(5));
    run_ok(podman().args(["kill", "--signal", "TERM", &container.0]));
    container.wait_exited(Duration::from_secs(10));
    let log = container.log();
    let again = container.time_of(
        &log,
        "herd-init: stop: SIGTERM again: skipping to the app's stop",
    );
    let term = container.time_of(&log, "app: got TERM with");
    assert!(term + 0.05 >= again, "{}", container.log_text());
    assert!(
        !container.log_text().contains("with 0 sessions open"),
        "{}",
        container.log_text()
    );
    assert_eq!(container.inspect("{{.State.ExitCode}}"), "0");
}

#[test]
fn a_readiness_timeout_stops_the_container_with_its_own_exit_code() {
    // The app takes 60 s to warm up; the image's readiness timeout is 5 s.
    let container = Container::start(&["--env", "WARMUP=60"], None);
    let started = Instant::now();
    container.wait_exited(Duration::from_secs(30));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(container.inspect("{{.State.ExitCode}}"), "124");
    let log = container.log_text();
    assert!(
        log.contains("error: the app was not ready after 5.00 s: the readiness command `/bin/test -e /run/sessions/warm` never succeeded; stopping it (exit status 124)"),
        "{log}"
    );
    assert!(!log.contains("herd-init: ready after"), "{log}");
}

#[test]
fn another_command_than_the_image_app_is_ready_at_once() {
    // `podman run IMAGE sh` must not wait for (or be stopped by) the
    // readiness of the image's app.
    let output = podman()
        .args(["run", "--rm", "--env", "LOG_LEVEL=debug", image()])
        .args(["/bin/sh", "-c", "sleep 0.5; /herd/init ready"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert!(
        text(&output.stderr).contains("herd-init: ready after"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn herd_inspect_shows_the_readiness_and_stop_settings() {
    image();
    let store = Path::new(env!("CARGO_TARGET_TMPDIR")).join("herd-lifecycle-test/store");
    let shown: serde_json::Value = serde_json::from_str(&run_ok(
        herd().args(["inspect", NAME, "--store"]).arg(&store),
    ))
    .unwrap();
    assert_eq!(
        shown["lifecycle"],
        serde_json::json!({
            "readiness": {"exec": ["/bin/test", "-e", "/run/sessions/warm"], "interval": "200ms", "timeout": "5s"},
            "stable": {"exec": "test ! -e /run/sessions/slow", "period": "1s"},
            "drained": {"exec": "test -z \"$(ls /run/sessions/open)\"", "interval": "200ms"},
            "stopSignal": "SIGTERM",
        })
    );
    // An image without them says what the init does instead.
    let base: serde_json::Value = serde_json::from_str(&run_ok(
        herd()
            .args(["inspect", "aci.example.com/aci-busybox:1.36-1", "--store"])
            .arg(&store),
    ))
    .unwrap();
    assert_eq!(
        base["lifecycle"]["readiness"],
        "none: ready once the app started"
    );
}

#[test]
fn kube_play_of_a_pod_returns_once_its_apps_are_ready() {
    needs_podman_pods();
    needs(&["skopeo"]); // herd install
    image();
    let work = workdir();
    let store = Path::new(env!("CARGO_TARGET_TMPDIR")).join("herd-lifecycle-test/store");
    let pod_dir = work.path().join("pod-sessions");
    std::fs::create_dir_all(&pod_dir).unwrap();
    // The pod's app inherits the image's readiness; a second app has none.
    std::fs::write(
        pod_dir.join("pod-manifest.yml"),
        format!(
            "name: aci.example.com/pod-sessions:1-1\npod:\n  apps:\n    - name: sessions\n      dependencies: [{NAME}]\n    - name: idle\n      dependencies: [aci.example.com/aci-busybox:1.36-1]\n      app: {{exec: [/bin/sleep, '1000']}}\n"
        ),
    )
    .unwrap();
    run_ok(herd().arg("build").arg(&pod_dir).arg("--store").arg(&store));
    let pod = "aci.example.com/pod-sessions:1-1";
    run_ok(herd().args(["install", pod, "--store"]).arg(&store));
    let document = run_ok(herd().args(["kube", pod, "--store"]).arg(&store));
    assert!(
        document.contains("io.containers.sdnotify: container")
            && document.contains("        - /herd/init\n        - ready\n"),
        "{document}"
    );
    let file = work.path().join("pod.yaml");
    std::fs::write(&file, &document).unwrap();
    struct Played;
    impl Drop for Played {
        fn drop(&mut self) {
            let _ = podman()
                .args(["pod", "rm", "--force", "--ignore", "pod-sessions"])
                .output();
        }
    }
    let _ = podman()
        .args(["pod", "rm", "--force", "--ignore", "pod-sessions"])
        .output();
    let _played = Played;
    let started = Instant::now();
    run_ok(
        podman()
            .args(["kube", "play", "--network", "host"])
            .arg(&file)
            .env_remove("NOTIFY_SOCKET"),
    );
    let took = started.elapsed();
    // podman waited for the init's READY=1, sent after the 2 s warm-up.
    assert!(
        took >= Duration::from_millis(1900),
        "kube play took {took:?}"
    );
    let ready = podman()
        .args(["exec", "pod-sessions-sessions", "/herd/init", "ready"])
        .output()
        .unwrap();
    assert!(ready.status.success(), "{}", text(&ready.stdout));
}
