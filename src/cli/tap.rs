//! `rete tap ...`

use clap::Subcommand;
use rete::{Engine, Result};

use super::{output, Format};

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
    Ls {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

pub fn run(engine: &mut Engine, cmd: TapCommand) -> Result<i32> {
    match cmd {
        TapCommand::Create { name, network } => {
            engine.create_tap(&name, &network)?;
            println!("{name}");
        }
        TapCommand::Rm { name } => engine.remove_tap(&name)?,
        TapCommand::Ls {
            format: Format::Json,
        } => output::json(&engine.taps()?),
        TapCommand::Ls {
            format: Format::Table,
        } => {
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
