//! The `rlm-sandbox` command: parse, call the library, map to exit codes.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
