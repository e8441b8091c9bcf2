//! A build script's private network: a network namespace of its own with
//! outbound access through slirp4netns, a user-mode TCP/IP stack that
//! connects out on the script's behalf from the host. The script sees
//! 10.0.2.100 on `tap0`, a gateway at 10.0.2.2 and a DNS forwarder at
//! 10.0.2.3 (which asks the host's resolvers). `--disable-host-loopback`
//! makes the gateway lead nowhere, so the host's 127.0.0.1 services are out
//! of reach; and no raw socket of the script sees the host's interfaces.
//!
//! The namespace is held by a file descriptor of herd's (no mount to undo,
//! nothing left when herd is killed): runc joins it by its
//! `/proc/<herd>/fd/<n>` path, and slirp4netns is given the same path. It
//! ends when herd closes its end of the exit pipe, or dies.

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The DNS forwarder slirp4netns offers at its default addresses.
const DNS: &str = "10.0.2.3";
/// As podman sets it: fewer, larger packets through the user-mode stack.
const MTU: &str = "65520";

pub struct PrivateNetwork {
    namespace: OwnedFd,
    slirp: Child,
    /// Closing it (drop) tells slirp4netns to end.
    exit: Option<std::io::PipeWriter>,
    resolv_conf: PathBuf,
}

impl PrivateNetwork {
    /// Makes the namespace, starts slirp4netns on it, waits until it
    /// configured the interface, and writes a resolv.conf for it in `dir`.
    pub fn start(dir: &Path) -> Result<PrivateNetwork> {
        let slirp4netns = crate::runtime::find_executable(Path::new("slirp4netns")).context(
            "slirp4netns is not installed (Debian package slirp4netns); it gives build scripts \
             their own network; install it, or build with --network host to share the host's",
        )?;
        let namespace = new_namespace()?;
        let path = namespace_path(&namespace);
        let (mut ready, ready_writer) = std::io::pipe()?;
        let (exit_reader, exit) = std::io::pipe()?;
        let log_path = dir.join("slirp4netns.log");
        let log = File::create(&log_path)?;
        let mut command = Command::new(&slirp4netns);
        command
            .args(["--configure", "--mtu", MTU, "--disable-host-loopback"])
            .args(["--enable-sandbox", "--enable-seccomp"])
            .arg("--netns-type=path")
            .arg(format!("--ready-fd={}", ready_writer.as_raw_fd()))
            .arg(format!("--exit-fd={}", exit_reader.as_raw_fd()))
            .arg(&path)
            .arg("tap0")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Not in herd's process group: a Ctrl-C is for herd, which
            // stops the script first.
            .process_group(0);
        let inherited = [ready_writer.as_raw_fd(), exit_reader.as_raw_fd()];
        // SAFETY: fcntl is async-signal-safe. The two pipe ends are made
        // with close-on-exec (so no other child gets them) and only this
        // child keeps them open.
        unsafe {
            command.pre_exec(move || {
                for fd in inherited {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let slirp = command
            .spawn()
            .with_context(|| format!("starting {}", slirp4netns.display()))?;
        // Ours closed, the pipe ends when slirp4netns writes or exits.
        drop(ready_writer);
        drop(exit_reader);
        let mut network = PrivateNetwork {
            namespace,
            slirp,
            exit: Some(exit),
            resolv_conf: dir.join("resolv.conf"),
        };
        let mut byte = [0u8; 1];
        if !matches!(ready.read(&mut byte), Ok(1)) {
            let _ = network.slirp.wait();
            bail!(
                "slirp4netns could not set up the build script's network: {}",
                std::fs::read_to_string(&log_path)
                    .unwrap_or_default()
                    .trim()
            );
        }
        std::fs::write(&network.resolv_conf, resolv_conf())?;
        Ok(network)
    }

    /// The path runc joins the namespace by.
    pub fn namespace(&self) -> PathBuf {
        namespace_path(&self.namespace)
    }

    /// The resolv.conf to mount at /etc/resolv.conf.
    pub fn resolv_conf(&self) -> &Path {
        &self.resolv_conf
    }
}

impl Drop for PrivateNetwork {
    fn drop(&mut self) {
        drop(self.exit.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.slirp.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.slirp.kill();
        let _ = self.slirp.wait();
    }
}

/// A new network namespace, held by a descriptor. Made on a thread of its
/// own, since unshare(CLONE_NEWNET) moves only the calling thread: the
/// thread ends and the descriptor keeps the namespace.
fn new_namespace() -> Result<OwnedFd> {
    std::thread::spawn(|| -> Result<OwnedFd> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .context("making a network namespace for a build script (needs root)")?;
        Ok(File::open("/proc/thread-self/ns/net")?.into())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread making a network namespace panicked"))?
}

fn namespace_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        fd.as_raw_fd()
    ))
}

/// The host's resolv.conf with its name servers replaced by slirp4netns's
/// forwarder: a host server on 127.0.0.53 (systemd-resolved) is not
/// reachable from the namespace, the forwarder always is.
fn resolv_conf() -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut text: String = host
        .lines()
        .filter(|l| !l.trim_start().starts_with("nameserver"))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!("nameserver {DNS}\n"));
    text
}
