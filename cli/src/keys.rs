//! The broadcaster's key: 32 secret bytes from the OS's random source, kept in a file
//! only its owner can read (mode 0600 from the moment it exists).

use anyhow::{bail, Context};
use meshtv_proto::sign::Broadcaster;
use rand::RngCore;
use std::io::Write;
use std::path::Path;

/// A fresh key: 32 bytes from the OS's random source (getrandom), not a seeded PRNG.
pub fn fresh() -> Broadcaster {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    Broadcaster::from_secret(secret)
}

/// The key in `path` (64 hex digits), or a fresh one written there if the file does not
/// exist; without a path, a fresh key for this run only.
pub fn load_or_create(path: Option<&Path>) -> anyhow::Result<Broadcaster> {
    let Some(path) = path else { return Ok(fresh()) };
    if path.exists() {
        warn_if_readable_by_others(path);
        let text = std::fs::read_to_string(path).with_context(|| format!("reading key file {}", path.display()))?;
        let bytes = hex::decode(text.trim()).ok().filter(|b| b.len() == 32);
        let Some(bytes) = bytes else { bail!("key file {} is not 64 hex digits", path.display()) };
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&bytes);
        Ok(Broadcaster::from_secret(secret))
    } else {
        let b = fresh();
        write_secret(path, &b.secret()).with_context(|| format!("writing key file {}", path.display()))?;
        Ok(b)
    }
}

/// Creates `path` with mode 0600 (never another mode, not even briefly: the mode is given
/// to the creating call) and writes the secret as hex. Fails if the file exists.
fn write_secret(path: &Path, secret: &[u8; 32]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(hex::encode(secret).as_bytes())?;
    file.sync_all()
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!("key file {} is readable by others (mode {mode:o}); `chmod 600` it", path.display());
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_written_key_file_has_mode_0600_and_reads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("meshtv-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("broadcaster.key");
        let _ = std::fs::remove_file(&path);
        let created = load_or_create(Some(&path)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
        let loaded = load_or_create(Some(&path)).unwrap();
        assert_eq!(loaded.public_key(), created.public_key());
        // Never overwrites: a second create of the same file fails.
        assert!(write_secret(&path, &[0; 32]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fresh_keys_differ() {
        assert_ne!(fresh().secret(), fresh().secret());
    }
}
