//! Builds one image directory with herd as a library and prints its name
//! and manifest digest.
//!
//!     cargo run --example build_image -- aci/aci-busybox /tmp/store

use herd::build::{BuildOptions, build_image};
use herd::store::Store;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(dir), Some(store)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: build_image IMAGE_DIR STORE_DIR");
    };
    let store = Store::open(&store)?;
    let built = build_image(&dir, &store, &BuildOptions::default())?;
    println!("{} {}", built.name, built.manifest.digest());
    Ok(())
}
