//! Running an image's build scripts: the runlevels in a build root made of
//! its dependencies' layers, each script in its own container.

use super::*;

/// Where herd mounts its own things inside a build container.
pub(super) const BUILD_MOUNTS: &str = "/.herd-build";

/// Runs the runlevels in a build root and returns the final manifest and
/// the layer of what they, and the image's files, changed.
pub(super) fn build_with_scripts(
    store: &Store,
    source: &ImageSource,
    provisional: &ImageManifest,
    base: &Base,
    epoch: u64,
    options: &BuildOptions,
) -> Result<(ImageManifest, LayerBlob)> {
    let isolation = Isolation::choose(options.isolation, options.runtime.as_deref())?;
    let overlay = Overlay::mount(store, &base.extracted_layers(store)?)?;
    let scratch = store.work_dir("scripts-")?;
    let attributes_dir = scratch.path().join("attributes");
    std::fs::create_dir(&attributes_dir)?;
    let provisional_name: ImageName = provisional.name.parse().map_err(anyhow::Error::msg)?;
    let tiny = provisional_name.tiny_name().to_string();
    let chroot = matches!(isolation, Isolation::Chroot);

    // The runtime creates missing mount points in the image root, and their
    // missing parents; those of the manifest's `build.mountPoints`
    // (`/root/.m2`) are not the image's content either, so each is removed
    // from its first missing ancestor (plain paths only: removal must stay
    // in the upper directory).
    let mut mount_targets: Vec<String> =
        ["/.herd-build", "/proc", "/sys", "/dev", "/etc/resolv.conf"]
            .map(String::from)
            .into();
    for mount in &provisional.build.mount_points {
        let path = Path::new(&mount.to);
        let plain = path.components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        });
        if !plain || !path.has_root() {
            continue;
        }
        let mut target = PathBuf::from("/");
        let mut missing = false;
        for component in path.components().skip(1) {
            target.push(component);
            match overlay
                .merged
                .join(target.strip_prefix("/").unwrap_or(&target))
                .symlink_metadata()
            {
                Err(_) => {
                    missing = true;
                    break;
                }
                // Never look (or remove) through a link.
                Ok(metadata) if metadata.is_symlink() => break,
                Ok(_) => {}
            }
        }
        if missing {
            mount_targets.push(target.to_string_lossy().into_owned());
        }
    }
    let mount_targets: Vec<&str> = mount_targets.iter().map(String::as_str).collect();
    let existed: Vec<bool> = mount_targets
        .iter()
        .map(|t| {
            overlay
                .merged
                .join(t.trim_start_matches('/'))
                .symlink_metadata()
                .is_ok()
        })
        .collect();

    // A pod's app may have no directory of its own; scripts then see an
    // empty ACI_HOME.
    let home_source = if source.dir.is_dir() {
        source.dir.canonicalize()?
    } else {
        scratch.path().join("empty-home")
    };
    std::fs::create_dir_all(&home_source)?;
    let home = BindMount {
        source: home_source,
        destination: format!("{BUILD_MOUNTS}/home"),
        read_only: true,
        devices: false,
    };
    let attributes = BindMount {
        source: attributes_dir.clone(),
        destination: format!("{BUILD_MOUNTS}/attributes"),
        read_only: false,
        devices: false,
    };
    let host_mounts = |mounts: &[manifest::HostMount]| -> Result<Vec<BindMount>> {
        mounts
            .iter()
            .map(|m| {
                Ok(BindMount {
                    source: host_path(&source.dir, &m.from)?,
                    destination: m.to.clone(),
                    read_only: false,
                    devices: false,
                })
            })
            .collect()
    };
    let env = script_environment(provisional, &provisional_name, epoch);
    let sandbox = Sandbox::choose(&options.sandbox, &provisional.build.sandbox);
    if chroot {
        tracing::warn!(
            "--isolation chroot: build scripts share the host's network and have no pids or memory limit"
        );
    }
    let label = options.label_output.then(|| tiny.clone());
    let ctx = ScriptContext {
        isolation: &isolation,
        scratch: scratch.path(),
        env: &env,
        sandbox: &sandbox,
        label: label.as_deref(),
    };

    // builder: its own root (builder dependencies, or the host read-only),
    // the image root at $ROOTFS.
    let builder_scripts = crate::fsutil::files_in(&source.dir.join("runlevels/builder"))?;
    if !builder_scripts.is_empty() {
        let builder_base = Base::resolve(store, &provisional.builder.dependencies, options.pull)?;
        let builder_overlay = if provisional.builder.dependencies.is_empty() {
            None
        } else {
            Some(Overlay::mount(
                store,
                &builder_base.extracted_layers(store)?,
            )?)
        };
        let root = builder_overlay
            .as_ref()
            .map_or(Root::HostReadOnly, |o| Root::Directory(o.merged.clone()));
        let on_host = chroot && matches!(root, Root::HostReadOnly);
        let inside = |mount: &BindMount| {
            if on_host {
                mount.source.display().to_string()
            } else {
                mount.destination.clone()
            }
        };
        let mut env = env.clone();
        env.push(format!(
            "ROOTFS={}",
            if on_host {
                overlay.merged.display().to_string()
            } else {
                "/rootfs".into()
            }
        ));
        env.push(format!("ACI_HOME={}", inside(&home)));
        env.push(format!("HERD_BUILD_ATTRIBUTES={}", inside(&attributes)));
        env.extend(
            provisional
                .builder
                .environment
                .iter()
                .map(|v| format!("{}={}", v.name, v.value)),
        );
        let mut mounts = vec![
            BindMount {
                source: overlay.merged.clone(),
                destination: "/rootfs".into(),
                read_only: false,
                // Bootstrapping a root (debootstrap) makes and uses device
                // nodes in it.
                devices: true,
            },
            home.clone(),
            attributes.clone(),
        ];
        mounts.extend(host_mounts(&provisional.builder.mount_points)?);
        for script in &builder_scripts {
            let name = script.file_name().unwrap_or_default().to_string_lossy();
            let path = if on_host {
                script.display().to_string()
            } else {
                format!("{BUILD_MOUNTS}/home/runlevels/builder/{name}")
            };
            ScriptContext { env: &env, ..ctx }.run("builder", script, &path, &root, &mounts)?;
        }
    }

    // Everything else runs in the image root itself.
    let root = Root::Directory(overlay.merged.clone());
    let mut mounts = vec![home.clone(), attributes.clone()];
    mounts.extend(host_mounts(&provisional.build.mount_points)?);
    let mut env = env.clone();
    env.push(format!("ACI_HOME={BUILD_MOUNTS}/home"));
    env.push(format!("HERD_BUILD_ATTRIBUTES={BUILD_MOUNTS}/attributes"));
    let ctx = ScriptContext { env: &env, ..ctx };
    // Each script of `host_dir`, in order, run from `inside` (where the
    // container sees that directory).
    let run_scripts = |label: &str, host_dir: &Path, inside: &str| -> Result<()> {
        for script in crate::fsutil::files_in(host_dir)? {
            let name = script.file_name().unwrap_or_default().to_string_lossy();
            ctx.run(label, &script, &format!("{inside}/{name}"), &root, &mounts)?;
        }
        Ok(())
    };
    let run_level = |level: &str| -> Result<()> {
        run_scripts(
            level,
            &source.dir.join("runlevels").join(level),
            &format!("{BUILD_MOUNTS}/home/runlevels/{level}"),
        )
    };
    let run_inherited = |level: &str| -> Result<()> {
        for dependency in &base.stack {
            let inside = image_paths::image_dir(dependency, level);
            run_scripts(
                &format!("{level} of {dependency}"),
                &overlay.merged.join(&inside),
                &format!("/{inside}"),
            )?;
        }
        Ok(())
    };
    run_inherited("inherit-build-early")?;
    run_level("build")?;
    rootfs::materialize(&user_content(source, &tiny, epoch)?, &overlay.merged)?;
    run_level("build-late")?;
    run_inherited("inherit-build-late")?;

    let written = attributes::read_dir(&attributes_dir)?;
    let mut build_attributes = MergedAttributes::new();
    build_attributes.apply_files(&written);
    let manifest = source.manifest(build_attributes.value())?;
    if manifest.aci.dependencies != provisional.aci.dependencies {
        bail!(
            "{}: dependencies may not depend on attributes written by build scripts",
            source.manifest_path.display()
        );
    }
    rootfs::materialize(
        &herd_metadata(source, &manifest, &tiny, base, epoch)?,
        &overlay.merged,
    )?;
    rootfs::remove_mount_targets(&overlay, &mount_targets, &existed);
    let entries = overlay.changes(epoch)?;
    let layer = write_layer_to_store(store, &entries, options.compression)?;
    Ok((manifest, layer))
}

