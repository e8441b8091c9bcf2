//! Telling the world the app is ready: sd_notify datagrams on
//! `$NOTIFY_SOCKET` (podman passes the unit's socket in with
//! `--sdnotify=container`; `podman kube play` waits on its own), and the
//! ready file that `/herd/init ready` checks (what `podman exec` and a
//! Kubernetes exec probe run).

use crate::image_paths;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The sd_notify protocol by hand: one datagram to a path or an abstract
/// (`@`) socket. std does it in a few lines; a crate would add a
/// dependency to the init shipped in every image for no less code.
pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// The notifier for `NOTIFY_SOCKET`'s value; one that sends nothing
    /// when it is unset or unusable (`problem` says why).
    pub fn new(value: Option<std::ffi::OsString>, problem: &mut Option<String>) -> Notifier {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Notifier { socket: None };
        };
        use std::os::unix::ffi::OsStrExt;
        let bytes = value.as_bytes();
        let address = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)
            }
            None => SocketAddr::from_pathname(Path::new(&value)),
        };
        match address.and_then(|a| UnixDatagram::unbound().map(|s| (s, a))) {
            Ok(socket) => Notifier {
                socket: Some(socket),
            },
            Err(e) => {
                *problem = Some(format!(
                    "NOTIFY_SOCKET={} cannot be used: {e}",
                    value.to_string_lossy()
                ));
                Notifier { socket: None }
            }
        }
    }

    /// Sends `state` (`READY=1`, `STATUS=...`, newline-separated); says
    /// why it could not.
    pub fn send(&self, state: &str) -> Result<(), String> {
        let Some((socket, address)) = &self.socket else {
            return Ok(());
        };
        socket
            .send_to_addr(state.as_bytes(), address)
            .map(|_| ())
            .map_err(|e| format!("cannot notify NOTIFY_SOCKET: {e}"))
    }
}

/// The ready file under `root`.
pub fn ready_file(root: &Path) -> PathBuf {
    root.join(image_paths::READY_FILE)
}

/// Says the app is ready: the file exists from now on.
pub fn mark_ready(root: &Path) -> std::io::Result<()> {
    let file = ready_file(root);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&file, b"ready\n")
}

/// Says the app is not (or no more) ready; a file left by an earlier run
/// of the same container is removed at start.
pub fn mark_not_ready(root: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(ready_file(root)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `/herd/init ready [--wait SECONDS]`: 0 once the app is ready, else 1
/// (after waiting up to SECONDS for it); 2 for bad arguments.
pub fn ready_command(root: &Path, args: &[String]) -> i32 {
    let wait = match args {
        [] => Duration::ZERO,
        [flag, seconds] if flag == "--wait" => match seconds.parse::<u32>() {
            Ok(seconds) => Duration::from_secs(seconds.into()),
            Err(_) => {
                eprintln!("herd-init ready: --wait takes a number of seconds, not `{seconds}`");
                return 2;
            }
        },
        _ => {
            eprintln!("usage: /herd/init ready [--wait SECONDS]");
            return 2;
        }
    };
    let deadline = Instant::now() + wait;
    loop {
        if ready_file(root).exists() {
            println!("ready");
            return 0;
        }
        if Instant::now() >= deadline {
            println!("not ready");
            return 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let mut problem = None;
        let notifier = Notifier::new(Some(path.clone().into_os_string()), &mut problem);
        notifier.send("READY=1").unwrap();
        let mut buffer = [0u8; 64];
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("herd-test-{}", std::process::id());
        let abstract_listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier::new(Some(format!("@{name}").into()), &mut problem);
        notifier.send("STATUS=x").unwrap();
        let n = abstract_listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"STATUS=x");
        assert_eq!(problem, None);

        // Unset: nothing to do, no error.
        Notifier::new(None, &mut problem).send("READY=1").unwrap();
    }

    #[test]
    fn the_ready_command_follows_the_file() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(ready_command(root.path(), &[]), 1);
        mark_ready(root.path()).unwrap();
        assert_eq!(
            ready_command(root.path(), &["--wait".into(), "1".into()]),
            0
        );
        mark_not_ready(root.path()).unwrap();
        mark_not_ready(root.path()).unwrap();
        assert_eq!(ready_command(root.path(), &[]), 1);
        assert_eq!(
            ready_command(root.path(), &["--wait".into(), "x".into()]),
            2
        );
    }
}
