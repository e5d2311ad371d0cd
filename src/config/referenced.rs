//! The files a configuration names (`password_file`, `acl_file`,
//! `plugin_opt_config_file`), read and
//! checked together with it so that one run reports every error.
//!
//! An error in such a file names that file and its line, and also the
//! configuration line that named it; an error that has no line there (the
//! file cannot be read) is reported at the configuration line. TLS files are
//! read by the parser itself ([`super::tls`]): their errors are already at
//! the configuration line of their key.

use std::path::{Path, PathBuf};

use super::{read_text, Config, ConfigError, ConfigErrors, Origin};
use crate::auth::acl::AclFile;
use crate::auth::password::PasswordFile;
use crate::dynsec::{import_json, Imported};

/// A configuration with the password and ACL files it names, all checked.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub passwords: Option<PasswordFile>,
    pub acl: Option<AclFile>,
    /// The dynamic security file (`plugin_opt_config_file`), read.
    pub dynsec: Option<Imported>,
    /// Each listener's own password and ACL files (`per_listener_settings
    /// true`), read; one per `config.listeners`, in its order.
    pub listener_files: Vec<ListenerFiles>,
}

/// A listener's own password and ACL files, read (`None`: it names none).
#[derive(Debug, Default)]
pub struct ListenerFiles {
    pub passwords: Option<PasswordFile>,
    pub acl: Option<AclFile>,
}

/// A configuration line that names another file.
struct Reference<'a> {
    key: &'a str,
    path: &'a Path,
    config_file: &'a str,
    line: u32,
}

impl Reference<'_> {
    /// `e`, found in the named file, made to point at the configuration too.
    fn locate(&self, e: ConfigError) -> ConfigError {
        if e.line == 0 {
            let message = format!("{} {}: {}", self.key, self.path.display(), e.message);
            ConfigError::new(self.config_file, self.line, message)
        } else {
            let message = format!("{} ({} at {}:{})", e.message, self.key, self.config_file, self.line);
            ConfigError { message, ..e }
        }
    }

    fn load<T>(&self, errors: &mut Vec<ConfigError>, load: fn(&Path) -> Result<T, ConfigErrors>) -> Option<T> {
        match load(self.path) {
            Ok(t) => Some(t),
            Err(es) => {
                errors.extend(es.0.into_iter().map(|e| self.locate(e)));
                None
            }
        }
    }
}

pub(super) fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let name = path.display().to_string();
    let text = read_text(path, &name)?;
    let parsed = super::parse::parse(&text, &name);
    let mut errors = parsed.errors;
    let mut config = parsed.config;
    config.source = Some(path.to_path_buf());
    // The line that named the file: in this file, or in one it includes.
    let origin = |key: &str| parsed.key_lines.get(key).cloned().unwrap_or(Origin { file: name.clone(), line: 0 });
    let at = origin("password_file");
    let passwords = config.password_file.as_deref().and_then(|path| {
        let r = Reference { key: "password_file", path, config_file: &at.file, line: at.line };
        r.load(&mut errors, PasswordFile::load)
    });
    let at = origin("acl_file");
    let acl = config.acl_file.as_deref().and_then(|path| {
        let r = Reference { key: "acl_file", path, config_file: &at.file, line: at.line };
        r.load(&mut errors, AclFile::load)
    });
    let at = origin("plugin_opt_config_file");
    let dynsec = config.dynsec_file.as_deref().filter(|_| config.dynsec_plugin).and_then(|path| {
        let r = Reference { key: "plugin_opt_config_file", path, config_file: &at.file, line: at.line };
        r.load(&mut errors, load_dynsec)
    });
    let listener_files = config
        .listeners
        .iter()
        .map(|l| {
            let Some(a) = &l.auth else { return ListenerFiles::default() };
            ListenerFiles {
                passwords: a
                    .password_file
                    .as_ref()
                    .and_then(|p| load_at("password_file", p, &mut errors, PasswordFile::load)),
                acl: a.acl_file.as_ref().and_then(|p| load_at("acl_file", p, &mut errors, AclFile::load)),
            }
        })
        .collect();
    ConfigErrors::check(Loaded { config, passwords, acl, dynsec, listener_files }, errors)
}

/// A file a listener's line names, read; its errors point at that line.
fn load_at<T>(
    key: &str,
    (path, at): &(PathBuf, Origin),
    errors: &mut Vec<ConfigError>,
    load: fn(&Path) -> Result<T, ConfigErrors>,
) -> Option<T> {
    Reference { key, path, config_file: &at.file, line: at.line }.load(errors, load)
}

/// The dynamic security file, as the plugin reads it at start: it must
/// exist (`mosquitto_ctrl dynsec init` creates it) and be JSON.
pub fn load_dynsec(path: &Path) -> Result<Imported, ConfigErrors> {
    let name = path.display().to_string();
    let text = read_text(path, &name)?;
    import_json(&text).map_err(|e| ConfigErrors(vec![ConfigError::new(name, 0, e.to_string())]))
}
