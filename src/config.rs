//! Configuration layering (docs/protocol.md §1): flags override `CHORUS_<FLAG>` environment variables,
//! which override the `--config` TOML file, which overrides built-in defaults.
//!
//! The file uses the long flags' names with `_` for `-` (`admin_token = "…"`,
//! `listen = ["h3://0.0.0.0:443"]`). Top-level keys apply to the command being run; a table
//! named after a command (`[edge]`) applies only to it. A key no command knows is an error.
//!
//! Implementation: parse once; for every file key whose flag was neither on the command line
//! nor in the environment, append it as a flag; parse again. So the file goes through exactly
//! the same validation as flags.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Adds `CHORUS_<ID>` environment variables to every argument of every subcommand (and the
/// global ones), so each flag can come from the environment.
pub(crate) fn with_env(cmd: Command) -> Command {
    fn add(cmd: Command) -> Command {
        let cmd = cmd.mut_args(|a| {
            if a.is_positional() || a.get_id() == "help" || a.get_id() == "version" {
                return a;
            }
            let long = a.get_long().unwrap_or(a.get_id().as_str());
            let name = format!("CHORUS_{}", long.replace('-', "_").to_ascii_uppercase());
            a.env(name)
        });
        let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_owned()).collect();
        names.into_iter().fold(cmd, |c, n| c.mut_subcommand(n, add))
    }
    add(cmd)
}

/// Returns `args` with the config file's settings added where neither a flag nor the
/// environment set them. `Ok(None)` when no config file is in use.
///
/// # Errors
/// A message (for exit status 2) when the file cannot be read, is not TOML, or names an
/// unknown key.
pub(crate) fn merge(cmd: &Command, matches: &ArgMatches, args: &[OsString]) -> Result<Option<Vec<OsString>>, String> {
    let Some(path) = matches.get_one::<std::path::PathBuf>("config") else {
        return Ok(None);
    };
    let table = read(path)?;
    // Walk down to the innermost subcommand that was run (e.g. `keys generate`).
    let mut chain = vec![(cmd, matches)];
    while let Some((name, sub_m)) = chain.last().and_then(|(_, m)| m.subcommand()) {
        let Some(sub_c) = chain.last().and_then(|(c, _)| c.find_subcommand(name)) else {
            break;
        };
        chain.push((sub_c, sub_m));
    }
    let (leaf_cmd, leaf_m) = *chain.last().unwrap_or(&(cmd, matches));
    let known_sections: Vec<&str> = all_names(cmd);

    let mut extra = Vec::new();
    let mut apply = |key: &str, value: &toml::Value, c: &Command, m: &ArgMatches| -> Result<bool, String> {
        // A key names a long flag with `_` for `-` (`admin_token` → `--admin-token`).
        let long = key.replace('_', "-");
        let Some(arg) = c.get_arguments().find(|a| a.get_long() == Some(long.as_str())) else {
            return Ok(false);
        };
        if matches!(m.value_source(arg.get_id().as_str()), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            return Ok(true);
        }
        let flag = format!("--{}", arg.get_long().unwrap_or(key));
        let takes_value = arg.get_action().takes_values();
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(items) => items.iter().collect(),
            v => vec![v],
        };
        for v in values {
            match v {
                toml::Value::Boolean(b) if !takes_value => {
                    if *b {
                        extra.push(OsString::from(&flag));
                    }
                }
                toml::Value::String(s) => extra.extend([OsString::from(&flag), OsString::from(s)]),
                toml::Value::Integer(i) => extra.extend([OsString::from(&flag), OsString::from(i.to_string())]),
                toml::Value::Float(f) => extra.extend([OsString::from(&flag), OsString::from(f.to_string())]),
                toml::Value::Boolean(b) => extra.extend([OsString::from(&flag), OsString::from(b.to_string())]),
                _ => {
                    return Err(format!(
                        "{}: key {key:?} must be a string, number, boolean or list of them",
                        path.display()
                    ));
                }
            }
        }
        Ok(true)
    };

    let leaf_name = leaf_cmd.get_name().to_owned();
    for (key, value) in &table {
        if let toml::Value::Table(section) = value {
            if key == &leaf_name {
                for (k, v) in section {
                    if !apply(k, v, leaf_cmd, leaf_m)? && !apply(k, v, cmd, matches)? {
                        return Err(format!(
                            "{}: [{key}] has unknown key {k:?} (keys are the long flags of `chorus {key} --help`, with _ for -)",
                            path.display()
                        ));
                    }
                }
            } else if !known_sections.contains(&key.as_str()) {
                return Err(format!("{}: unknown section [{key}]", path.display()));
            }
            continue;
        }
        if key == "config" {
            continue;
        }
        if !apply(key, value, leaf_cmd, leaf_m)? && !apply(key, value, cmd, matches)? {
            // A top-level key that only another command knows is fine (one file, many nodes).
            if !any_knows(cmd, key) {
                return Err(format!("{}: unknown key {key:?} (keys are the long flags, with _ for -)", path.display()));
            }
        }
    }
    if extra.is_empty() {
        return Ok(None);
    }
    let mut out = args.to_vec();
    out.extend(extra);
    Ok(Some(out))
}

fn read(path: &Path) -> Result<toml::Table, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("config file {}: {e}", path.display()))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(format!("config file {}: larger than 1 MiB", path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("config file {}: {e}", path.display()))?;
    text.parse::<toml::Table>().map_err(|e| format!("config file {}: {e}", path.display()))
}

fn all_names(cmd: &Command) -> Vec<&str> {
    let mut out = Vec::new();
    for s in cmd.get_subcommands() {
        out.push(s.get_name());
        out.extend(all_names(s));
    }
    out
}

fn any_knows(cmd: &Command, key: &str) -> bool {
    let long = key.replace('_', "-");
    cmd.get_arguments().any(|a| a.get_long() == Some(long.as_str())) || cmd.get_subcommands().any(|s| any_knows(s, key))
}
