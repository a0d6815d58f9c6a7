//! Load a topology file and print each host's derived role: `cargo run --example show_roles -- FILE`.

use std::path::PathBuf;

fn main() {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: show_roles TOPOLOGY.yaml");
        std::process::exit(2);
    };
    let topo = match repltool::topology::load(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(repltool::error::exit_code(&e));
        }
    };
    println!("cluster {} ({})", topo.name, topo.file.display());
    println!(
        "{:<12} {:<14} {:<12} {:<10} {:<22} {:<10} slaves",
        "host", "role", "master", "peer", "address", "server_id"
    );
    for h in &topo.hosts {
        let address = format!("{}:{}", h.address, h.mysql.port);
        println!(
            "{:<12} {:<14} {:<12} {:<10} {:<22} {:<10} {}",
            h.name,
            h.role.as_str(),
            h.master.as_deref().unwrap_or("-"),
            h.peer.as_deref().unwrap_or("-"),
            address,
            h.server_id,
            if h.slaves.is_empty() {
                "-".to_string()
            } else {
                h.slaves.join(", ")
            }
        );
    }
}
