//! The `rete` command: a thin frontend over the engine.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