/// Variables every build script gets.
pub(super) fn script_environment(
    manifest: &ImageManifest,
    name: &ImageName,
    _epoch: u64,
) -> Vec<String> {
    let mut env = vec![
        DEFAULT_PATH.to_string(),
        format!("ACI_NAME={}", name.repository()),
        format!("ACI_VERSION={}", name.tag().unwrap_or("")),
        // herd's own level (`-v`, `-q` or LOG_LEVEL), so `-v` traces
        // the scripts too.
        format!("LOG_LEVEL={}", crate::terminal::log_level()),
    ];
    // HERD_ENV_<NAME> on the host reaches scripts as <NAME> (proxies).
    for (key, value) in std::env::vars() {
        if let Some(name) = key.strip_prefix("HERD_ENV_").filter(|n| !n.is_empty()) {
            env.push(format!("{name}={value}"));
        }
    }
    let _ = manifest;
    env
}

/// A manifest's `from:` path: relative to the image directory, `~` the
/// home directory.
pub(super) fn host_path(image_dir: &Path, from: &str) -> Result<PathBuf> {
    let path = match from.strip_prefix("~/") {
        Some(rest) => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set for a ~ mount")?)
                .join(rest)
        }
        None => image_dir.join(from),
    };
    path.canonicalize().with_context(|| {
        format!(
            "mount point source {from:?} ({}) does not exist",
            path.display()
        )
    })
}

