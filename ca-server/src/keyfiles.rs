//! The CA's private key files at rest: permission checks before they are used, the
//! optional passphrase (`[ca] key_passphrase_env` / `key_passphrase_file`), and reading /
//! writing the keys encrypted with it. The cryptography is in `ca_core::keys`; this module
//! does the I/O. No error or log line here holds key bytes or the passphrase.

use std::path::Path;

use ca_core::keys::{self, Pkcs8Key};
use zeroize::Zeroizing;

use crate::app::DataDir;
use crate::config::CaConfig;
use crate::error::AppError;

/// The passphrase for the CA keys and where it came from (for messages: the setting, never
/// the value).
pub struct Passphrase {
    secret: Zeroizing<String>,
    source: String,
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Passphrase(<redacted>, from {})", self.source)
    }
}

impl Passphrase {
    pub fn bytes(&self) -> &[u8] {
        self.secret.as_bytes()
    }
    /// The setting it came from, e.g. `[ca] key_passphrase_env = "CA_KEY_PASS"`.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// The configured passphrase, if any. Exactly one of the two settings may be set; the file
/// must be mode 0600 or 0400; neither may be empty. One trailing newline is dropped.
pub fn passphrase(ca: &CaConfig) -> Result<Option<Passphrase>, AppError> {
    match (&ca.key_passphrase_env, &ca.key_passphrase_file) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(AppError::Config(
            "[ca] key_passphrase_env and key_passphrase_file are both set; set only one".into(),
        )),
        (Some(var), None) => {
            let source = format!("[ca] key_passphrase_env = {var:?}");
            let value = match std::env::var(var) {
                Ok(v) => Zeroizing::new(v),
                Err(std::env::VarError::NotPresent) => {
                    return Err(AppError::Config(format!(
                        "{source}: the environment variable {var} is not set"
                    )));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(AppError::Config(format!(
                        "{source}: the environment variable {var} is not valid UTF-8"
                    )));
                }
            };
            if value.is_empty() {
                return Err(AppError::Config(format!("{source}: the environment variable {var} is empty")));
            }
            Ok(Some(Passphrase { secret: value, source }))
        }
        (None, Some(path)) => {
            let source = format!("[ca] key_passphrase_file = {:?}", path.display().to_string());
            let secret = read_secret_file(path, &source, "passphrase")?;
            Ok(Some(Passphrase { secret, source }))
        }
    }
}

/// A secret held in a file (the key passphrase, the PKCS#11 PIN): refused unless mode 0600
/// or 0400, not UTF-8, or empty; one trailing newline is dropped. `source` names the
/// setting in messages, `what` the secret; the value never appears in an error.
pub fn read_secret_file(path: &Path, source: &str, what: &str) -> Result<Zeroizing<String>, AppError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| AppError::Config(format!("{source}: {e}")))?
            .permissions()
            .mode()
            & 0o777;
        if mode != 0o600 && mode != 0o400 {
            return Err(AppError::Config(format!(
                "{source}: the {what} file {} has mode {mode:04o}; it must be 0600 or 0400 \
                 (fix: chmod 600 {})",
                path.display(),
                path.display()
            )));
        }
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| AppError::Config(format!("{source}: {e}")))?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| AppError::Config(format!("{source}: the {what} file is not UTF-8")))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(AppError::Config(format!("{source}: the {what} file is empty")));
    }
    Ok(Zeroizing::new(text.to_string()))
}

/// Refuse key files (and the keys dir) that group or others can access. Files that do not
/// exist are skipped (the root key is absent for an imported CA; `admin.key` before its
/// first issuance). Unix only.
pub fn check_permissions(dd: &DataDir) -> Result<(), AppError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode_of = |p: &Path| -> Result<Option<u32>, AppError> {
            match std::fs::metadata(p) {
                Ok(m) => Ok(Some(m.permissions().mode() & 0o7777)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(AppError::Config(format!("cannot stat {}: {e}", p.display()))),
            }
        };
        let keys = dd.keys();
        if let Some(mode) = mode_of(&keys)?
            && mode & 0o077 != 0
        {
            return Err(AppError::Config(format!(
                "the key directory {} has mode {mode:04o}: group or others can access it; \
                 refusing to start (fix: chmod 700 {})",
                keys.display(),
                keys.display()
            )));
        }
        // Rotated issuers' keys (`keys/issuing-*.key`, pending ones too) as well.
        let mut files = vec![dd.intermediate_key(), dd.root_key(), dd.admin_key()];
        if let Ok(entries) = std::fs::read_dir(&keys) {
            let more: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "key") && !files.contains(p))
                .collect();
            files.extend(more);
        }
        for file in files {
            if let Some(mode) = mode_of(&file)?
                && mode & 0o077 != 0
            {
                return Err(AppError::Config(format!(
                    "the private key {} has mode {mode:04o}: group or others can read or write it; \
                     refusing to start (fix: chmod 600 {})",
                    file.display(),
                    file.display()
                )));
            }
        }
    }
    let _ = dd;
    Ok(())
}

/// Read a CA key file: decrypt it when it is encrypted PKCS#8, else take it as it is.
pub fn read_key(path: &Path, pass: Option<&Passphrase>) -> Result<Pkcs8Key, AppError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
        AppError::Config(format!("the log records a CA but its key {} cannot be read: {e}", path.display()))
    })?);
    if keys::is_encrypted_pem(&bytes) {
        let Some(pass) = pass else {
            return Err(AppError::Config(format!(
                "the CA key {} is encrypted but no passphrase is configured; set \
                 [ca] key_passphrase_env or [ca] key_passphrase_file",
                path.display()
            )));
        };
        return keys::decrypt_pkcs8(&bytes, pass.bytes()).map_err(|e| match e {
            ca_core::Error::WrongPassphrase => AppError::Config(format!(
                "cannot decrypt the CA key {}: wrong passphrase (from {})",
                path.display(),
                pass.source()
            )),
            other => AppError::Config(format!("the CA key {}: {other}", path.display())),
        });
    }
    if let Some(pass) = pass {
        tracing::warn!(
            key = %path.display(),
            setting = pass.source(),
            "a key passphrase is configured but this CA key is stored unencrypted"
        );
    }
    let der = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let p = pem::parse(&bytes[..])
            .map_err(|e| AppError::Config(format!("the CA key {}: bad PEM: {e}", path.display())))?;
        p.into_contents()
    } else {
        bytes.to_vec()
    };
    Ok(Pkcs8Key::from_der(der))
}

/// A CA key file's contents: encrypted PKCS#8 when a passphrase is configured.
pub fn encode_key(key: &Pkcs8Key, pass: Option<&Passphrase>) -> Result<Zeroizing<String>, AppError> {
    match pass {
        Some(p) => Ok(Zeroizing::new(key.to_encrypted_pem(p.bytes())?)),
        None => Ok(key.to_pem()),
    }
}
