//! The issuing CA's key in a PKCS#11 token (an HSM; SoftHSM2 in the tests), through
//! `cryptoki`. This is the one place that decides where the issuing signer comes from
//! ([`issuing_signer`]), and the seam that key generation for a new issuing CA goes through
//! ([`generate_key`], [`open_key`]).
//!
//! Each module is loaded and `C_Initialize`d once per process and never finalized. The PIN
//! is read from `[ca.pkcs11] pin_file`, kept in a zeroizing secret for re-logins, and never
//! written to an error, a log line or an event.

mod keygen;
mod signer;

pub use signer::Pkcs11Signer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

use ca_core::keys::KeyAlgorithm;
use ca_core::signer::{Signer, SoftwareSigner};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::app::DataDir;
use crate::config::{Config, Pkcs11Config};
use crate::error::AppError;

/// Signatures asked of the token (process-wide: the signer exists before `Metrics`).
pub static SIGN_CALLS: AtomicU64 = AtomicU64::new(0);
/// Those that failed, after the one retry on a reopened session.
pub static SIGN_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Sessions reopened after the token reported them lost.
pub static SESSION_REOPENS: AtomicU64 = AtomicU64::new(0);

/// The issuing CA's signer: the `[ca.pkcs11]` token's key when configured, else the
/// software key `keys/intermediate.key` (decrypted with `[ca] key_passphrase_*` if set).
pub fn issuing_signer(config: &Config, dd: &DataDir) -> Result<Arc<dyn Signer>, AppError> {
    if let Some(p) = &config.ca.pkcs11 {
        return open_key(config, &p.key_label);
    }
    if !dd.intermediate_key().exists() && dd.root_key().exists() {
        return Err(AppError::Config(format!(
            "the log records a CA but its issuing key {} is missing; if that key is in a PKCS#11 \
             token, give the --config file with its [ca.pkcs11] section",
            dd.intermediate_key().display()
        )));
    }
    let pass = crate::keyfiles::passphrase(&config.ca)?;
    let key = crate::keyfiles::read_key(&dd.intermediate_key(), pass.as_ref())?;
    drop(pass);
    Ok(Arc::new(SoftwareSigner::from_pkcs8(key.der())?))
}

/// Generate a key pair labelled `label` inside the `[ca.pkcs11]` token (non-extractable,
/// sensitive, token object) and open it. Refused when the token already holds an object
/// with that label, and for ed25519.
pub fn generate_key(cfg: &Config, label: &str, alg: KeyAlgorithm) -> Result<Arc<dyn Signer>, AppError> {
    let p = pkcs11_config(cfg)?;
    keygen::check_algorithm(alg)?;
    let token = Arc::new(Token::open(p)?);
    keygen::generate_pair(&token, label, alg)?;
    tracing::info!(token = %token.label, key = label, algorithm = %alg, "generated the issuing key in the token");
    Ok(Arc::new(Pkcs11Signer::open(token, label, sessions(cfg))?))
}

/// Open the key pair labelled `label` in the `[ca.pkcs11]` token, with one session per
/// signing worker plus two (CRL, OCSP and TLS work signs outside the pool).
pub fn open_key(cfg: &Config, label: &str) -> Result<Arc<dyn Signer>, AppError> {
    let token = Arc::new(Token::open(pkcs11_config(cfg)?)?);
    Ok(Arc::new(Pkcs11Signer::open(token, label, sessions(cfg))?))
}

/// `init --pkcs11`: the issuing key pair generated in the token under `key_label`, and a
/// software root (`[ca] key_algorithm`, written to `keys/root.key` by `ensure_ca`) that
/// certifies it.
pub fn generate_ca(cfg: &Config, p: &Pkcs11Config) -> Result<ca_core::ca::CaMaterial, AppError> {
    let alg = cfg.ca.key_algorithm;
    keygen::check_algorithm(alg)?;
    let signer = generate_key(cfg, &p.key_label, alg)?;
    Ok(ca_core::ca::generate_with_issuing_signer(alg, &cfg.ca.name, time::OffsetDateTime::now_utc(), signer)?)
}

