//! Credentials in WITH options (`*password*`, `*secret*`, `*token*`, `sasl.jaas.config`,
//! `ssl.key.*`): hidden wherever SQL is shown back, and sealed (AES-256-GCM) where it is stored.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Result, SqlError};

/// What a secret value is shown as.
pub const REDACTED: &str = "[REDACTED]";
/// The prefix of a sealed value in the catalog file.
const SEALED_PREFIX: &str = "weir-sealed:v1:";
/// The sealing key's file in the data dir, unless `--secret-key-file` puts it elsewhere
/// (32 random bytes, mode 0600).
const KEY_FILE: &str = "secret.key";

/// Whether an option of this name holds a credential.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token"]
        .iter()
        .any(|w| key.contains(w))
        || key.contains("sasl.jaas.config")
        || key.contains("ssl.key.")
}

/// `sql` with every secret option's value replaced by `'[REDACTED]'`.
pub fn redact(sql: &str) -> String {
    map_secret_values(sql, |_| Ok(REDACTED.to_string())).unwrap_or_else(|_| REDACTED.to_string())
}

/// `message` (an error about the statement `sql`) with the values of `sql`'s secret
/// options hidden: connectors quote their configuration back in errors.
pub fn scrub(message: &str, sql: &str) -> String {
    let mut values = Vec::new();
    let _ = map_secret_values(sql, |v| {
        values.push(v.to_string());
        Ok(v.to_string())
    });
    values
        .iter()
        .filter(|v| !v.is_empty())
        .fold(message.to_string(), |m, v| m.replace(v.as_str(), REDACTED))
}

