//! `callbot-facade`: parse the command line, set up logs, run the chosen subcommand until a
//! signal. Everything else lives in the library.

use std::process::ExitCode;

use callbot_facade::{
    app::Application,
    config::{Cli, Command, Settings},
    shutdown_signal, simulator, telemetry,
};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Simulate(args)) => {
            telemetry::init(args.log_format);
            simulate(args).await
        }
        Some(Command::Serve(args)) => serve(args).await,
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

async fn serve(args: callbot_facade::config::ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let format = args.log_format;
    let settings = Settings::from_args(args)?;
    telemetry::init(format);
    let app = Application::build(settings).await?;
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

async fn simulate(args: callbot_facade::config::SimulateArgs) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "callBot simulator listening");
    let config = simulator::SimConfig { api_keys: args.api_keys, token_ttl: args.token_ttl };
    simulator::run(listener, config, shutdown_signal()).await?;
    Ok(())
}