/// What every script run of one build shares.
#[derive(Clone, Copy)]
pub(super) struct ScriptContext<'a> {
    isolation: &'a Isolation,
    scratch: &'a Path,
    env: &'a [String],
    sandbox: &'a Sandbox,
    label: Option<&'a str>,
}

impl ScriptContext<'_> {
    /// Runs one script; a failure is an error with its name, status and
    /// the tail of its output.
    fn run(
        &self,
        level: &str,
        script: &Path,
        inside: &str,
        root: &Root,
        mounts: &[BindMount],
    ) -> Result<()> {
        crate::interrupt::check()?;
        let name = script.file_name().unwrap_or_default().to_string_lossy();
        let name = crate::terminal::escape_controls(&name);
        match self.label {
            Some(label) => tracing::info!("{label}: running {level} script {name}"),
            None => tracing::info!("running {level} script {name}"),
        }
        crate::status::doing(|| format!("{level} script {name}"));
        let executable =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(script)?.permissions())
                & 0o111
                != 0;
        let args = if executable {
            vec![inside.to_string()]
        } else {
            vec!["/bin/sh".to_string(), inside.to_string()]
        };
        let run = runtime::Run {
            root: root.clone(),
            mounts: mounts.to_vec(),
            env: self.env.to_vec(),
            args,
            sandbox: self.sandbox.clone(),
            label: self.label.map(String::from),
        };
        let outcome = runtime::run(self.isolation, &run, self.scratch)?;
        let tail = || {
            outcome
                .tail
                .iter()
                .map(|l| format!("  | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let limits = || {
            outcome
                .limits
                .iter()
                .map(|hit| format!("; {hit}"))
                .collect::<String>()
        };
        match outcome.ending {
            Ending::Interrupted(signal) => bail!(
                "interrupted by {signal} while {level} script {name} ran; its container was stopped"
            ),
            Ending::TimedOut => bail!(
                "{level} script {name} timed out: still running after {} (runlevel {level}, timeout from --script-timeout or build.sandbox.timeout), so it was killed with its container; the last lines of its output:\n{}",
                humantime::format_duration(self.sandbox.timeout),
                tail()
            ),
            Ending::Exited(0) if outcome.limits.is_empty() => Ok(()),
            Ending::Exited(code) => bail!(
                "{level} script {name} {}{}; the last lines of its output:\n{}{}",
                if code == 0 {
                    "exited with status 0 but ran into a limit".to_string()
                } else {
                    format!("failed with exit status {code}")
                },
                limits(),
                tail(),
                if executable && !starts_like_a_program(script) {
                    format!(
                        "\nhint: {name} is executable but has no #! line, so it cannot be \
                         run: start it with #!/bin/sh (or make it non-executable: herd then \
                         runs it with /bin/sh)"
                    )
                } else {
                    String::new()
                }
            ),
        }
    }
}

/// Whether an executable script can be executed directly: it starts with
/// `#!` or is an ELF program.
pub(super) fn starts_like_a_program(script: &Path) -> bool {
    let mut head = [0u8; 4];
    let read = std::fs::File::open(script)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    head[..read].starts_with(b"#!") || head[..read].starts_with(b"\x7fELF")
}
