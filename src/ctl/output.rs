//! How `ucri ctl` prints what the CRI answers.

/// How lists are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// The CRI response as JSON.
    Json,
    /// The CRI response as YAML.
    Yaml,
}

/// Prints `value` as JSON or YAML (a table is the caller's business).
pub fn print_structured(value: &serde_json::Value, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Yaml => print!("{}", yaml_serde::to_string(value)?),
        _ => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(())
}
