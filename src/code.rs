//! Checks on the code a run is given, made before any sandbox starts.

use thiserror::Error;

/// Code that must not run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodeError {
    /// CPython stops reading a source *file* at a NUL byte without a word,
    /// so `print(1)\0<anything>` would run as `print(1)`: what runs would
    /// not be what was sent. (`compile()` and `python3 -c` refuse it; a
    /// file run does not.)
    #[error(
        "the code contains a NUL byte at byte offset {offset}; Python would silently stop \
         reading there. Remove it (inside a string literal, write it as \\x00)"
    )]
    NulByte { offset: usize },
}

impl CodeError {
    /// A stable name for programs (`--json`'s `error.kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            CodeError::NulByte { .. } => "nul_byte_in_code",
        }
    }
}

/// Refuses code that would not run as written.
pub fn validate(code: &[u8]) -> Result<(), CodeError> {
    match memchr::memchr(0, code) {
        Some(offset) => Err(CodeError::NulByte { offset }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_nul_is_named_by_its_offset() {
        assert_eq!(validate(b"print(1)\n"), Ok(()));
        assert_eq!(validate(b""), Ok(()));
        assert_eq!(
            validate(b"print(1)\x00x\x00"),
            Err(CodeError::NulByte { offset: 8 })
        );
        assert_eq!(validate(b"\x00"), Err(CodeError::NulByte { offset: 0 }));
        let msg = validate(b"ab\x00").expect_err("refused").to_string();
        assert!(msg.contains("byte offset 2"), "{msg}");
    }
}
