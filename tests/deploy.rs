//! `herd deploy` and `herd status` end to end, on real hosts: each test
//! starts its own three test hosts (testhosts.sh: containers running
//! systemd and sshd on 127.0.0.1) and deploys an environment of two
//! services onto them over ssh. `slow` has `concurrentUpdater: 1` and a
//! readiness that takes 2 s (Type=notify, `systemd-notify --ready` after a
//! sleep); each start and ready is logged with its time on the host, so
//! the tests see which units restarted and whether batches overlapped.
//! `agent` is Global.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SLOW_UNIT: &str = r#"[Unit]
Description={{ unit_name }}
[Service]
Type=notify
NotifyAccess=all
ExecStart=/bin/sh -c 'echo "start $$(date +%%s.%%N) {{ version }}" >>/var/log/{{ unit_name }}.log; sleep {{ delay }}; {% if fail is defined %}exit 3;{% endif %} systemd-notify --ready; echo "ready $$(date +%%s.%%N) {{ version }}" >>/var/log/{{ unit_name }}.log; exec sleep infinity'
[Install]
WantedBy=multi-user.target
[X-Fleet]
{% for line in fleet_lines -%}
{{ line }}
{% endfor -%}
"#;

const AGENT_UNIT: &str = "[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\n{% for line in fleet_lines -%}\n{{ line }}\n{% endfor -%}\n";

/// Appends one line per hook call to $HOOK_LOG; refuses a unit while the
/// file `refuse` exists in the environment.
const HOOK: &str = "#!/bin/sh\necho \"$HERD_HOOK $HERD_ENV $HERD_SERVICE ${HERD_UNIT:--} ${HERD_MACHINE:--} ${HERD_OUTCOME:--}\" >>\"$HOOK_LOG\"\nif [ \"$HERD_HOOK\" = before-unit ] && [ -e refuse ]; then exit 1; fi\n";

/// An environment `t` with machines `hosts` (metadata role=app) and the
/// services slow (one node per host, pinned by name) and agent (Global).
struct Env {
    work: Workdir,
    hosts: TestHosts,
}

