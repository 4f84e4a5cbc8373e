//! A certificate's SHA-256 fingerprint: computed from its DER, shown as
//! `AA:BB:..`, and read back in every spelling users paste (colons or not,
//! any case, `sha256:` in front).

use std::fmt;

/// SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Fingerprint(bytes)
    }

    /// Reads `AA:BB:..`, `aabb..`, `sha256:AA:BB..` (any case; spaces
    /// ignored, as when copied from a wrapped line).
    pub fn parse(text: &str) -> Result<Fingerprint, String> {
        let trimmed = text.trim();
        let hex = match trimmed.get(..7) {
            Some(prefix) if prefix.eq_ignore_ascii_case("sha256:") => &trimmed[7..],
            _ => trimmed,
        };
        let digits: Vec<u8> = hex
            .bytes()
            .filter(|b| *b != b':' && !b.is_ascii_whitespace())
            .collect();
        let bad = |why: &str| {
            format!("fingerprint '{text}' {why}: expected the 64 hex digits of a SHA-256, with or without colons, optionally after 'sha256:'")
        };
        if digits.len() != 64 {
            return Err(bad(&format!("has {} hex digits", digits.len())));
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let high = hex_value(pair[0]).ok_or_else(|| bad("is not hexadecimal"))?;
            let low = hex_value(pair[1]).ok_or_else(|| bad("is not hexadecimal"))?;
            bytes[i] = high << 4 | low;
        }
        Ok(Fingerprint(bytes))
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|v| v as u8)
}

/// `AA:BB:..` (upper case, colons), the form the manager logs.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_reads_the_same() {
        let fp = Fingerprint::of(b"certificate");
        let shown = fp.to_string();
        assert_eq!(shown.len(), 32 * 3 - 1);
        let plain = shown.replace(':', "");
        for spelling in [
            shown.clone(),
            shown.to_lowercase(),
            plain.clone(),
            plain.to_lowercase(),
            format!("sha256:{shown}"),
            format!("SHA256:{}", plain.to_lowercase()),
            format!("  sha256:{shown}\n"),
        ] {
            assert_eq!(Fingerprint::parse(&spelling), Ok(fp), "{spelling}");
        }
    }

    #[test]
    fn bad_fingerprints_say_what_is_wrong() {
        let short = Fingerprint::parse("AB:CD").unwrap_err();
        assert!(short.contains("has 4 hex digits"), "{short}");
        let not_hex = Fingerprint::parse(&"zz".repeat(32)).unwrap_err();
        assert!(not_hex.contains("not hexadecimal"), "{not_hex}");
        assert!(not_hex.contains("sha256:"), "{not_hex}");
    }
}
