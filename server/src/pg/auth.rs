//! The server's half of SCRAM-SHA-256 (RFC 5802 over Postgres's SASL messages): the only
//! mechanism offered under `--auth password`. Verifiers come from weir-sql's roles.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use ring::rand::{SecureRandom, SystemRandom};
use weir_sql::SqlError;
use weir_sql::scram::ScramVerifier;

/// The mechanism name in AuthenticationSASL and SASLInitialResponse.
pub(crate) const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// Random bytes the server adds to the client's nonce (Postgres uses 18).
const SERVER_NONCE_BYTES: usize = 18;

/// Where one connection's exchange stands (kept in its session extensions).
#[derive(Debug, Default)]
pub(crate) enum Exchange {
    #[default]
    None,
    /// AuthenticationSASL sent; the client's first message is next.
    Offered {
        user: String,
        verifier: ScramVerifier,
    },
    /// server-first sent; the client's proof is next.
    Challenged {
        user: String,
        verifier: ScramVerifier,
        /// What the client's final message must repeat.
        channel_binding: String,
        nonce: String,
        /// client-first-bare "," server-first: the start of the AuthMessage.
        messages: String,
    },
}

/// What the server answers a SASL message with.
pub(crate) enum Step {
    Continue(Authentication),
    /// Logged in: send this (AuthenticationSASLFinal) and then AuthenticationOk.
    Done(Authentication),
}

impl Exchange {
    /// Takes the client's next message; errors are the connection's FATAL error.
    pub(crate) fn step(&mut self, message: PasswordMessageFamily) -> Result<Step, SqlError> {
        match std::mem::take(self) {
            Exchange::None => Err(protocol("unexpected password message")),
            Exchange::Offered { user, verifier } => {
                let first = message
                    .into_sasl_initial_response()
                    .map_err(|e| protocol(&e.to_string()))?;
                if first.auth_method != SCRAM_SHA_256 {
                    return Err(protocol(&format!(
                        "SASL mechanism {} is not offered (only {SCRAM_SHA_256})",
                        first.auth_method
                    )));
                }
                let data = first
                    .data
                    .ok_or_else(|| protocol("empty client-first message"))?;
                let text = std::str::from_utf8(&data)
                    .map_err(|_| protocol("client-first is not UTF-8"))?;
                let (header, bare) = split_gs2_header(text)?;
                // The user name inside SCRAM is ignored, as Postgres does: the startup's counts.
                let client_nonce =
                    attribute(bare, 'r').ok_or_else(|| protocol("client-first without a nonce"))?;
                let mut random = [0u8; SERVER_NONCE_BYTES];
                SystemRandom::new()
                    .fill(&mut random)
                    .map_err(|_| SqlError::new("XX000", "no random bytes for a nonce"))?;
                let nonce = format!("{client_nonce}{}", STANDARD.encode(random));
                let server_first = format!(
                    "r={nonce},s={},i={}",
                    STANDARD.encode(&verifier.salt),
                    verifier.iterations
                );
                let reply = Authentication::SASLContinue(server_first.clone().into_bytes().into());
                *self = Exchange::Challenged {
                    user,
                    verifier,
                    channel_binding: STANDARD.encode(header),
                    nonce,
                    messages: format!("{bare},{server_first}"),
                };
                Ok(Step::Continue(reply))
            }
            Exchange::Challenged {
                user,
                verifier,
                channel_binding,
                nonce,
                messages,
            } => {
                let response = message
                    .into_sasl_response()
                    .map_err(|e| protocol(&e.to_string()))?;
                let text = std::str::from_utf8(&response.data)
                    .map_err(|_| protocol("client-final is not UTF-8"))?;
                let (without_proof, proof) = text
                    .rsplit_once(",p=")
                    .ok_or_else(|| protocol("client-final without a proof"))?;
                if attribute(without_proof, 'c') != Some(channel_binding.as_str())
                    || attribute(without_proof, 'r') != Some(nonce.as_str())
                {
                    return Err(protocol("client-final does not match the exchange"));
                }
                let proof = STANDARD
                    .decode(proof)
                    .map_err(|_| protocol("proof is not base64"))?;
                let auth_message = format!("{messages},{without_proof}");
                match verifier.verify(auth_message.as_bytes(), &proof) {
                    Some(signature) => Ok(Step::Done(Authentication::SASLFinal(
                        format!("v={}", STANDARD.encode(signature))
                            .into_bytes()
                            .into(),
                    ))),
                    None => Err(weir_sql::access::password_failed(&user)),
                }
            }
        }
    }
}

fn protocol(message: &str) -> SqlError {
    SqlError::new("08P01", format!("SCRAM: {message}"))
}

/// `n,,n=user,r=...` into (`n,,`, `n=user,r=...`). Channel binding (`p=`) is refused: the
/// -PLUS mechanism is not offered; `y` (client could, server did not offer) is fine.
fn split_gs2_header(text: &str) -> Result<(&str, &str), SqlError> {
    let flag_end = text
        .find(',')
        .ok_or_else(|| protocol("malformed client-first"))?;
    let authzid_end = text[flag_end + 1..]
        .find(',')
        .map(|i| flag_end + 1 + i)
        .ok_or_else(|| protocol("malformed client-first"))?;
    match &text[..flag_end] {
        "n" | "y" => Ok((&text[..=authzid_end], &text[authzid_end + 1..])),
        _ => Err(protocol("channel binding is not supported")),
    }
}

/// The value of `k=` in a comma-separated SCRAM message.
fn attribute(message: &str, key: char) -> Option<&str> {
    message.split(',').find_map(|part| {
        let mut chars = part.chars();
        (chars.next() == Some(key) && chars.next() == Some('=')).then(|| &part[2..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_messages_as_libpq_sends_them() {
        assert_eq!(
            split_gs2_header("n,,n=,r=abc").ok(),
            Some(("n,,", "n=,r=abc"))
        );
        assert_eq!(
            split_gs2_header("y,,n=,r=abc").ok(),
            Some(("y,,", "n=,r=abc"))
        );
        assert!(split_gs2_header("p=tls-server-end-point,,n=,r=abc").is_err());
        assert_eq!(attribute("c=biws,r=xyz", 'r'), Some("xyz"));
        assert_eq!(attribute("c=biws,r=xyz", 'p'), None);
    }
}
