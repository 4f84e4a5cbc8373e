//! The main token: given, or generated once into the data directory; and
//! the constant-time comparison every token check uses (`tokens::TokenSet`).

use std::io::Write;
use std::path::{Path, PathBuf};

/// Returns the token to require, and the file it lives in when generated
/// (in `data_dir`, which must exist). A token file readable by group or
/// others is a warning.
pub fn load_or_create(
    given: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<(String, Option<PathBuf>)> {
    if let Some(token) = given {
        anyhow::ensure!(!token.trim().is_empty(), "the token is empty");
        return Ok((token.trim().to_string(), None));
    }
    let path = data_dir.join("token");
    if path.exists() {
        warn_if_readable_by_others(&path);
        let token = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("reading token file {}: {e}", path.display()))?;
        let token = token.trim().to_string();
        anyhow::ensure!(!token.is_empty(), "token file {} is empty", path.display());
        return Ok((token, Some(path)));
    }
    let token = generate();
    let mut file = aam_store::files::open_private(
        &path,
        std::fs::OpenOptions::new().write(true).create_new(true),
    )
    .map_err(|e| anyhow::anyhow!("creating token file {}: {e}", path.display()))?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    // A token lost in a crash would lock every client and worker out.
    aam_store::files::sync_dir(data_dir)?;
    Ok((token, Some(path)))
}

/// Anyone who can read the token can run commands on every worker.
fn warn_if_readable_by_others(path: &Path) {
    if let Ok(Some(mode)) = aam_store::files::open_to_others(path) {
        tracing::warn!(
            "token file {} is readable by group or others (mode {mode:04o}); whoever can read it \
             can run commands on every worker: `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
}

/// 32 random bytes, hex encoded.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("the OS random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without leaking where the first difference is (only whether
/// the lengths differ).
pub fn matches(expected: &str, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (t1, p1) = load_or_create(None, dir.path()).unwrap();
        let (t2, _) = load_or_create(None, dir.path()).unwrap();
        assert_eq!(t1, t2);
        assert_eq!(t1.len(), 64);
        let mode = std::fs::metadata(p1.unwrap()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn comparison() {
        assert!(matches("abc", "abc"));
        assert!(!matches("abc", "abd"));
        assert!(!matches("abc", "ab"));
        assert!(!matches("abc", "abcd"));
        assert!(!matches("abc", ""));
    }
}
