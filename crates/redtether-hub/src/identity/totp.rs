//! TOTP as RFC 6238 and every authenticator app has it: HMAC-SHA-1, 6 digits, 30-second
//! steps. A code is accepted for the step before, the current one and the one after (clocks
//! drift), and a step is accepted once only: the caller keeps the last step used and a code
//! for it or an earlier step is a replay. Time is an argument (Unix seconds).

use totp_rs::{Algorithm, Builder, Secret, Totp};

/// The issuer shown in authenticator apps.
pub const ISSUER: &str = "redtether";
const STEP: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpRefusal {
    #[error("the code is not valid now")]
    Wrong,
    #[error("the code was already used")]
    Replayed,
    #[error("the stored TOTP secret is unusable")]
    BadSecret,
}

/// A fresh 160-bit secret, base32 (how it is stored and shown).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 20];
    rand::fill(&mut bytes);
    Secret::from(bytes).to_base32()
}

fn totp(secret_b32: &str, account: &str) -> Result<Totp, TotpRefusal> {
    let secret = Secret::try_from_base32(secret_b32).map_err(|_| TotpRefusal::BadSecret)?;
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(STEP)
        .with_secret(secret)
        .with_issuer(Some(ISSUER))
        .with_account_name(account)
        .build()
        .map_err(|_| TotpRefusal::BadSecret)
}

/// Checks `code` at `now`; `last_step` is the step of the last code accepted for this account
/// (0 before any). Returns the step to remember.
pub fn check(secret_b32: &str, code: &str, now: u64, last_step: u64) -> Result<u64, TotpRefusal> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpRefusal::Wrong);
    }
    let totp = totp(secret_b32, "operator")?;
    let origin = now / STEP;
    // Every step of the window is tried, so a code of an already-used step is told apart
    // from a wrong one (the audit says which).
    let mut replayed = false;
    for step in origin.saturating_sub(1)..=origin + 1 {
        if totp.generate(step * STEP).to_string() == code {
            if step > last_step {
                return Ok(step);
            }
            replayed = true;
        }
    }
    Err(if replayed { TotpRefusal::Replayed } else { TotpRefusal::Wrong })
}

/// The code of the step holding `now` (for tests and for the operator's first confirmation).
pub fn code_at(secret_b32: &str, now: u64) -> Result<String, TotpRefusal> {
    Ok(totp(secret_b32, "operator")?.generate(now).to_string())
}

/// `otpauth://totp/redtether:<account>?secret=…&issuer=redtether&…`, what a QR code carries.
pub fn uri(secret_b32: &str, account: &str) -> Result<String, TotpRefusal> {
    totp(secret_b32, account)?.to_url().map_err(|_| TotpRefusal::BadSecret)
}

/// The URI as an SVG QR code (no script, no external reference: safe to inline in a page).
pub fn qr_svg(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    Some(code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B's SHA-1 seed ("12345678901234567890"), base32.
    const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn codes_match_rfc_6238_test_vectors() {
        // The RFC's 8-digit values, last 6 digits.
        for (t, code) in
            [(59, "287082"), (1_111_111_109, "081804"), (1_234_567_890, "005924"), (2_000_000_000, "279037")]
        {
            assert_eq!(code_at(RFC_SECRET, t).unwrap(), code, "t={t}");
        }
    }

    #[test]
    fn one_step_either_side_is_accepted_two_are_not() {
        let now = 1_800_000_015;
        let step = now / 30;
        for (offset, ok) in [(-60i64, false), (-30, true), (0, true), (30, true), (60, false)] {
            let code = code_at(RFC_SECRET, (now as i64 + offset) as u64).unwrap();
            assert_eq!(check(RFC_SECRET, &code, now, 0).is_ok(), ok, "offset {offset}");
        }
        assert_eq!(check(RFC_SECRET, &code_at(RFC_SECRET, now).unwrap(), now, 0), Ok(step));
    }

    #[test]
    fn a_code_is_never_accepted_twice() {
        let now = 1_800_000_015;
        let code = code_at(RFC_SECRET, now).unwrap();
        let step = check(RFC_SECRET, &code, now, 0).unwrap();
        assert_eq!(check(RFC_SECRET, &code, now + 5, step), Err(TotpRefusal::Replayed));
        // Nor an earlier step's code once a later one was used.
        let earlier = code_at(RFC_SECRET, now - 30).unwrap();
        assert_eq!(check(RFC_SECRET, &earlier, now, step), Err(TotpRefusal::Replayed));
        let next = code_at(RFC_SECRET, now + 30).unwrap();
        assert_eq!(check(RFC_SECRET, &next, now + 30, step), Ok(step + 1));
    }

    #[test]
    fn malformed_codes_and_secrets_are_refused() {
        for bad in ["", "12345", "1234567", "12a456", "１２３４５６"] {
            assert_eq!(check(RFC_SECRET, bad, 1_800_000_015, 0), Err(TotpRefusal::Wrong), "{bad:?}");
        }
        assert_eq!(check("not base32!", "123456", 0, 0), Err(TotpRefusal::BadSecret));
    }

    #[test]
    fn the_uri_and_qr_code_carry_the_secret_and_the_account() {
        let secret = new_secret();
        assert_eq!(secret.len(), 32, "160 bits");
        let uri = uri(&secret, "ann").unwrap();
        assert!(uri.starts_with("otpauth://totp/redtether:ann?"), "{uri}");
        assert!(uri.contains(&format!("secret={secret}")), "{uri}");
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.contains("<svg") && !svg.contains("<script"));
    }
}
