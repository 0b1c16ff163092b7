//! `cargo run -p redtether-hub --example man -- DIR`: writes DIR/redtether-hub.1 from the hub's
//! clap definitions and packaging/man/redtether-hub.tail (packaging/build.sh gzips it into the
//! packages).

use clap::CommandFactory;

fn main() -> std::io::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/man".into()));
    let tail = include_str!("../../../packaging/man/redtether-hub.tail");
    let page = redtether_host::manpage::render(redtether_hub::cli::HubCli::command(), tail)?;
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("redtether-hub.1"), page)
}
