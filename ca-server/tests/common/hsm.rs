//! SoftHSM2 for the PKCS#11 tests: a token directory and `SOFTHSM2_CONF` of the test's own,
//! one initialized token, the PIN in a 0600 file, and `[ca.pkcs11]` config files.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{BIN, run};

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const PIN: &str = "4711-user";
pub const KEY_LABEL: &str = "issuing-ca";

/// A SoftHSM2 configuration of its own (`SOFTHSM2_CONF`) with one initialized token.
pub struct Hsm {
    pub conf: PathBuf,
    pub token: String,
    pub pin_file: PathBuf,
}

impl Hsm {
    pub fn new(dir: &Path, token: &str) -> Hsm {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing: install Debian's `softhsm2` (scripts/test.sh does)"
        );
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let (ok, out) = run(Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", token, "--pin", PIN, "--so-pin", "so-4711"])
            .env("SOFTHSM2_CONF", &conf));
        assert!(ok, "softhsm2-util --init-token: {out}");
        let pin_file = dir.join("pin");
        write_secret(&pin_file, &format!("{PIN}\n"));
        Hsm { conf, token: token.to_string(), pin_file }
    }

    pub fn env(&self) -> [(&str, &str); 1] {
        [("SOFTHSM2_CONF", self.conf.to_str().unwrap())]
    }

    /// A config file with `[ca.pkcs11]` for this token and `extra` TOML after it.
    pub fn config(&self, path: &Path, key_label: &str, pin_file: &Path, extra: &str) -> PathBuf {
        std::fs::write(
            path,
            format!(
                "{extra}\n[ca.pkcs11]\nmodule = {MODULE:?}\ntoken_label = {:?}\nkey_label = {key_label:?}\npin_file = {:?}\n",
                self.token,
                pin_file.display().to_string()
            ),
        )
        .unwrap();
        path.to_path_buf()
    }

    /// `ca-server init --pkcs11` with this token: (success, output).
    pub fn init(&self, data: &Path, config: &Path, extra: &[&str]) -> (bool, String) {
        run(Command::new(BIN)
            .args(["init", "--pkcs11", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .env("SOFTHSM2_CONF", &self.conf))
    }
}

pub fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}
