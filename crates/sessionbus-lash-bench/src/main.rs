//! `lash-store-bench`: see `--help` and the crate's documentation.

use sessionbus_lash_bench::error::BenchError;
use sessionbus_lash_bench::options::{HELP, Options};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match bench().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lash-store-bench: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn bench() -> Result<(), BenchError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = Options::parse(&args)?;
    if options.help {
        println!("{HELP}");
        return Ok(());
    }
    let _ = sessionbus_lash::install_crypto_provider();
    let report = sessionbus_lash_bench::run(&options, |measurement| {
        eprintln!(
            "{} on {}: {} round(s) ({})",
            measurement.durability.name(),
            measurement.store.name(),
            measurement.rounds.len(),
            measurement.configuration
        );
    })
    .await?;
    print!("{}", report.table());
    if let Some(path) = &options.out {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|err| BenchError::Usage(format!("the report is not JSON: {err}")))?;
        std::fs::write(path, json).map_err(|err| BenchError::io(&format!("write {}", path.display()), err))?;
    }
    Ok(())
}
