//! `crossl-serve` binary: `serve` runs the service, `replay` streams recorded data to one,
//! `check-model` validates a model folder.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Streaming human-activity recognition service for CroSSL models.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service (HTTP/WebSocket, gRPC and metrics listeners).
    // Boxed: these flag sets dwarf check-model's (clippy::large_enum_variant).
    Serve(Box<crossl_serve::config::ServeArgs>),
    /// Stream DSADS recordings to a running service.
    Replay(Box<crossl_serve::replay::ReplayArgs>),
    /// Check a model folder (manifest, sha256, graph, golden.json parity) without serving it.
    CheckModel(crossl_serve::check::CheckArgs),
}

fn init_tracing(json: bool) {
    use std::io::IsTerminal;

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    // Colour only on a terminal: a log redirected to a file or a pipe (systemd, kubectl logs, `> server.log`)
    // must not carry ANSI escape codes. NO_COLOR (https://no-color.org) turns it off on a terminal too.
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_tracing(args.log_json);
            crossl_serve::app::serve(*args, crossl_serve::signal::shutdown_signal()).await
        }
        Command::CheckModel(args) => {
            init_tracing(false);
            let summary = crossl_serve::check::run(&args)?;
            tracing::info!("{summary}");
            Ok(())
        }
        Command::Replay(args) => {
            init_tracing(false);
            crossl_serve::replay::run(*args).await
        }
    }
}
