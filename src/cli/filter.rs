//! `rlm-sandbox filter`: the egress filter on stdin, for pipelines and
//! tests.

use std::io::{Read, Write};

use anyhow::Context;
use clap::Args;
use rlm_sandbox::egress::Stream;

use super::egress::{ContextArgs, EgressArgs};

#[derive(Args, Debug)]
pub struct FilterArgs {
    #[command(flatten)]
    pub egress: EgressArgs,
    #[command(flatten)]
    pub contexts: ContextArgs,
    /// Print one JSON object {"text": ..., "findings": [...]} instead of the text
    #[arg(long)]
    pub json: bool,
    /// Name the input stream in findings (stdout or stderr)
    #[arg(long, value_name = "STREAM", default_value = "stdout", value_parser = parse_stream)]
    pub stream: Stream,
}

fn parse_stream(s: &str) -> Result<Stream, String> {
    match s {
        "stdout" => Ok(Stream::Stdout),
        "stderr" => Ok(Stream::Stderr),
        _ => Err(format!(
            "expected stdout or stderr (flag --stream), got {s:?}"
        )),
    }
}

/// Filters stdin to stdout; exit 0 whatever was found.
pub fn run(args: &FilterArgs) -> anyhow::Result<i32> {
    let filter = args.egress.to_filter(&args.contexts.context)?;
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut input)
        .context("cannot read stdin")?;
    let filtered = filter.filter_bytes(args.stream, input);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &filtered).context("cannot write the result")?;
        out.write_all(b"\n")?;
    } else {
        out.write_all(filtered.text.as_bytes())?;
        for f in &filtered.findings {
            eprintln!(
                "rlm-sandbox: egress: {} on {} at bytes {}..{}: {:?}",
                f.kind,
                f.stream.name(),
                f.span[0],
                f.span[1],
                f.action
            );
        }
    }
    out.flush()?;
    Ok(0)
}
