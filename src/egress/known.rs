//! Known host secrets: exact values the operator names (environment
//! variables, files), redacted wherever they appear, also base64- and
//! hex-encoded.
//!
//! A value base64-encoded inside a larger blob is shifted by 0, 1 or 2
//! bytes against the 3-byte groups, which changes every character; so each
//! of the three alignments contributes the characters that depend on the
//! secret alone. All forms go into the filter's one Aho–Corasick automaton.

use std::path::Path;

use base64::Engine as _;

use super::EgressError;

/// Shorter values would match ordinary text (`1`, `true`, a user name).
pub const MIN_KNOWN_SECRET_LEN: usize = 8;

/// One secret value and the name its findings carry.
#[derive(Clone)]
pub struct KnownSecret {
    /// Shown in findings as `known_secret:<name>`; never the value.
    pub name: String,
    value: Vec<u8>,
}

impl std::fmt::Debug for KnownSecret {
    // The value must not reach logs through a Debug print of the config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KnownSecret({}, {} bytes)", self.name, self.value.len())
    }
}

impl KnownSecret {
    /// A secret given directly; refused when shorter than
    /// [`MIN_KNOWN_SECRET_LEN`].
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Result<Self, EgressError> {
        let name = name.into();
        let value: Vec<u8> = value.into();
        if value.len() < MIN_KNOWN_SECRET_LEN {
            return Err(EgressError::SecretTooShort {
                source_name: name,
                len: value.len(),
                min: MIN_KNOWN_SECRET_LEN,
            });
        }
        Ok(KnownSecret { name, value })
    }

    /// The value of environment variable `name`, which must be set.
    pub fn from_env(name: &str) -> Result<Self, EgressError> {
        let value = std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| EgressError::EnvUnset {
                name: name.to_string(),
            })?;
        use std::os::unix::ffi::OsStrExt as _;
        Self::new(name, value.as_bytes().to_vec())
    }

    /// The contents of `path` without surrounding whitespace (a trailing
    /// newline is not part of a token), named by the file's name.
    pub fn from_file(path: &Path) -> Result<Self, EgressError> {
        let raw = std::fs::read(path).map_err(|err| EgressError::ReadFile {
            path: path.to_path_buf(),
            err,
        })?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Self::new(name, raw.trim_ascii().to_vec())
    }

    /// The literal forms searched for: the value; each line of a
    /// multi-line value long enough to stand alone (a PEM key printed line
    /// by line); base64 (standard and URL-safe) at each of the three
    /// alignments; hex in both cases. Duplicates removed.
    pub(crate) fn forms(&self) -> Vec<Vec<u8>> {
        let v = &self.value;
        let mut forms = vec![v.clone()];
        if v.contains(&b'\n') {
            for line in v.split(|&b| b == b'\n') {
                let line = line.trim_ascii();
                if line.len() >= 2 * MIN_KNOWN_SECRET_LEN {
                    forms.push(line.to_vec());
                }
            }
        }
        for engine in [
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            for shift in 0..3usize {
                let mut shifted = vec![0u8; shift];
                shifted.extend_from_slice(v);
                let enc = engine.encode(&shifted).into_bytes();
                // Characters wholly made of the secret's bits: from bit
                // 8*shift (rounded up to a character) to bit 8*(shift+len)
                // (rounded down).
                let first = (8 * shift).div_ceil(6);
                let last = (8 * (shift + v.len())) / 6;
                if last > first && last - first >= MIN_KNOWN_SECRET_LEN {
                    forms.push(enc[first..last].to_vec());
                }
            }
        }
        let hex: Vec<u8> = v
            .iter()
            .flat_map(|b| format!("{b:02x}").into_bytes())
            .collect();
        forms.push(hex.to_ascii_uppercase());
        forms.push(hex);
        forms.sort();
        forms.dedup();
        forms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_forms_match_the_secret_at_every_offset() {
        let secret = KnownSecret::new("T", b"hunter2-but-longer".to_vec()).expect("long enough");
        let forms = secret.forms();
        for prefix in ["", "a", "ab", "abc", "{\"k\": \""] {
            let mut blob = prefix.as_bytes().to_vec();
            blob.extend_from_slice(b"hunter2-but-longer");
            blob.extend_from_slice(b"\"} trailing");
            let enc = base64::engine::general_purpose::STANDARD.encode(&blob);
            assert!(
                forms
                    .iter()
                    .any(|f| memchr::memmem::find(enc.as_bytes(), f).is_some()),
                "prefix {prefix:?}: no form found in {enc}"
            );
        }
    }

    #[test]
    fn short_values_and_unset_variables_are_refused() {
        assert!(matches!(
            KnownSecret::new("X", b"short".to_vec()),
            Err(EgressError::SecretTooShort { len: 5, .. })
        ));
        assert!(matches!(
            KnownSecret::from_env("RLM_SANDBOX_TEST_SURELY_UNSET_VARIABLE"),
            Err(EgressError::EnvUnset { .. })
        ));
    }

    #[test]
    fn debug_never_prints_the_value() {
        let secret = KnownSecret::new("API", b"supersecretvalue".to_vec()).expect("long enough");
        assert!(!format!("{secret:?}").contains("supersecret"));
    }
}
