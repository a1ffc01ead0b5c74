//! The `ucri` binary: daemon, CLI and the hidden roles it re-executes itself as.

fn main() -> std::process::ExitCode {
    ucri::main()
}