impl Env {
    fn new(prefix: &str) -> Env {
        let work = workdir();
        let names: Vec<String> = (1..=3).map(|i| format!("{prefix}{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let hosts = TestHosts::up(&refs, work.path());
        let env = Env { work, hosts };
        let machines: String = names
            .iter()
            .map(|n| format!("  - {{name: {n}, ssh: {n}, metadata: {{role: app}}}}\n"))
            .collect();
        env.write("config.yml", &format!("envName: t\nmachines:\n{machines}"));
        env.write("services/slow/unit.tmpl", SLOW_UNIT);
        env.write("services/agent/unit.tmpl", AGENT_UNIT);
        env.write(
            "services/agent/service-manifest.yml",
            "concurrentUpdater: 3\ncontainers: [aci.example.com/x:1]\nnodes:\n  - {hostname: all, fleet: [Global=true]}\n",
        );
        env.slow_nodes(&[("s1", "v1", ""), ("s2", "v1", ""), ("s3", "v1", "")]);
        env
    }

    fn dir(&self) -> PathBuf {
        self.work.path().join("env/t")
    }

    fn write(&self, path: &str, content: &str) {
        let path = self.dir().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// slow's nodes (hostname, version attribute, extra YAML), node i on host i.
    fn slow_nodes(&self, nodes: &[(&str, &str, &str)]) {
        let mut manifest =
            String::from("concurrentUpdater: 1\ncontainers: [aci.example.com/x:1]\nnodes:\n");
        for (i, (hostname, version, extra)) in nodes.iter().enumerate() {
            let number: usize = hostname[1..].parse().unwrap_or(i + 1);
            manifest.push_str(&format!(
                "  - {{hostname: {hostname}, version: {version}, delay: 2, fleet: [MachineMetadata=name={}]{extra}}}\n",
                self.host(number)
            ));
        }
        self.write("services/slow/service-manifest.yml", &manifest);
    }

    fn host(&self, number: usize) -> &str {
        &self.hosts.names[number - 1]
    }

    fn hooks(&self) -> PathBuf {
        for hook in [
            "before-service",
            "after-service",
            "before-unit",
            "after-unit",
        ] {
            self.write(&format!("hooks/{hook}"), HOOK);
            let path = self.dir().join("hooks").join(hook);
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        self.work.path().join("hooks.log")
    }

    fn herd(&self, command: &str, extra: &[&str]) -> Command {
        let mut c = herd();
        c.arg(command)
            .arg(self.dir())
            .args(extra)
            .env("HERD_SSH_CONFIG", &self.hosts.ssh_config)
            .env("HOOK_LOG", self.work.path().join("hooks.log"))
            .stdin(Stdio::null());
        c
    }

    fn deploy(&self, extra: &[&str]) -> Output {
        self.herd("deploy", extra).output().unwrap()
    }

    fn deploy_ok(&self, extra: &[&str]) -> String {
        let out = self.deploy(extra);
        assert!(
            out.status.success(),
            "deploy failed: {}\n{}",
            out.status,
            text(&out.stderr)
        );
        text(&out.stdout) + &text(&out.stderr)
    }

    fn plan(&self) -> Vec<String> {
        run_ok(&mut self.herd("deploy", &["--plan"]))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// (event, time, version) lines a slow unit logged on its host.
    fn events(&self, node: usize) -> Vec<(String, f64, String)> {
        let out = self
            .hosts
            .ssh(self.host(node), &format!("cat /var/log/t_slow_s{node}.log"));
        text(&out.stdout)
            .lines()
            .map(|l| {
                let parts: Vec<&str> = l.split_whitespace().collect();
                (
                    parts[0].to_string(),
                    parts[1].parse().unwrap(),
                    parts[2].to_string(),
                )
            })
            .collect()
    }

    fn lock_on(&self, node: usize) -> Option<String> {
        let out = self
            .hosts
            .ssh(self.host(node), "readlink /var/lib/herd/locks/t_slow");
        out.status
            .success()
            .then(|| text(&out.stdout).trim().to_string())
    }
}

fn assert_has(haystack: &str, needle: &str) {
    assert!(haystack.contains(needle), "no {needle:?} in:\n{haystack}");
}

#[test]
fn rollout_goes_in_batches_redeploys_what_changed_reports_status_and_prunes() {
    let env = Env::new("hda");
    let (h1, h2, h3) = (
        env.host(1).to_string(),
        env.host(2).to_string(),
        env.host(3).to_string(),
    );
    let hook_log = env.hooks();
    let mut expected: Vec<String> = [&h1, &h2, &h3]
        .iter()
        .map(|h| format!("t_agent_all.service -> {h} (new)"))
        .collect();
    for (i, h) in [&h1, &h2, &h3].iter().enumerate() {
        expected.push(format!("t_slow_s{}.service -> {h} (new)", i + 1));
    }
    assert_eq!(env.plan(), expected);
    assert_eq!(env.plan(), expected, "the plan is deterministic");

    env.deploy_ok(&[]);
    // One unit at a time, each started only once the one before was ready,
    // and each ready 2 s after its start (systemctl restart waited).
    let mut spans = vec![];
    for node in 1..=3 {
        let events = env.events(node);
        assert_eq!(events.len(), 2, "{events:?}");
        let (start, ready) = (events[0].1, events[1].1);
        assert!(
            ready - start >= 1.9,
            "node {node} ready after {:.2} s",
            ready - start
        );
        spans.push((start, ready));
    }
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "batches overlap: {spans:?}");
    }
    for h in [&h1, &h2, &h3] {
        assert_eq!(
            env.hosts
                .ssh_ok(h, "systemctl is-active t_agent_all.service")
                .trim(),
            "active"
        );
    }
    let hooks = std::fs::read_to_string(&hook_log).unwrap();
    let lines: Vec<&str> = hooks.lines().collect();
    assert_eq!(lines[0], "before-service t agent - - -");
    // agent goes out three at a time: three before-unit hooks, then three after.
    for (i, h) in [&h1, &h2, &h3].iter().enumerate() {
        assert_eq!(
            lines[1 + i],
            format!("before-unit t agent t_agent_all.service {h} -")
        );
        assert_eq!(
            lines[4 + i],
            format!("after-unit t agent t_agent_all.service {h} ok")
        );
    }
    assert!(lines.contains(&"after-service t slow - - ok"), "{hooks}");
    assert_eq!(lines.len(), 2 * (1 + 3 * 2 + 1), "{hooks}");

    // Nothing changed: nothing restarts.
    assert!(env.plan().iter().all(|l| l.ends_with("(unchanged)")));
    let out = env.deploy_ok(&[]);
    assert_has(&out, "slow: up to date");
    assert_eq!(env.events(1).len(), 2);

    // One attribute of one node: exactly its unit is redeployed. The
    // node also gains a secret: its unit is installed 0640, as gen writes it.
    env.slow_nodes(&[
        ("s1", "v1", ""),
        ("s2", "v2", ", db_password: hunter2-hunter2"),
        ("s3", "v1", ""),
    ]);
    let plan = env.plan();
    let changed: Vec<&String> = plan
        .iter()
        .filter(|l| !l.ends_with("(unchanged)"))
        .collect();
    assert_eq!(changed, [&format!("t_slow_s2.service -> {h2} (changed)")]);
    let agent_since = env.hosts.ssh_ok(
        &h1,
        "systemctl show -p ActiveEnterTimestampMonotonic t_agent_all.service",
    );
    env.deploy_ok(&["slow"]);
    assert_eq!(env.events(1).len(), 2);
    assert_eq!(env.events(3).len(), 2);
    let events = env.events(2);
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[3].2, "v2");
    let mode = |host: &str, path: &str| env.hosts.ssh_ok(host, &format!("stat -c %a {path}"));
    assert_eq!(
        mode(&h2, "/etc/systemd/system/t_slow_s2.service").trim(),
        "640"
    );
    assert_eq!(
        mode(&h1, "/etc/systemd/system/t_slow_s1.service").trim(),
        "644"
    );
    // The previous versions kept for rollback are root's only.
    assert_eq!(mode(&h2, "/var/lib/herd/previous").trim(), "700");
    // A secret unit left world-readable (as an older herd installed it)
    // is a change to deploy, though its content is the same.
    env.hosts
        .ssh_ok(&h2, "chmod 644 /etc/systemd/system/t_slow_s2.service");
    let plan = env.plan();
    assert!(
        plan.contains(&format!("t_slow_s2.service -> {h2} (changed)")),
        "{plan:?}"
    );
    env.deploy_ok(&["slow"]);
    assert_eq!(
        mode(&h2, "/etc/systemd/system/t_slow_s2.service").trim(),
        "640"
    );
    assert!(env.plan().iter().all(|l| l.ends_with("(unchanged)")));
    assert_eq!(
        env.hosts.ssh_ok(
            &h1,
            "systemctl show -p ActiveEnterTimestampMonotonic t_agent_all.service"
        ),
        agent_since
    );

    // status: all good, then a unit stopped by hand and one edited by hand.
    run_ok(&mut env.herd("status", &[]));
    env.hosts.ssh_ok(&h1, "systemctl stop t_slow_s1.service");
    env.hosts.ssh_ok(
        &h3,
        "echo '# edited' >>/etc/systemd/system/t_slow_s3.service",
    );
    let out = env.herd("status", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let row = |unit: &str, host: &str| -> String {
        table
            .lines()
            .find(|l| l.starts_with(unit) && l.contains(host))
            .unwrap_or_else(|| panic!("no {unit} on {host} in:\n{table}"))
            .to_string()
    };
    assert_has(&row("t_slow_s1.service", &h1), "up-to-date  inactive/dead");
    assert_has(&row("t_slow_s3.service", &h3), "different   active/running");
    assert_has(&row("t_slow_s2.service", &h2), "up-to-date  active/running");
    let json = env.herd("status", &["slow", "--json"]).output().unwrap();
    assert_eq!(json.status.code(), Some(1));
    let units: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let units = units.as_array().unwrap();
    assert_eq!(units.len(), 3, "only slow's units");
    assert_eq!(units[0]["unit"], "t_slow_s1.service");
    assert_eq!(units[0]["state"]["active"], "inactive");
    assert_eq!(units[2]["file"], "different");
    assert_eq!(units[1]["state"]["restarts"], 0);

    // A failing before-unit hook stops that unit's step.
    std::fs::write(env.dir().join("refuse"), "").unwrap();
    let out = env.deploy(&["slow"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_has(
        &text(&out.stderr),
        &format!("hook before-unit failed (exit status: 1) for t_slow_s3.service on {h3}"),
    );
    assert_has(
        &env.hosts
            .ssh_ok(&h3, "cat /etc/systemd/system/t_slow_s3.service"),
        "# edited",
    );
    std::fs::remove_file(env.dir().join("refuse")).unwrap();

    // --prune: s3's node is gone from the manifest, its unit from its host.
    env.hosts.ssh_ok(&h1, "systemctl start t_slow_s1.service");
    env.slow_nodes(&[("s1", "v1", ""), ("s2", "v2", "")]);
    let plan = env.plan();
    assert!(
        plan.contains(&format!(
            "t_slow_s3.service on {h3}: not generated any more, service slow (--prune removes it)"
        )),
        "{plan:?}"
    );
    let out = env.deploy_ok(&["--prune"]);
    assert_has(&out, &format!("slow: removed t_slow_s3.service from {h3}"));
    let gone = env
        .hosts
        .ssh(&h3, "test -e /etc/systemd/system/t_slow_s3.service");
    assert!(!gone.status.success(), "the unit file is still there");
    assert_eq!(
        env.hosts.ssh_ok(
            &h3,
            "systemctl show -p LoadState -p ActiveState t_slow_s3.service"
        ),
        "LoadState=not-found\nActiveState=inactive\n"
    );
    run_ok(&mut env.herd("status", &[]));

    // A deleted service: --prune removes its units from every machine.
    std::fs::remove_dir_all(env.dir().join("services/agent")).unwrap();
    let out = env.deploy_ok(&["--prune"]);
    for h in [&h1, &h2, &h3] {
        assert_has(
            &out,
            &format!("agent: removed t_agent_all.service from {h}"),
        );
        let left = env
            .hosts
            .ssh_ok(h, "ls /etc/systemd/system /var/lib/herd/deployed/t");
        assert!(!left.contains("agent"), "{h}: {left}");
    }
}

#[test]
fn a_unit_that_does_not_become_ready_is_rolled_back_and_the_rollout_stops() {
    let env = Env::new("hdb");
    let h2 = env.host(2).to_string();
    // A service with a timer: both files go out, the timer is what runs.
    env.write(
        "services/tick/service-manifest.yml",
        "containers: [aci.example.com/x:1]\nnodes:\n  - {hostname: k1, fleet: [MachineMetadata=name=hdb1]}\n",
    );
    env.write(
        "services/tick/unit.tmpl",
        "[Service]\nType=oneshot\nExecStart=/bin/true\n",
    );
    env.write(
        "services/tick/unit.timer.tmpl",
        "[Timer]\nOnCalendar=daily\n[Install]\nWantedBy=timers.target\n",
    );
    env.deploy_ok(&["slow", "tick"]);
    assert_eq!(
        env.hosts.ssh_ok(
            env.host(1),
            "systemctl is-active t_tick_k1.timer; systemctl is-enabled t_tick_k1.timer"
        ),
        "active\nenabled\n"
    );
    let status = run_ok(&mut env.herd("status", &["tick"]));
    assert_has(
        &status,
        "t_tick_k1.service  hdb1     up-to-date  active/waiting",
    );
    // Every node changes; s2's new version fails before it is ready.
    env.slow_nodes(&[
        ("s1", "v2", ""),
        ("s2", "v2", ", fail: 1"),
        ("s3", "v2", ""),
    ]);
    let old_s2 = env
        .hosts
        .ssh_ok(&h2, "cat /etc/systemd/system/t_slow_s2.service");
    let out = env.deploy(&["slow"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_has(&stderr, &format!("t_slow_s2.service on {h2} failed"));
    assert_has(
        &stderr,
        &format!("last journal lines of t_slow_s2.service on {h2}:"),
    );
    assert_has(&stderr, "status=3");
    assert_has(
        &stderr,
        &format!("t_slow_s2.service on {h2}: previous version restored and active"),
    );
    // s1 went first and runs v2; s2 runs v1 again; s3 was never touched.
    assert_eq!(env.events(1).last().unwrap().2, "v2");
    let events = env.events(2);
    let last = events.last().unwrap();
    assert_eq!(
        (last.0.as_str(), last.2.as_str()),
        ("ready", "v1"),
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| e.0 == "start").count(),
        3,
        "v1, failed v2, v1 again"
    );
    assert_eq!(env.events(3).len(), 2);
    assert_eq!(
        env.hosts
            .ssh_ok(&h2, "cat /etc/systemd/system/t_slow_s2.service"),
        old_s2
    );
    assert_eq!(
        env.hosts
            .ssh_ok(&h2, "systemctl is-active t_slow_s2.service")
            .trim(),
        "active"
    );
    assert!(
        env.lock_on(1).is_none() && env.lock_on(2).is_none(),
        "the lock stayed"
    );
}

#[test]
fn one_deploy_at_a_time_and_ctrl_c_releases_the_lock() {
    let env = Env::new("hdc");
    // A lock left by someone else: reported with its owner, never broken.
    env.hosts.ssh_ok(env.host(2), "mkdir -p /var/lib/herd/locks && ln -s 'ops@laptop pid 42 since 2026-01-01T00:00:00Z' /var/lib/herd/locks/t_slow");
    let out = env.deploy(&["slow"]);
    assert_eq!(out.status.code(), Some(2));
    assert_has(
        &text(&out.stderr),
        "lock on hdc2 is held by ops@laptop pid 42 since 2026-01-01T00:00:00Z",
    );
    assert!(
        env.lock_on(1).is_none(),
        "the lock it took on hdc1 was not given back"
    );
    let out = env.deploy(&["--unlock", "slow"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_has(
        &text(&out.stderr),
        "slow: removed the lock on hdc2 held by ops@laptop pid 42",
    );
    let out = env.deploy(&["--unlock", "slow"]);
    assert_eq!(out.status.code(), Some(2));
    assert_has(
        &text(&out.stderr),
        "service slow is not locked on any machine of t",
    );
    assert!(env.lock_on(2).is_none());

    // Two deploys: the second refuses, naming the first.
    let first = env
        .herd("deploy", &["slow"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.lock_on(3).is_none() {
        assert!(
            Instant::now() < deadline,
            "the first deploy never took its lock"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = env.deploy(&["slow"]);
    assert_eq!(out.status.code(), Some(2));
    assert_has(&text(&out.stderr), &format!("pid {} since", first.id()));

    // A third one waits for the lock (--lock-wait) instead of refusing.
    let third = env
        .herd("deploy", &["slow", "--lock-wait", "60"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Ctrl-C while s1 restarts: s1 finishes, the rest is left, the locks go
    // (the third deploy gets them; nobody else breaks a lock).
    while env.events(1).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first deploy never started s1"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = first.wait_with_output().unwrap();
    let first_exited = now();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert_has(&stderr, "interrupted");
    assert_eq!(env.events(1).len(), 2, "s1's restart was cut short");
    let out = third.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_has(&stderr, "slow: 2 units to update, 1 at a time");
    for node in [2, 3] {
        let events = env.events(node);
        assert!(
            events[0].1 >= first_exited - 0.5,
            "s{node} started before the first deploy stopped: {events:?}"
        );
    }
    for node in 1..=3 {
        assert!(env.lock_on(node).is_none(), "lock left on node {node}");
    }
    let plan = env.plan();
    let slow: Vec<&String> = plan.iter().filter(|l| l.starts_with("t_slow")).collect();
    assert_eq!(slow.len(), 3, "{plan:?}");
    assert!(slow.iter().all(|l| l.ends_with("(unchanged)")), "{plan:?}");
}

/// Seconds since the epoch: the test hosts share this machine's clock.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Needs no test host: a listener that accepts and never speaks.
#[test]
fn an_unreachable_machine_fails_with_a_timeout_and_an_impossible_placement_is_refused() {
    let work = workdir();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let env = work.path().join("env/t");
    std::fs::create_dir_all(env.join("services/web")).unwrap();
    std::fs::write(
        env.join("config.yml"),
        format!("envName: t\nmachines:\n  - {{name: mute, ssh: 'root@127.0.0.1:{port}', metadata: {{role: front}}}}\n"),
    )
    .unwrap();
    let manifest = env.join("services/web/service-manifest.yml");
    std::fs::write(&manifest, "containers: [aci.example.com/x:1]\nnodes:\n  - {hostname: w1, fleet: [MachineMetadata=role=front]}\n").unwrap();
    let started = Instant::now();
    let out = run_fails(
        herd()
            .args(["deploy", "--connect-timeout", "1", "--plan"])
            .arg(&env)
            .env("HERD_SSH_CONFIG", "/dev/null"),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_has(
        &stderr,
        &format!(
            "cannot reach machine mute (root@127.0.0.1:{port}) over ssh within 1 s (ConnectTimeout)"
        ),
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    drop(silent);

    std::fs::write(&manifest, "containers: [aci.example.com/x:1]\nnodes:\n  - {hostname: w1, fleet: [MachineMetadata=role=db]}\n").unwrap();
    let out = run_fails(herd().args(["deploy", "--plan"]).arg(&env));
    assert_has(
        &text(&out.stderr),
        "cannot place t_web_w1.service: no machine has MachineMetadata=role=db (machines: mute)",
    );
    std::fs::write(
        env.join("config.yml"),
        "envName: t\nmachines:\n  - {name: m, ssh: '-oProxyCommand=x'}\n",
    )
    .unwrap();
    let out = run_fails(herd().args(["deploy", "--plan"]).arg(&env));
    assert_has(
        &text(&out.stderr),
        "config.yml:3: machine `m`: ssh \"-oProxyCommand=x\"",
    );
}
