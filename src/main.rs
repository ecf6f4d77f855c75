//! Thin entry point: parse arguments, set up logging, run the command, map errors to exit codes.

use std::process::ExitCode;

use bifrost_requirements::{cli, cli::Cli, telemetry};

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::from_process();
    telemetry::init(cli.log_format, &cli.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // Errors are built redacted; `say` redacts again, the last line of defence.
            telemetry::say(tracing::Level::ERROR, &format!("error: {e}"));
            ExitCode::from(e.exit_code())
        }
    }
}
