//! Reading a batch file and checking it before anything is sent.

use crate::exit::bad_input;
use aam_protocol::codec::{self, DEFAULT_MAX_FRAME};
use aam_protocol::spec::{parse_batch, validate, BatchSpec, Format, Limits, SpecErrors};
use std::path::Path;

/// Prefixes each problem with the file it is in, one per line.
pub fn describe(path: &Path, errors: &SpecErrors) -> String {
    errors
        .0
        .iter()
        .map(|e| format!("{}: {e}", path.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads, parses and validates a batch file (exit 2 on any problem).
pub fn load(path: &Path) -> anyhow::Result<BatchSpec> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad_input(format!("{}: cannot read: {e}", path.display())))?;
    let format = Format::for_path(&path.to_string_lossy());
    let batch =
        parse_batch(&text, format).map_err(|e| bad_input(format!("{}: {e}", path.display())))?;
    // Structure only: the manager enforces the size limits it is configured
    // with. The copy is checked; the batch goes to the manager as written.
    validate(batch.clone(), &Limits::structural()).map_err(|e| bad_input(describe(path, &e)))?;
    let size = codec::encode(&batch)
        .map_err(|e| bad_input(format!("{}: {e}", path.display())))?
        .len();
    if size > DEFAULT_MAX_FRAME {
        return Err(bad_input(format!(
            "{}: the batch encodes to {size} bytes, over the {DEFAULT_MAX_FRAME}-byte frame limit; split it into several sessions",
            path.display()
        )));
    }
    Ok(batch)
}
