//! The `rete` command: a thin frontend over the engine.

mod cli;
mod cni;

fn main() {
    // Installed as a CNI plugin, rete is called with CNI_COMMAND set; as
    // `rete-ipam` (a link to this binary) it serves only IPAM.
    if std::env::var_os("CNI_COMMAND").is_some() {
        let argv0 = std::env::args_os().next().unwrap_or_default();
        let name = std::path::Path::new(&argv0).file_name().unwrap_or_default();
        let kind = if name == "rete-ipam" {
            cni::Kind::Ipam
        } else {
            cni::Kind::Rete
        };
        std::process::exit(cni::main(kind));
    }
    std::process::exit(cli::main());
}
