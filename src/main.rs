//! `callbot-facade`: parse the command line, set up logs, run the chosen subcommand until a
//! signal. Everything else lives in the library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use callbot_facade::{
    app::Application,
    cli,
    config::{Cli, Command, Settings},
    shutdown_signal, simulator, telemetry,
};
use clap::Parser;

/// mimalloc instead of glibc malloc: allocation is a large share of a call's work, and glibc's
/// per-thread arenas keep freed memory (BENCHMARKS.md has the figures).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's whole message: the reason on the first line, then the missing flags, the
            // usage line and where to read more.
            let text = e.render().to_string();
            eprint!("callbot-facade: {}", text.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Some(Command::Simulate(args)) => {
            let telemetry = telemetry::init(args.log_format);
            let result = simulate(args).await;
            telemetry.shutdown().await;
            result
        }
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Campaign(args)) => return exit(cli::campaign::run(args).await),
        Some(Command::Scripts(args)) => return exit(cli::scripts::run(args).await),
        Some(Command::Watch(args)) => return exit(cli::watch::run(args).await),
        Some(Command::Report(args)) => return exit(cli::report::run(args).await),
        Some(Command::Sessions(args)) => return exit(cli::sessions::run(args).await),
        None => serve(cli.serve).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("callbot-facade: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An operator command's exit: 0, or its error on stderr and its code (1; 2 for a timeout).
fn exit(result: Result<(), cli::CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("callbot-facade: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn serve(args: Settings) -> Result<(), Box<dyn std::error::Error>> {
    let format = args.server.log_format;
    let settings = args.check()?;
    let telemetry = telemetry::init(format);
    let result = run(settings).await;
    // Export the spans still buffered (the drain's last calls included) before exiting.
    telemetry.shutdown().await;
    result
}

async fn run(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    let app = Application::build(settings).await?;
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

async fn simulate(args: callbot_facade::config::SimulateArgs) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "callBot simulator listening");
    let config =
        simulator::SimConfig { api_keys: args.api_keys, token_ttl: args.token_ttl, time_scale: args.time_scale };
    simulator::run(listener, config, shutdown_signal()).await?;
    Ok(())
}
