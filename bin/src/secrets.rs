//! The two secrets flashd needs: the JWT key and the admin token.
//!
//! Set in the config, they are used as they are (the config refuses one
//! shorter than [`MIN_SECRET_BYTES`]). Left empty, each is read from
//! `server.data_dir`, or generated there at first start (32 random bytes,
//! hex, a file of mode 0600 in a directory of mode 0700), so a quick start
//! works and no known default ever guards a real sale.
//!
//! A generated secret is published atomically: written whole to a temp
//! file beside it, fsynced, then linked under its name (which fails if the
//! name exists, so a secret another process already handed out is never
//! replaced), and the directory fsynced. A crash at any point leaves either
//! no secret (the next start generates one) or a whole one, never an empty
//! or half-written file that would refuse every later start.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: secret for {key} is shorter than {MIN_SECRET_BYTES} bytes", path.display())]
    TooShort { path: PathBuf, key: &'static str },
    #[error("no randomness for {key}: {reason}")]
    NoRandomness {
        key: &'static str,
        reason: getrandom::Error,
    },
    #[error("{}: could not read or create the secret for {key}", path.display())]
    Unavailable { path: PathBuf, key: &'static str },
}

/// `map_err` for an I/O error on `path`.
fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SecretsError {
    let path = path.to_path_buf();
    move |source| SecretsError::Io { what, path, source }
}

use crate::config::Config;

/// Shortest secret accepted, from the config or from a file: 16 bytes is
/// 128 bits even for a secret of raw bytes. A generated one is 32 random
/// bytes written as 64 hex digits.
pub const MIN_SECRET_BYTES: usize = 16;

/// Random bytes in a generated secret: 256 bits, HS256's key size
/// (RFC 7518 section 3.2).
const GENERATED_SECRET_BYTES: usize = 32;

pub struct Secrets {
    pub jwt_secret: String,
    pub admin_token: String,
}

pub fn resolve(cfg: &Config) -> Result<Secrets, SecretsError> {
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

fn one(
    configured: &str,
    dir: &Path,
    file: &str,
    key: &'static str,
) -> Result<String, SecretsError> {
    if !configured.is_empty() {
        return Ok(configured.to_string());
    }
    let path = dir.join(file);
    // Twice at most: a second pass only follows another process that
    // published the secret between our read and our link.
    for _ in 0..2 {
        match read(&path, key)? {
            Some(s) => return Ok(s),
            None => {
                if let Some(s) = generate(dir, file, key)? {
                    return Ok(s);
                }
            }
        }
    }
    Err(SecretsError::Unavailable { path, key })
}

/// The stored secret, `None` if there is none yet.
fn read(path: &Path, key: &'static str) -> Result<Option<String>, SecretsError> {
    match fs::read_to_string(path) {
        Ok(s) => {
            let s = s.trim().to_string();
            if s.len() < MIN_SECRET_BYTES {
                return Err(SecretsError::TooShort {
                    path: path.to_path_buf(),
                    key,
                });
            }
            let mode = fs::metadata(path)
                .map_err(io("reading", path))?
                .permissions()
                .mode()
                & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "secret file is readable by others; chmod 600 it");
            }
            Ok(Some(s))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", path)(e)),
    }
}

/// Generate and publish a secret; `None` if another process published one
/// first (the caller reads theirs).
fn generate(dir: &Path, file: &str, key: &'static str) -> Result<Option<String>, SecretsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("creating", dir))?;
    remove_stale_temps(dir, file);
    let mut bytes = [0u8; GENERATED_SECRET_BYTES];
    getrandom::getrandom(&mut bytes)
        .map_err(|reason| SecretsError::NoRandomness { key, reason })?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = stage(dir, file, &secret)?;
    let path = dir.join(file);
    let published = publish(&tmp, &path, dir);
    // The temp name is only ever ours; gone whatever happened.
    let _ = fs::remove_file(&tmp);
    if published? {
        tracing::info!(path = %path.display(), "{key} was not set: generated one and stored it here (mode 0600)");
        Ok(Some(secret))
    } else {
        Ok(None)
    }
}

/// This process's temp file for `file`: one writer per name, since no two
/// live processes share a pid.
fn temp_path(dir: &Path, file: &str, pid: u32) -> PathBuf {
    dir.join(format!(".{file}.tmp.{pid}"))
}

/// Write `secret` whole to this process's temp file (mode 0600) and fsync
/// it. A leftover of the same name (a crashed process that had our pid)
/// is truncated first.
pub(crate) fn stage(dir: &Path, file: &str, secret: &str) -> Result<PathBuf, SecretsError> {
    let tmp = temp_path(dir, file, std::process::id());
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    // `mode` applies only to a file this call created; a leftover keeps
    // its own, so set it.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io("chmod", &tmp))?;
    f.write_all(secret.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io("writing", &tmp))?;
    Ok(tmp)
}

/// Give the staged file its name unless the name exists (`link(2)` is
/// rename without replace), then fsync the directory so the name survives
/// a crash. `Ok(false)`: another process's secret is already there.
pub(crate) fn publish(tmp: &Path, path: &Path, dir: &Path) -> Result<bool, SecretsError> {
    match fs::hard_link(tmp, path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(io("creating", path)(e)),
    }
    let _ = fs::remove_file(tmp);
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))?;
    Ok(true)
}