/// `sql` with each value of a secret option (`key = 'value'`, the key spelled as words
/// joined by dots or quoted) replaced by `f(value)`. Everything else is kept as written;
/// text that does not tokenize is returned unchanged.
fn map_secret_values(sql: &str, mut f: impl FnMut(&str) -> Result<String>) -> Result<String> {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location() else {
        return Ok(sql.to_string());
    };
    // Spans are (line, column) in characters: byte offsets of each line's characters.
    let lines: Vec<Vec<usize>> = {
        let mut lines = vec![vec![]];
        for (i, c) in sql.char_indices() {
            if let Some(line) = lines.last_mut() {
                line.push(i);
            }
            if c == '\n' {
                lines.push(vec![]);
            }
        }
        lines
    };
    let byte_at = |line: u64, column: u64| -> usize {
        lines
            .get((line as usize).saturating_sub(1))
            .and_then(|l| l.get((column as usize).saturating_sub(1)))
            .copied()
            .unwrap_or(sql.len())
    };
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    // The option name being read (words and dots), and whether `=` followed it.
    let mut key = String::new();
    let mut after_equals = false;
    for t in &tokens {
        match &t.token {
            Token::Whitespace(_) => {}
            Token::SingleQuotedString(value) if after_equals => {
                if is_secret(&key) {
                    let start = byte_at(t.span.start.line, t.span.start.column);
                    let end = byte_at(t.span.end.line, t.span.end.column);
                    out.push_str(&sql[copied..start]);
                    out.push('\'');
                    out.push_str(&f(value)?.replace('\'', "''"));
                    out.push('\'');
                    copied = end;
                }
                key.clear();
                after_equals = false;
            }
            Token::Eq if !key.is_empty() => after_equals = true,
            Token::Word(w) if !after_equals => key.push_str(&w.value),
            Token::Period if !after_equals => key.push('.'),
            Token::SingleQuotedString(k) if !after_equals => key.clone_from(k),
            _ => {
                key.clear();
                after_equals = false;
            }
        }
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

fn key_error(path: &Path, e: std::io::Error) -> SqlError {
    SqlError::new("58030", format!("secret key {}: {e}", path.display()))
}

/// Seals and opens secret values of SQL kept in the data dir, with a key of its own.
pub(crate) struct Sealer {
    key: LessSafeKey,
    /// The key's file, named when a sealed value does not open.
    path: PathBuf,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// The sealing key: `key_file` when given (`--secret-key-file`, kept apart from the
    /// data dir so that a copy of the data dir does not carry it), else `secret.key` in
    /// `dir`. A missing key is created; a data dir's key moves to a new `key_file`.
    pub(crate) fn open(dir: &Path, key_file: Option<&Path>) -> Result<Self> {
        let in_dir = dir.join(KEY_FILE);
        let path = key_file.map_or_else(|| in_dir.clone(), Path::to_path_buf);
        let bytes = if path.exists() {
            let bytes = std::fs::read(&path).map_err(|e| key_error(&path, e))?;
            if path != in_dir && in_dir.exists() {
                if std::fs::read(&in_dir).ok().as_ref() == Some(&bytes) {
                    std::fs::remove_file(&in_dir).map_err(|e| key_error(&in_dir, e))?;
                } else {
                    tracing::warn!(
                        key = %in_dir.display(),
                        "the data dir holds another secret key than --secret-key-file; it is not used"
                    );
                }
            }
            bytes
        } else if path != in_dir && in_dir.exists() {
            let bytes = std::fs::read(&in_dir).map_err(|e| key_error(&in_dir, e))?;
            crate::catalog::write_private(&path, &bytes)?;
            std::fs::remove_file(&in_dir).map_err(|e| key_error(&in_dir, e))?;
            tracing::info!(from = %in_dir.display(), to = %path.display(), "moved the secret key out of the data dir");
            bytes
        } else {
            let mut bytes = vec![0u8; AES_256_GCM.key_len()];
            SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| SqlError::new("XX000", "no random bytes for the secret key"))?;
            crate::catalog::write_private(&path, &bytes)?;
            bytes
        };
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| {
            SqlError::new("XX001", format!("{} is not a 32-byte key", path.display()))
        })?;
        Ok(Self {
            key: LessSafeKey::new(key),
            path,
        })
    }

    /// `sql` with its secret values sealed (`'weir-sealed:v1:...'`).
    pub(crate) fn seal(&self, sql: &str) -> Result<String> {
        map_secret_values(sql, |value| {
            if value.starts_with(SEALED_PREFIX) {
                return Ok(value.to_string());
            }
            let mut nonce = [0u8; NONCE_LEN];
            SystemRandom::new()
                .fill(&mut nonce)
                .map_err(|_| SqlError::new("XX000", "no random bytes for a nonce"))?;
            let mut sealed = value.as_bytes().to_vec();
            self.key
                .seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::empty(),
                    &mut sealed,
                )
                .map_err(|_| SqlError::new("XX000", "sealing a secret failed"))?;
            let mut all = nonce.to_vec();
            all.extend_from_slice(&sealed);
            Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(all)))
        })
    }

    /// `sql` as it was before `seal`.
    pub(crate) fn unseal(&self, sql: &str) -> Result<String> {
        map_secret_values(sql, |value| {
            let Some(encoded) = value.strip_prefix(SEALED_PREFIX) else {
                return Ok(value.to_string());
            };
            let corrupt = || {
                SqlError::new(
                    "XX001",
                    format!(
                        "a sealed secret in the catalog does not open with the key in {}",
                        self.path.display()
                    ),
                )
            };
            let bytes = STANDARD.decode(encoded).map_err(|_| corrupt())?;
            if bytes.len() < NONCE_LEN {
                return Err(corrupt());
            }
            let (nonce, sealed) = bytes.split_at(NONCE_LEN);
            let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt())?;
            let mut sealed = sealed.to_vec();
            let plain = self
                .key
                .open_in_place(nonce, Aad::empty(), &mut sealed)
                .map_err(|_| corrupt())?;
            String::from_utf8(plain.to_vec()).map_err(|_| corrupt())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQL: &str = "CREATE SOURCE s WITH (connector='kafka', properties.sasl.password = 'hun''ter2', \
         'properties.sasl.jaas.config' = 'user pass', topic='t', \"ssl.key.pem\" = 'PEM') FORMAT PLAIN ENCODE JSON";

    #[test]
    fn redacts_only_secret_values() {
        let r = redact(SQL);
        for secret in ["hun", "user pass", "PEM'"] {
            assert!(!r.contains(secret), "{secret} in {r}");
        }
        assert!(r.contains("topic='t'"), "{r}");
        assert!(r.contains("properties.sasl.password = '[REDACTED]'"), "{r}");
        assert!(r.contains("FORMAT PLAIN ENCODE JSON"), "{r}");
    }

    #[test]
    fn scrubs_secret_values_from_messages() {
        let m = "config error: sasl.jaas.config user pass; sasl.password hun'ter2";
        assert_eq!(
            scrub(m, SQL),
            "config error: sasl.jaas.config [REDACTED]; sasl.password [REDACTED]"
        );
    }

    #[test]
    fn sealed_sql_opens_to_the_original() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sealer = Sealer::open(dir.path(), None).expect("key");
        let sealed = sealer.seal(SQL).expect("seal");
        assert!(
            !sealed.contains("hun''ter2") && !sealed.contains("user pass"),
            "{sealed}"
        );
        assert_eq!(sealer.seal(&sealed).expect("idempotent"), sealed);
        let again = Sealer::open(dir.path(), None).expect("same key");
        assert_eq!(again.unseal(&sealed).expect("unseal"), SQL);
        let other = tempfile::tempdir().expect("tempdir");
        assert!(
            Sealer::open(other.path(), None)
                .expect("key")
                .unseal(&sealed)
                .is_err()
        );
    }

    #[test]
    fn a_key_file_outside_the_data_dir_takes_the_data_dirs_key_with_it() {
        let data = tempfile::tempdir().expect("tempdir");
        let sealed = Sealer::open(data.path(), None)
            .expect("key")
            .seal(SQL)
            .expect("seal");
        assert!(data.path().join(KEY_FILE).exists());
        let keys = tempfile::tempdir().expect("tempdir");
        let key_file = keys.path().join("weir.key");
        let moved = Sealer::open(data.path(), Some(&key_file)).expect("moved key");
        assert_eq!(moved.unseal(&sealed).expect("unseal"), SQL);
        assert!(
            !data.path().join(KEY_FILE).exists(),
            "the data dir keeps no key"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Without the key file, the data dir alone cannot open what was sealed.
        let e = Sealer::open(data.path(), None)
            .expect("a new key")
            .unseal(&sealed)
            .unwrap_err();
        assert!(e.message.contains("does not open"), "{e:?}");
    }
}