/// `key "L" in PKCS#11 token "T"`, for messages about the configured key.
pub fn describe(p: &Pkcs11Config) -> String {
    format!("key {:?} in PKCS#11 token {:?}", p.key_label, p.token_label)
}

fn sessions(cfg: &Config) -> usize {
    cfg.workers() + 2
}

fn pkcs11_config(cfg: &Config) -> Result<&Pkcs11Config, AppError> {
    cfg.ca
        .pkcs11
        .as_ref()
        .ok_or_else(|| AppError::Config("no [ca.pkcs11] section in the configuration".into()))
}

/// One token of a loaded module, with the user PIN to log sessions in.
pub(crate) struct Token {
    ctx: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    pub(crate) label: String,
    pin_source: String,
}

impl Token {
    /// Load the module (once per process), find the slot whose token carries
    /// `token_label`, read the PIN file, and check the PIN with one login.
    pub(crate) fn open(p: &Pkcs11Config) -> Result<Token, AppError> {
        let pin_source = format!("[ca.pkcs11] pin_file = {:?}", p.pin_file.display().to_string());
        let pin_text = crate::keyfiles::read_secret_file(&p.pin_file, &pin_source, "PIN")?;
        let pin = AuthPin::new(pin_text.as_str().into());
        drop(pin_text);
        let ctx = module(&p.module)?;
        let slots = ctx.get_slots_with_token().map_err(|e| {
            AppError::Config(format!("PKCS#11 module {}: listing slots: {}", p.module.display(), ck(&e)))
        })?;
        let mut seen = Vec::new();
        let mut found = None;
        for slot in slots {
            let Ok(info) = ctx.get_token_info(slot) else { continue };
            let label = info.label().trim_end().to_string();
            if label == p.token_label {
                found = Some(slot);
                break;
            }
            if !label.is_empty() {
                seen.push(format!("{label:?}"));
            }
        }
        let Some(slot) = found else {
            return Err(AppError::Config(format!(
                "no PKCS#11 token labelled {:?} in module {} (tokens present: {})",
                p.token_label,
                p.module.display(),
                if seen.is_empty() { "none".to_string() } else { seen.join(", ") }
            )));
        };
        let token = Token { ctx, slot, pin, label: p.token_label.clone(), pin_source };
        // A wrong PIN fails here, at start, with a message that says so.
        drop(token.session(false)?);
        Ok(token)
    }

    /// A new session, logged in as the user (a token keeps one login state for all of a
    /// process's sessions, so "already logged in" is success).
    pub(crate) fn session(&self, read_write: bool) -> Result<Session, AppError> {
        let opened = if read_write {
            self.ctx.open_rw_session(self.slot)
        } else {
            self.ctx.open_ro_session(self.slot)
        };
        let session = opened.map_err(|e| self.error("opening a session", &e))?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(AppError::Config(format!(
                "PKCS#11 token {:?} refused the user PIN from {} (C_Login: PinIncorrect)",
                self.label, self.pin_source
            ))),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(AppError::Config(format!(
                "PKCS#11 token {:?}: the user PIN is locked (C_Login: PinLocked); unlock it with the SO PIN",
                self.label
            ))),
            Err(e) => Err(self.error("logging in", &e)),
        }
    }

    pub(crate) fn error(&self, doing: &str, e: &CkError) -> AppError {
        AppError::Config(format!("PKCS#11 token {:?}: {doing}: {}", self.label, ck(e)))
    }
}

/// The loaded, initialized module at `path`; loaded on first use, then shared.
fn module(path: &Path) -> Result<Pkcs11, AppError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = MODULES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = map.get(path) {
        return Ok(m.clone());
    }
    let ctx = Pkcs11::new(path).map_err(|e| {
        AppError::Config(format!("[ca.pkcs11] module {}: cannot load it: {}", path.display(), ck(&e)))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(AppError::Config(format!(
                "[ca.pkcs11] module {}: C_Initialize: {}",
                path.display(),
                ck(&e)
            )));
        }
    }
    map.insert(path.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// A short form of a cryptoki error (`C_Sign: SessionHandleInvalid`); the crate's Display
/// appends a paragraph of the standard's prose.
pub(crate) fn ck(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => format!("C_{f:?}: {rv:?}"),
        other => other.to_string(),
    }
}
