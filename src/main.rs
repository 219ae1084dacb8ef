//! The `source-postgres` binary.
//!
//! Without arguments it is the capture connector: requests on stdin, responses on stdout,
//! JSON logs on stderr, exit 0 at end of input and exit 1 with one error line on failure.
//! `preview` runs a capture from a catalog YAML file the way the Flow runtime would, and
//! `schemas --write` regenerates the committed `spec/` files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The local runner lives in the binary, not in the connector library: it spawns processes,
// reads catalog YAML and reports with anyhow, none of which the connector itself needs.
#[allow(clippy::disallowed_macros)] // anyhow is the binary's error type, allowed outside the library
mod preview;

#[derive(Parser)]
#[command(name = "source-postgres", version, about = "PostgreSQL change-data-capture connector for Flow")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a capture from a catalog YAML file, printing documents as ["collection", doc] lines.
    Preview(preview::PreviewArgs),
    /// Print (or write under spec/) the generated configuration schemas.
    Schemas {
        /// Write spec/endpoint-config.schema.json and spec/resource-config.schema.json (and the
        /// batch connector's, spec/batch-*.schema.json).
        #[arg(long)]
        write: bool,
        /// The directory to write into.
        #[arg(long, default_value = "spec")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    source_postgres::log::init();
    source_postgres::log::install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // --help and --version are not failures.
            let code = if err.use_stderr() { 1 } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    // One worker thread unless TOKIO_WORKER_THREADS asks for more. The capture is one task
    // that encodes every document; further workers only run the database connections'
    // tasks beside it, and handing their messages from thread to thread cost more CPU than
    // the parallelism gave back (docs/performance.md, finding 16).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => return fail(&format!("cannot start the async runtime: {err}")),
    };
    let result: anyhow::Result<Result<(), source_postgres::error::Error>> = runtime.block_on(async move {
        match cli.command {
            // On a worker thread, not this one: the thread that waits on the sockets then
            // runs the capture itself when data arrives. Run here (`block_on`), every
            // wake-up of the capture was a hand-off between two threads, whose context
            // switches cost more CPU than the replication messages they carried
            // (docs/performance.md, streaming).
            None => Ok(tokio::spawn(source_postgres::run_connector()).await?),
            Some(Command::Preview(args)) => preview::run(args).await.map(Ok),
            Some(Command::Schemas { write, dir }) => write_schemas(write, &dir).map(Ok),
        }
    });
    // Requests may leave replication or stdin tasks parked; don't wait for them.
    runtime.shutdown_background();
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            source_postgres::log::log_error(&err);
            ExitCode::from(1)
        }
        Err(err) => fail(&format!("{err:#}")),
    }
}

fn fail(message: &str) -> ExitCode {
    source_postgres::log::log_fatal(message, BTreeMap::new());
    ExitCode::from(1)
}

fn write_schemas(write: bool, dir: &std::path::Path) -> anyhow::Result<()> {
    let files = [
        ("endpoint-config.schema.json", source_postgres::spec::endpoint_config_schema()),
        ("resource-config.schema.json", source_postgres::spec::resource_config_schema()),
        ("batch-endpoint-config.schema.json", source_postgres::batch::endpoint_config_schema()),
        ("batch-resource-config.schema.json", source_postgres::batch::resource_config_schema()),
    ];
    for (name, schema) in files {
        let text = serde_json::to_string_pretty(&schema)? + "\n";
        if write {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join(name), text)?;
        } else {
            print!("{text}");
        }
    }
    Ok(())
}