/// Remove temp files of `file` left by processes that no longer run (a
/// crash between staging and publishing). A live process's temp file is
/// left alone: it is about to link it.
fn remove_stale_temps(dir: &Path, file: &str) {
    let prefix = format!(".{file}.tmp.");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || !alive(pid) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Whether a process with this pid exists (signal 0 probes, sends nothing).
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "flashd-secrets-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn cfg_in(dir: &Path) -> Config {
        let mut c = Config::default();
        c.server.data_dir = dir.to_str().unwrap().into();
        c
    }

    #[test]
    fn generated_once_mode_0600_and_kept() {
        let d = tmpdir("gen");
        let a = resolve(&cfg_in(&d)).unwrap();
        assert_eq!(a.jwt_secret.len(), 2 * GENERATED_SECRET_BYTES);
        assert_ne!(a.jwt_secret, a.admin_token);
        for f in ["jwt_secret", "admin_token"] {
            let mode = fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let dmode = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(dmode, 0o700);
        let b = resolve(&cfg_in(&d)).unwrap();
        assert_eq!((a.jwt_secret, a.admin_token), (b.jwt_secret, b.admin_token));
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    /// A crash after staging (or while writing) the temp file leaves no
    /// secret under its name: the next start generates one, whole, and
    /// removes the leftovers of dead processes, whatever they hold.
    #[test]
    fn a_crash_shaped_leftover_is_ignored_and_removed() {
        let d = tmpdir("crash");
        fs::create_dir_all(&d).unwrap();
        // What a crash before publish leaves: our own staged file...
        let staged = stage(&d, "jwt_secret", "half").unwrap();
        assert!(!d.join("jwt_secret").exists());
        // ...and one of a process long gone (a pid above any pid_max),
        // half-written and readable by all.
        let dead = temp_path(&d, "jwt_secret", 999_999_999);
        fs::write(&dead, "0123").unwrap();
        fs::set_permissions(&dead, fs::Permissions::from_mode(0o644)).unwrap();
        let s = resolve(&cfg_in(&d)).unwrap();
        assert_eq!(s.jwt_secret.len(), 2 * GENERATED_SECRET_BYTES);
        assert_eq!(
            fs::read_to_string(d.join("jwt_secret")).unwrap(),
            s.jwt_secret
        );
        assert!(!staged.exists() && !dead.exists());
        fs::remove_dir_all(&d).unwrap();
    }

    /// Publishing never replaces a secret that is already there (another
    /// process generated it and may have handed out tokens signed by it).
    #[test]
    fn publish_does_not_replace() {
        let d = tmpdir("race");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("admin_token"), "theirs-0123456789abcdef").unwrap();
        let tmp = stage(&d, "admin_token", "mine-0123456789abcdef").unwrap();
        assert!(!publish(&tmp, &d.join("admin_token"), &d).unwrap());
        let _ = fs::remove_file(&tmp);
        let s = resolve(&cfg_in(&d)).unwrap();
        assert_eq!(s.admin_token, "theirs-0123456789abcdef");
        fs::remove_dir_all(&d).unwrap();
    }

    /// A reader polling the secret's name while it is generated sees
    /// nothing or the whole secret, never an empty or partial file (which
    /// `read` would refuse as too short, failing that start).
    #[test]
    fn never_seen_half_written() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let root = tmpdir("watch");
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = 200;
        let dirs: Vec<PathBuf> = (0..rounds).map(|i| root.join(i.to_string())).collect();
        let watcher = {
            let (stop, dirs) = (stop.clone(), dirs.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for d in &dirs {
                        if let Ok(s) = fs::read_to_string(d.join("jwt_secret")) {
                            if s.len() != 2 * GENERATED_SECRET_BYTES {
                                seen.push(s);
                            }
                        }
                    }
                }
                seen
            })
        };
        for d in &dirs {
            resolve(&cfg_in(d)).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        let partial = watcher.join().unwrap();
        assert!(partial.is_empty(), "saw partial secrets: {partial:?}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_short_stored_secret_is_refused() {
        let d = tmpdir("short");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("jwt_secret"), "short\n").unwrap();
        let e = resolve(&cfg_in(&d)).err().unwrap().to_string();
        assert!(
            e.contains("jwt_secret") && e.contains("shorter than 16"),
            "{e}"
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
