//! A standby's prelude: Python source that the agent runs in the user's
//! namespace before it reports `standby`, so work every claim would do
//! first (imports, a support module) is paid before the claim, off its
//! time to interactive.
//!
//! The prelude is part of the sandbox's configuration, the same for every
//! standby of it: each runs it on its own, in its own sandbox (nothing is
//! shared between claims). It reaches the agent as a file of the run's
//! input directory, `/rlm/prelude.py` in the sandbox, read-only; the
//! agent runs it when the file is there (a session without a prelude has
//! none). A prelude that raises ends the agent before `standby`, its
//! traceback on the agent's stderr: the standby fails to start.

use std::path::Path;
use std::sync::Arc;

use crate::supervise::guard::share_with_sandbox;

/// The prelude's file name in the run's input directory (the agent's
/// `/rlm/prelude.py`: rootfs-builder/python/_rlm_agent/dispatch.py).
pub const PRELUDE_FILE: &str = "prelude.py";
/// The largest prelude accepted: source code, not data (data travels as
/// contexts).
pub const MAX_PRELUDE_BYTES: usize = 1 << 20;

/// Checked prelude source (UTF-8, at most [`MAX_PRELUDE_BYTES`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prelude(Arc<str>);

impl Prelude {
    /// `source` as a prelude; the error names what is wrong and the
    /// accepted form.
    pub fn new(source: Vec<u8>, what: &str) -> Result<Prelude, String> {
        if source.len() > MAX_PRELUDE_BYTES {
            return Err(format!(
                "{what} is {} bytes; a prelude is Python source of at most {MAX_PRELUDE_BYTES} bytes",
                source.len()
            ));
        }
        match String::from_utf8(source) {
            Ok(text) => Ok(Prelude(text.into())),
            Err(e) => Err(format!(
                "{what} is not UTF-8 ({e}); a prelude is Python source text"
            )),
        }
    }

    /// Reads a prelude file.
    pub fn read(path: &Path) -> Result<Prelude, String> {
        let what = format!("the prelude file {}", path.display());
        let bytes = std::fs::read(path).map_err(|e| format!("{what}: {e}"))?;
        Prelude::new(bytes, &what)
    }

    pub fn source(&self) -> &str {
        &self.0
    }

    /// Writes the prelude into the run's input directory, readable by the
    /// sandbox only.
    pub fn place(&self, input_dir: &Path) -> std::io::Result<()> {
        let path = input_dir.join(PRELUDE_FILE);
        std::fs::write(&path, self.0.as_bytes())?;
        share_with_sandbox(&path, 0o440)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_prelude_is_bounded_utf8_source() {
        assert_eq!(
            Prelude::new(b"import json\n".to_vec(), "p")
                .unwrap()
                .source(),
            "import json\n"
        );
        let big = Prelude::new(vec![b'#'; MAX_PRELUDE_BYTES + 1], "p").unwrap_err();
        assert!(big.contains("at most 1048576 bytes"), "{big}");
        let bad = Prelude::new(vec![0xff, 0xfe], "p").unwrap_err();
        assert!(bad.contains("not UTF-8"), "{bad}");
    }
}
