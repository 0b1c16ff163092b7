//! `cargo run --example man -- DIR`: writes DIR/redtether.1 from the agent's clap definitions
//! and packaging/man/redtether.tail (packaging/build.sh gzips it into the packages).

use clap::CommandFactory;

fn main() -> std::io::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/man".into()));
    let page = redtether_host::manpage::render(redtether::cli::Cli::command(), include_str!("redtether.tail"))?;
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("redtether.1"), page)
}
