//! `rete tap ...`

use clap::Subcommand;
use rete::{Engine, Result};

use super::output;

#[derive(Subcommand)]
pub enum TapCommand {
    /// Create a persistent tap device plugged into a network's bridge
    Create {
        name: String,
        #[arg(long)]
        network: String,
    },
    /// Remove a tap device
    Rm { name: String },
    /// List tap devices
    Ls,
}

pub fn run(engine: &mut Engine, cmd: TapCommand) -> Result<i32> {
    match cmd {
        TapCommand::Create { name, network } => {
            engine.create_tap(&name, &network)?;
            println!("{name}");
        }
        TapCommand::Rm { name } => engine.remove_tap(&name)?,
        TapCommand::Ls => {
            let rows: Vec<Vec<String>> = engine
                .taps()?
                .into_iter()
                .map(|t| vec![t.name, t.network])
                .collect();
            output::table(&["NAME", "NETWORK"], &rows);
        }
    }
    Ok(0)
}
