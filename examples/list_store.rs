//! Lists a store's images with their layer digests, reading the OCI
//! layout through herd's store module.
//!
//!     cargo run --example list_store -- /tmp/store

use herd::store::Store;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let Some(root) = std::env::args_os().nth(1).map(PathBuf::from) else {
        anyhow::bail!("usage: list_store STORE_DIR");
    };
    let store = Store::open(&root)?;
    for tag in store.tags()? {
        println!("{} {}", tag.name, tag.descriptor.digest());
        let manifest = store.read_manifest(&tag.descriptor)?;
        for layer in manifest.layers() {
            println!("  layer {} {} bytes", layer.digest(), layer.size());
        }
    }
    Ok(())
}
