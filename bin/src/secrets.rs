//! The two secrets flashd needs: the JWT key and the admin token.
//!
//! Set in the config, they are used as they are. Left empty, each is read
//! from `server.data_dir`, or generated there at first start (32 random
//! bytes, hex, a file of mode 0600 in a directory of mode 0700), so a quick
//! start works and no known default ever guards a real sale.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::config::Config;

pub struct Secrets {
    pub jwt_secret: String,
    pub admin_token: String,
}

pub fn resolve(cfg: &Config) -> anyhow::Result<Secrets> {
    let dir = PathBuf::from(&cfg.server.data_dir);
    Ok(Secrets {
        jwt_secret: one(&cfg.auth.jwt_secret, &dir, "jwt_secret", "auth.jwt_secret")?,
        admin_token: one(
            &cfg.auth.admin_token,
            &dir,
            "admin_token",
            "auth.admin_token",
        )?,
    })
}

fn one(configured: &str, dir: &Path, file: &str, key: &str) -> anyhow::Result<String> {
    if !configured.is_empty() {
        return Ok(configured.to_string());
    }
    let path = dir.join(file);
    match fs::read_to_string(&path) {
        Ok(s) => {
            let s = s.trim().to_string();
            if s.len() < 16 {
                bail!(
                    "{}: secret for {key} is shorter than 16 bytes",
                    path.display()
                );
            }
            let mode = fs::metadata(&path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "secret file is readable by others; chmod 600 it");
            }
            Ok(s)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            let mut bytes = [0u8; 32];
            getrandom::getrandom(&mut bytes)
                .map_err(|e| anyhow::anyhow!("no randomness for {key}: {e}"))?;
            let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            // create_new: if another process generated it meanwhile, use
            // theirs rather than overwrite a secret already handed out.
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(secret.as_bytes())?;
                    f.sync_all()?;
                    tracing::info!(path = %path.display(), "{key} was not set: generated one and stored it here (mode 0600)");
                    Ok(secret)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    one(configured, dir, file, key)
                }
                Err(e) => Err(e).with_context(|| format!("writing {}", path.display())),
            }
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
