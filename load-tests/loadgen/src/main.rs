//! `crossl-loadgen`: see load-tests/README.md.

use clap::Parser;

use crossl_loadgen::config::LoadArgs;
use crossl_loadgen::{report, run};

fn main() -> anyhow::Result<()> {
    let args = LoadArgs::parse();
    args.validate()?;
    // One thread by default: the generator's figures then mean "per generator core" (pin it with taskset).
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let result = runtime.block_on(run::run(&args))?;
    let table = report::markdown(&result);
    print!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table)?;
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)?;
    }
    Ok(())
}
