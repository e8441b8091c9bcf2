//! Running build scripts isolated from the host, through a real OCI runtime
//! (runc or crun) with a runtime config made from oci-spec's types; or, on
//! hosts without one, chroot (`--isolation chroot`, weaker: no namespaces).

use crate::netns::PrivateNetwork;
use crate::sandbox::{LimitHit, Network, Sandbox};
use anyhow::{Context, Result, bail};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
};
use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How build scripts are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum IsolationKind {
    /// Containers started by runc or crun: own mount, pid, ipc and uts
    /// namespaces, the host's network.
    #[default]
    Runtime,
    /// chroot into the build root, for hosts without an OCI runtime. No
    /// namespaces: a script sees the host's processes.
    Chroot,
}

/// The chosen isolation, with the runtime binary when there is one.
#[derive(Debug, Clone)]
pub enum Isolation {
    Runtime(PathBuf),
    Chroot,
}

impl Isolation {
    /// `runtime` names the binary (or a path); otherwise runc, then crun,
    /// are looked up on PATH.
    pub fn choose(kind: IsolationKind, runtime: Option<&Path>) -> Result<Isolation> {
        if kind == IsolationKind::Chroot {
            return Ok(Isolation::Chroot);
        }
        let candidates: Vec<PathBuf> = match runtime {
            Some(path) => vec![path.to_path_buf()],
            None => vec!["runc".into(), "crun".into()],
        };
        for candidate in &candidates {
            if let Some(found) = find_executable(candidate) {
                check_runtime(&found)?;
                return Ok(Isolation::Runtime(found));
            }
        }
        bail!(
            "no OCI runtime found ({}); install runc or crun, or build with --isolation chroot",
            candidates
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// A runtime answers `--version` (runc and crun do): a program that does
/// not is blamed here, rather than the first script it would fail to run.
fn check_runtime(binary: &Path) -> Result<()> {
    let output = Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running the OCI runtime {}", binary.display()))?;
    if !output.status.success() {
        bail!(
            "the OCI runtime {} does not work: `{} --version` {}{}; give runc or crun \
             (--runtime), or build with --isolation chroot",
            binary.display(),
            binary.display(),
            output.status,
            match String::from_utf8_lossy(&output.stderr).trim() {
                "" => String::new(),
                text => format!(": {}", crate::terminal::escape_controls(text)),
            }
        );
    }
    Ok(())
}

/// `name` itself when it is a path, else the first file of that name on
/// PATH (or in /usr/sbin and /sbin, which a user's PATH may lack).
pub fn find_executable(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// The root filesystem a script runs in.
#[derive(Debug, Clone)]
pub enum Root {
    /// A prepared directory (the image being built, or a builder image).
    Directory(PathBuf),
    /// The host's own system directories, read-only.
    HostReadOnly,
}

/// A host directory mounted into the container.
#[derive(Debug, Clone)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
    /// Whether device nodes under it can be opened (no `nodev`). Only the
    /// image root a builder fills needs it: debootstrap makes /dev/null
    /// there and refuses a target mounted nodev. Which devices a script may
    /// open is still limited by the device cgroup (see `container_spec`).
    pub devices: bool,
}

/// One script run.
#[derive(Debug, Clone)]
pub struct Run {
    pub root: Root,
    pub mounts: Vec<BindMount>,
    pub env: Vec<String>,
    pub args: Vec<String>,
    /// Its network, limits and timeout.
    pub sandbox: Sandbox,
    /// Put before each line of its output (the image's name, when several
    /// images build at once).
    pub label: Option<String>,
}

/// How a run ended, and the last lines of its output.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub ending: Ending,
    /// Limits the container ran into, however it ended.
    pub limits: Vec<LimitHit>,
    pub tail: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Its exit code (128+N for signal N).
    Exited(i32),
    /// Still running at its timeout: killed.
    TimedOut,
    /// herd received this signal: the script was killed.
    Interrupted(nix::sys::signal::Signal),
}

/// Lines of output kept for the error message of a failed script.
const TAIL_LINES: usize = 20;

/// Container names herd gives build scripts: `herd-build-<herd's pid>-<n>`.
const CONTAINER_PREFIX: &str = "herd-build-";

/// Runs `run` and waits for it. Output is passed to stderr as it comes
/// (a build log) and its tail kept.
pub fn run(isolation: &Isolation, run: &Run, scratch: &Path) -> Result<Outcome> {
    match isolation {
        Isolation::Runtime(binary) => run_in_container(binary, run, scratch),
        Isolation::Chroot => run_in_chroot(run, scratch),
    }
}

fn run_in_container(binary: &Path, run: &Run, scratch: &Path) -> Result<Outcome> {
    let bundle = tempfile::Builder::new()
        .prefix("bundle-")
        .tempdir_in(scratch)?;
    let root = match &run.root {
        Root::Directory(dir) => dir.clone(),
        Root::HostReadOnly => {
            let root = bundle.path().join("host-root");
            std::fs::create_dir(&root)?;
            root
        }
    };
    // Dropped after the container is deleted: slirp4netns then ends.
    let network = match run.sandbox.network {
        Network::Private => Some(PrivateNetwork::start(bundle.path())?),
        Network::Host => None,
    };
    let id = format!("{CONTAINER_PREFIX}{}-{}", std::process::id(), unique());
    let spec = container_spec(run, &root, &id, network.as_ref())?;
    spec.save(bundle.path().join("config.json"))
        .context("writing the runtime config")?;
    let mut command = Command::new(binary);
    // --keep: the stopped container (and its cgroup, which says whether a
    // limit was hit) stays until `delete` below.
    command
        .args(["run", "--keep", "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        // Not in herd's process group: a Ctrl-C is for herd, which then
        // stops the container itself (runc would only pass the signal on
        // to the script's first process, which may ignore it).
        .process_group(0);
    let stop = || {
        quiet(Command::new(binary).args(["kill", &id, "KILL"]));
    };
    let outcome = supervise(command, run, |_| stop());
    let limits = crate::cgroups::limits_hit(&id, &run.sandbox);
    quiet(Command::new(binary).args(["delete", "--force", &id]));
    Ok(Outcome { limits, ..outcome? })
}

/// Runs `command`, ignoring its output and status: cleanup that may find
/// nothing to clean.
fn quiet(command: &mut Command) {
    let _ = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops and deletes the build script containers whose herd is gone (killed
/// before it could clean up); returns how many.
pub fn remove_orphans(binary: &Path) -> Result<usize> {
    let output = Command::new(binary)
        .args(["list", "--quiet"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("running {} list", binary.display()))?;
    let mut removed = 0;
    for id in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(owner) = id
            .strip_prefix(CONTAINER_PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        // The owner is alive when its pid is a herd (a reused pid is not).
        let comm = std::fs::read_to_string(format!("/proc/{owner}/comm")).unwrap_or_default();
        if comm.trim() == "herd" {
            continue;
        }
        quiet(Command::new(binary).args(["kill", id, "KILL"]));
        quiet(Command::new(binary).args(["delete", "--force", id]));
        removed += 1;
    }
    Ok(removed)
}

fn unique() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The runtime config for one run, from oci-spec's types.
fn container_spec(
    run: &Run,
    root: &Path,
    id: &str,
    network: Option<&PrivateNetwork>,
) -> Result<Spec> {
    let mut mounts: Vec<Mount> = oci_spec::runtime::get_default_mounts();
    if matches!(run.root, Root::HostReadOnly) {
        for dir in crate::sandbox::HOST_SYSTEM_DIRS {
            let host = Path::new("/").join(dir);
            let Ok(metadata) = host.symlink_metadata() else {
                continue;
            };
            if metadata.file_type().is_symlink() {
                // Merged-/usr systems: /bin -> usr/bin. Recreate the link.
                let link = root.join(dir);
                if link.symlink_metadata().is_err() {
                    std::os::unix::fs::symlink(std::fs::read_link(&host)?, link)?;
                }
            } else if metadata.is_dir() {
                mounts.push(bind(&host, &format!("/{dir}"), true, false)?);
            }
        }
        // Empty in place of the host's: /root and /home hold users'
        // keys and credentials, /run and /tmp sockets of host services.
        for scratch in ["/tmp", "/var", "/root", "/home", "/run"] {
            mounts.push(tmpfs(scratch)?);
        }
    }
    let resolv_conf = match network {
        Some(network) => Some(network.resolv_conf()),
        None => Some(Path::new("/etc/resolv.conf")).filter(|p| p.exists()),
    };
    if let Some(resolv_conf) = resolv_conf {
        mounts.push(bind(resolv_conf, "/etc/resolv.conf", true, false)?);
    }
    for mount in &run.mounts {
        mounts.push(bind(
            &mount.source,
            &mount.destination,
            mount.read_only,
            mount.devices,
        )?);
    }
    // Docker's default capability set less NET_RAW (as podman): enough for
    // package managers (chown, setuid, mknod), not for mounting, reaching
    // the host, or raw packet sockets.
    let capabilities: HashSet<Capability> = [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
    .into_iter()
    .collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(capabilities.clone())
        .effective(capabilities.clone())
        .permitted(capabilities)
        .build()?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(run.args.clone())
        .env(run.env.clone())
        .cwd("/")
        .capabilities(capabilities)
        .no_new_privileges(true)
        .build()?;
    // Own mount, pid, ipc and uts namespaces; the private network's
    // namespace, or none (the host's network).
    let mut namespaces: Vec<LinuxNamespace> = [
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
    ]
    .into_iter()
    .map(|typ| {
        let mut namespace = LinuxNamespace::default();
        namespace.set_typ(typ);
        namespace
    })
    .collect();
    if let Some(network) = network {
        let mut namespace = LinuxNamespace::default();
        namespace.set_typ(LinuxNamespaceType::Network);
        namespace.set_path(Some(network.namespace()));
        namespaces.push(namespace);
    }
    // Device cgroup: deny every device; runc and crun then allow their
    // defaults (null, zero, full, random, urandom, tty, console, ptmx,
    // pts). Said explicitly because a builder may open device nodes it
    // made under $ROOTFS (mounted without nodev): a block device node made
    // there must not reach the host's disk.
    let mut resources = LinuxResourcesBuilder::default().devices(vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?,
    ]);
    if let Some(pids) = run.sandbox.pids.value() {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(i64::try_from(pids).unwrap_or(i64::MAX))
                .build()?,
        );
    }
    if let Some(memory) = run.sandbox.memory.value() {
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(i64::try_from(memory).unwrap_or(i64::MAX))
                .build()?,
        );
    }
    let mut masked = oci_spec::runtime::get_default_maskedpaths();
    if matches!(run.root, Root::HostReadOnly) {
        masked.extend(crate::sandbox::masked_host_paths(
            &crate::registry::auth::credential_files(),
        ));
    }
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build()?)
        // Where `cgroups::limits_hit` finds it.
        .cgroups_path(crate::cgroups::path(id))
        .masked_paths(masked)
        .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
        .build()?;
    let read_only_root = matches!(run.root, Root::HostReadOnly);
    Ok(SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(root)
                .readonly(read_only_root)
                .build()?,
        )
        .hostname("herd-build")
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()?)
}

fn bind(source: &Path, destination: &str, read_only: bool, devices: bool) -> Result<Mount> {
    let mut options = vec!["rbind".to_string(), "nosuid".into()];
    if !devices {
        options.push("nodev".into());
    }
    options.push(if read_only { "ro".into() } else { "rw".into() });
    Ok(MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(options)
        .build()?)
}

fn tmpfs(destination: &str) -> Result<Mount> {
    Ok(MountBuilder::default()
        .destination(destination)
        .typ("tmpfs")
        .source("tmpfs")
        .options(vec!["nosuid".into(), "nodev".into(), "mode=1777".into()])
        .build()?)
}

/// chroot fallback: the root's mount targets are bind-mounted from the
/// host side, the script runs chrooted, and the mounts are undone. Neither
/// network nor limits apply (no namespaces, no cgroup); the timeout and
/// interrupts do, through the script's process group.
fn run_in_chroot(run: &Run, _scratch: &Path) -> Result<Outcome> {
    let mut command = Command::new(&run.args[0]);
    command
        .args(&run.args[1..])
        .env_clear()
        .envs(split_env(&run.env))
        .process_group(0);
    let stop = |pid: u32| {
        let group = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    };
    let Root::Directory(root) = &run.root else {
        // A builder without its own root runs on the host itself: the
        // image root is reached through $ROOTFS, which the caller set to
        // the real path in this mode.
        return supervise(command, run, stop);
    };
    let mut mounted = Vec::new();
    let result = (|| {
        for mount in &run.mounts {
            let target = root.join(mount.destination.trim_start_matches('/'));
            std::fs::create_dir_all(&target)?;
            nix::mount::mount(
                Some(&mount.source),
                &target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
                None::<&str>,
            )
            .with_context(|| {
                format!(
                    "bind-mounting {} (chroot isolation needs root)",
                    mount.source.display()
                )
            })?;
            mounted.push(target);
        }
        let root = root.clone();
        // SAFETY: chroot and chdir are async-signal-safe system calls.
        unsafe {
            command.pre_exec(move || {
                nix::unistd::chroot(&root)?;
                nix::unistd::chdir("/")?;
                Ok(())
            });
        }
        supervise(command, run, stop)
    })();
    for target in mounted.iter().rev() {
        let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
    }
    result
}

fn split_env(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Starts `command` with no input and its stdout and stderr on one pipe,
/// whose reading end is returned.
pub fn spawn_combined(mut command: Command) -> Result<(std::process::Child, std::io::PipeReader)> {
    let (reader, writer) = std::io::pipe()?;
    command
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let child = command
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    // Dropping the command closes our copies of the pipe's write end, so
    // the reader sees the end of output when the child exits.
    drop(command);
    Ok((child, reader))
}

/// The longest line of a script's output passed on whole (64 KiB).
const MAX_LINE: u64 = 64 << 10;
/// How often a running script is checked for its end, its timeout or an
/// interrupt.
const POLL_EVERY: Duration = Duration::from_millis(25);
/// How long a stopped script may take to go before its runner is killed
/// (`runc delete --force` then kills what is left).
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often a script that was stopped and still runs is stopped again.
const STOP_AGAIN: Duration = Duration::from_millis(500);

/// Runs `command` (a runtime running the script, or the script) with
/// stdout and stderr on one pipe, copying each line to our stderr (after
/// the run's label) and keeping the last ones. At the run's timeout, or
/// when herd is interrupted, `stop` is called with the child's pid; the
/// outcome says which.
fn supervise(command: Command, run: &Run, stop: impl Fn(u32)) -> Result<Outcome> {
    let (mut child, reader) = spawn_combined(command)?;
    let label = run.label.clone();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tail = VecDeque::with_capacity(TAIL_LINES);
        let mut reader = BufReader::new(reader);
        let mut bytes = Vec::new();
        loop {
            // A script that prints gigabytes without a newline must not
            // make herd hold them: a long line is cut into pieces.
            bytes.clear();
            match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut bytes) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            let line = String::from_utf8_lossy(&bytes).into_owned();
            let shown = crate::terminal::escape_controls(&line);
            match &label {
                Some(label) => tracing::info!("  {label} | {shown}"),
                None => tracing::info!("  | {shown}"),
            }
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        let _ = sender.send(Vec::from(tail));
    });
    let deadline = Instant::now() + run.sandbox.timeout;
    // Why and since when the script is being stopped, and when it was
    // last told to stop.
    let mut stopped: Option<(Ending, Instant, Instant)> = None;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let now = Instant::now();
        match &mut stopped {
            None => {
                let ending = match crate::interrupt::received() {
                    Some(signal) => Some(Ending::Interrupted(signal)),
                    None => (now >= deadline).then_some(Ending::TimedOut),
                };
                if let Some(ending) = ending {
                    stop(child.id());
                    stopped = Some((ending, now, now));
                }
            }
            Some((_, since, _)) if now - *since > STOP_GRACE => {
                let _ = child.kill();
            }
            // Again now and then: a container still being created when the
            // first stop came was not there to be killed.
            Some((_, _, last)) if now - *last > STOP_AGAIN => {
                stop(child.id());
                *last = now;
            }
            Some(_) => {}
        }
        std::thread::sleep(POLL_EVERY);
    };
    // A process that outlived the script (possible under chroot only) may
    // hold the pipe: its tail is then not waited for long.
    let tail = receiver
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    let ending = match stopped {
        Some((ending, ..)) => ending,
        None => Ending::Exited(status.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
        })),
    };
    Ok(Outcome {
        ending,
        limits: Vec::new(),
        tail,
    })
}
