//! `herd kube` and `herd install`.

use super::StoreArg;
use herd::names::ImageName;
use std::process::ExitCode;

/// Print the Kubernetes Pod document of a pod (for `podman kube play`).
#[derive(clap::Args)]
pub struct KubeArgs {
    /// The pod's name, e.g. aci.example.com/pod-mysql:10.1-29.
    name: String,

    #[command(flatten)]
    store: StoreArg,
}

/// Copy images, or all app images of a pod, into the local container
/// engine's storage, so `podman run NAME` finds them.
#[derive(clap::Args)]
pub struct InstallArgs {
    /// Image or pod names.
    #[arg(required = true)]
    names: Vec<String>,

    #[command(flatten)]
    store: StoreArg,
}

pub fn run_kube(args: KubeArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let name: ImageName = args.name.parse().map_err(anyhow::Error::msg)?;
    print!("{}", herd::pods::kube_document(&store, &name)?);
    Ok(ExitCode::SUCCESS)
}

pub fn run_install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    for name in &args.names {
        let name: ImageName = name.parse().map_err(anyhow::Error::msg)?;
        for installed in herd::engine::install(&store, &name)? {
            println!("installed {installed}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
