//! SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677) in Postgres's stored form, and the server's
//! proof check. A verifier lets the server check a password without being able to log in.

use std::num::NonZeroU32;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

use crate::error::{Result, SqlError};

/// PBKDF2 iterations of new verifiers: Postgres's `scram_iterations` default.
pub const SCRAM_ITERATIONS: u32 = 4096;
const SALT_BYTES: usize = 16;
const KEY_BYTES: usize = 32;

/// What Postgres keeps in `pg_authid.rolpassword`:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64). The password itself
/// cannot be recovered from it, and neither can the ClientKey a login proves it knows.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    stored_key: [u8; KEY_BYTES],
    server_key: [u8; KEY_BYTES],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramVerifier(..)")
    }
}

impl ScramVerifier {
    /// A verifier for `password` with a fresh random salt. The password is SASLprep
    /// normalized first, as libpq does (kept as given when it does not normalize).
    pub fn new(password: &str) -> Result<Self> {
        let mut salt = vec![0u8; SALT_BYTES];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| SqlError::new("XX000", "no random bytes for a password salt"))?;
        Ok(Self::with_salt(password, salt, SCRAM_ITERATIONS))
    }

    fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        let normalized = stringprep::saslprep(password)
            .map(|p| p.into_owned())
            .unwrap_or_else(|_| password.to_string());
        let mut salted = [0u8; KEY_BYTES];
        let rounds = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            rounds,
            &salt,
            normalized.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        let server_key = hmac_sha256(&salted, b"Server Key");
        Self {
            iterations,
            salt,
            stored_key: sha256(&client_key),
            server_key,
        }
    }

    /// The stored form back (None when `text` is not one, e.g. a plain password).
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let key = |s: &str| -> Option<[u8; KEY_BYTES]> { STANDARD.decode(s).ok()?.try_into().ok() };
        Some(Self {
            iterations: iterations.parse().ok().filter(|&i| i > 0)?,
            salt: STANDARD.decode(salt).ok()?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// Whether `password` is the one this verifier was made from (for HTTP Basic logins,
    /// where the client sends the password itself over TLS or loopback).
    pub fn matches_password(&self, password: &str) -> bool {
        let other = Self::with_salt(password, self.salt.clone(), self.iterations);
        other
            .stored_key
            .iter()
            .zip(self.stored_key)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// Checks a login's ClientProof over its AuthMessage (RFC 5802 §3); on success returns
    /// the ServerSignature the client checks in turn.
    pub fn verify(&self, auth_message: &[u8], client_proof: &[u8]) -> Option<Vec<u8>> {
        let signature = hmac_sha256(&self.stored_key, auth_message);
        if client_proof.len() != KEY_BYTES {
            return None;
        }
        let client_key: Vec<u8> = client_proof
            .iter()
            .zip(signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let matches = sha256(&client_key)
            .iter()
            .zip(self.stored_key)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        matches.then(|| hmac_sha256(&self.server_key, auth_message).to_vec())
    }
}

impl std::fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; KEY_BYTES] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; KEY_BYTES];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; KEY_BYTES] {
    let mut out = [0u8; KEY_BYTES];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

/// The client's side of a proof, for tests of the server's.
#[cfg(test)]
pub(crate) fn client_proof(password: &str, salt: &[u8], iterations: u32, auth: &[u8]) -> Vec<u8> {
    let mut salted = [0u8; KEY_BYTES];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN),
        salt,
        password.as_bytes(),
        &mut salted,
    );
    let client_key = hmac_sha256(&salted, b"Client Key");
    let signature = hmac_sha256(&sha256(&client_key), auth);
    client_key
        .iter()
        .zip(signature)
        .map(|(k, s)| k ^ s)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_round_trips_and_checks_only_its_password() {
        let v = ScramVerifier::new("s3cret").expect("random");
        let text = v.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
        assert!(!text.contains("s3cret"));
        let back = ScramVerifier::parse(&text).expect("parses");
        assert_eq!(back, v);
        let auth = b"n=u,r=abc,r=abcdef,s=c2FsdA==,i=4096,c=biws,r=abcdef";
        let good = client_proof("s3cret", &v.salt, v.iterations, auth);
        assert!(back.verify(auth, &good).is_some());
        let bad = client_proof("s3cret!", &v.salt, v.iterations, auth);
        assert!(back.verify(auth, &bad).is_none());
        assert!(back.verify(b"other message", &good).is_none());
        assert!(ScramVerifier::parse("plain password").is_none());
        assert!(back.matches_password("s3cret"));
        assert!(!back.matches_password("s3cret!") && !back.matches_password(""));
    }

    #[test]
    fn checks_rfc_7677s_example_exchange() {
        // RFC 7677 §3: user "user", password "pencil".
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("base64");
        let v = ScramVerifier::with_salt("pencil", salt, 4096);
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = format!(
            "n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}"
        );
        let proof = STANDARD
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .expect("base64");
        let server = v.verify(auth.as_bytes(), &proof).expect("the RFC's proof");
        assert_eq!(
            STANDARD.encode(server),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }
}
