//! The AWS shared files (`~/.aws/credentials`, `~/.aws/config`): the settings an object store
//! takes from them when the environment does not give them.
//!
//! What is read, as the AWS tools read it: the profile `AWS_PROFILE` (default `default`); from
//! the credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`) its
//! section `[NAME]`, from the config file (`AWS_CONFIG_FILE`, default `~/.aws/config`) its
//! section `[profile NAME]` (`[default]` for the default profile). Keys used:
//! `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token` (the credentials file
//! first), `region` and `endpoint_url`. The environment wins: file credentials are used only
//! when `AWS_ACCESS_KEY_ID` is unset, and a file's region or endpoint only when no variable
//! gives one.

use std::path::{Path, PathBuf};

use ini::{Ini, ParseOption};

/// The largest shared file read: they hold a few profiles, not megabytes.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why the shared files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A shared file exists but cannot be read.
    #[error("cannot read the AWS shared file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A shared file is not INI text, or too large.
    #[error("the AWS shared file {path} is not a profile file: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `AWS_PROFILE` names a profile neither file has.
    #[error("AWS_PROFILE={0}, but no shared file has that profile ({1})")]
    NoSuchProfile(String, String),
}

/// Settings from the shared files, as object store config keys (`aws_region`…) and values.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// `(key, value)` pairs the environment does not already set.
    pub settings: Vec<(&'static str, String)>,
    /// The files read, for the log (never their contents).
    pub files: Vec<PathBuf>,
}

/// Reads the shared files for what `env` (the process environment, in tests a map) leaves unset.
///
/// # Errors
/// [`ProfileError`] when a file that exists cannot be read or parsed, or `AWS_PROFILE` names a
/// profile no file has.
pub fn load(env: &dyn Fn(&str) -> Option<String>) -> Result<Profile, ProfileError> {
    let home = env("HOME").map(PathBuf::from);
    let file =
        |var: &str, default: &str| env(var).map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(default)));
    let named = env("AWS_PROFILE").filter(|p| !p.is_empty());
    let name = named.clone().unwrap_or_else(|| "default".to_owned());
    let mut profile = Profile::default();
    let mut found = false;
    let mut values: Vec<(&'static str, String)> = Vec::new();
    let credentials = file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    let config = file("AWS_CONFIG_FILE", ".aws/config");
    let config_section = if name == "default" { "default".to_owned() } else { format!("profile {name}") };
    for (path, section) in [(credentials, name.clone()), (config, config_section)] {
        let Some(path) = path else { continue };
        let Some(ini) = read(&path)? else { continue };
        profile.files.push(path);
        let Some(props) = ini.section(Some(section.as_str())) else { continue };
        found = true;
        for (file_key, key) in [
            ("aws_access_key_id", "aws_access_key_id"),
            ("aws_secret_access_key", "aws_secret_access_key"),
            ("aws_session_token", "aws_session_token"),
            ("region", "aws_region"),
            ("endpoint_url", "aws_endpoint_url"),
        ] {
            if let Some(v) = props.get(file_key).map(str::trim).filter(|v| !v.is_empty())
                && !values.iter().any(|(k, _)| *k == key)
            {
                values.push((key, v.to_owned()));
            }
        }
    }
    if let Some(named) = named
        && !found
    {
        let files = profile.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        return Err(ProfileError::NoSuchProfile(named, if files.is_empty() { "none found".into() } else { files }));
    }
    let set = |vars: &[&str]| vars.iter().any(|v| env(v).is_some_and(|v| !v.is_empty()));
    let env_credentials = set(&["AWS_ACCESS_KEY_ID"]);
    let env_region = set(&["AWS_REGION", "AWS_DEFAULT_REGION"]);
    let env_endpoint = set(&["AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ENDPOINT_URL_S3"]);
    profile.settings = values
        .into_iter()
        .filter(|(k, _)| match *k {
            "aws_region" => !env_region,
            "aws_endpoint_url" => !env_endpoint,
            _ => !env_credentials,
        })
        .collect();
    Ok(profile)
}

/// A shared file's INI, `None` when it does not exist.
fn read(path: &Path) -> Result<Option<Ini>, ProfileError> {
    use std::io::Read as _;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ProfileError::Read { path: path.to_owned(), source }),
    };
    let mut text = String::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| ProfileError::Read { path: path.to_owned(), source })?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ProfileError::Parse { path: path.to_owned(), reason: "over 1 MiB".into() });
    }
    // Secrets hold `/`, `+` and `\`: values are taken as written, no escapes or quotes.
    let opt = ParseOption { enabled_quote: false, enabled_escape: false, ..ParseOption::default() };
    Ini::load_from_str_opt(&text, opt)
        .map(Some)
        .map_err(|e| ProfileError::Parse { path: path.to_owned(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn profiles_from_both_files_and_the_environment_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".aws")).unwrap();
        std::fs::write(
            dir.path().join(".aws/credentials"),
            "[default]\naws_access_key_id = GKdefault\naws_secret_access_key = s/e+c\\ret\n\n[ops]\naws_access_key_id=GKops\naws_secret_access_key=opsecret\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join(".aws/config"),
            "[default]\nregion = garage\nendpoint_url = http://127.0.0.1:3900\n[profile ops]\nregion = eu-west-3\n",
        )
        .unwrap();
        let home = dir.path().display().to_string();
        let p = load(&env_of(&[("HOME", home.clone())])).unwrap();
        assert_eq!(
            p.settings,
            vec![
                ("aws_access_key_id", "GKdefault".to_owned()),
                ("aws_secret_access_key", "s/e+c\\ret".to_owned()),
                ("aws_region", "garage".to_owned()),
                ("aws_endpoint_url", "http://127.0.0.1:3900".to_owned()),
            ]
        );
        assert_eq!(p.files.len(), 2);
        let p = load(&env_of(&[("HOME", home.clone()), ("AWS_PROFILE", "ops".into())])).unwrap();
        assert_eq!(p.settings.len(), 3);
        assert!(p.settings.contains(&("aws_region", "eu-west-3".to_owned())));
        // Credentials and region from the environment: the files give only the endpoint.
        let p = load(&env_of(&[
            ("HOME", home.clone()),
            ("AWS_ACCESS_KEY_ID", "GKenv".into()),
            ("AWS_DEFAULT_REGION", "x".into()),
        ]))
        .unwrap();
        assert_eq!(p.settings, vec![("aws_endpoint_url", "http://127.0.0.1:3900".to_owned())]);
        let e = load(&env_of(&[("HOME", home), ("AWS_PROFILE", "nope".into())])).unwrap_err();
        assert!(e.to_string().contains("AWS_PROFILE=nope"), "{e}");
    }

    #[test]
    fn no_files_is_no_settings_and_a_bad_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().display().to_string();
        assert_eq!(load(&env_of(&[("HOME", home)])).unwrap(), Profile::default());
        let bad = dir.path().join("creds");
        std::fs::write(&bad, "[default\naws_access_key_id = x\n").unwrap();
        let e = load(&env_of(&[("AWS_SHARED_CREDENTIALS_FILE", bad.display().to_string())])).unwrap_err();
        assert!(matches!(e, ProfileError::Parse { .. }), "{e}");
    }
}
