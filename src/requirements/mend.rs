//! `requirements remove` on stored bytes, whatever they hold: the way to mend a stored file that
//! is not a requirements file as it stands (bytes that are not UTF-8, a file over the content
//! limit), line by line, without reading it as text first.
//!
//! The bytes are split into logical lines exactly as [`RequirementsFile::parse`] splits text
//! (a lossy decoding keeps every line where it is: an invalid byte becomes U+FFFD, never a line
//! break), and a line is taken out when it names one of the packages: by its parsed requirement
//! when the line is UTF-8 (so on a valid file this is [`RequirementsFile::remove`], byte for
//! byte), by its leading name when it is not ([`leading_name`]). Every other line is copied from
//! the stored bytes unchanged; nothing is re-encoded. Whether the result may be written (UTF-8,
//! within the limit, accepted by the policy) is the caller's decision: [`Removal`] says what is
//! still wrong, with the stored file's line numbers.

use super::{Entry, RequirementsFile, SpecError, guard, logical_text, normalize_name};

/// The UTF-8 encoding of U+FEFF: a mark at the start belongs to the file ([`guard::keep_bom`]).
const BOM: &[u8] = b"\xef\xbb\xbf";

/// A kept line holding bytes that are not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotUtf8 {
    /// 1-based number of the physical line, in the stored bytes.
    pub line: usize,
    /// Where the first such byte of the line is, from the start of the stored bytes.
    pub offset: usize,
    pub byte: u8,
    /// The package the line names ([`leading_name`]), when it names one: removing it mends the
    /// line.
    pub name: Option<String>,
}

impl std::fmt::Display for NotUtf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {} (byte 0x{:02x} at offset {}",
            self.line, self.byte, self.offset
        )?;
        match &self.name {
            Some(name) => write!(f, ", package `{name}`)"),
            None => f.write_str(", no package)"),
        }
    }
}

/// What [`remove`] left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The stored bytes without the removed lines (a leading byte order mark kept in front).
    pub bytes: Vec<u8>,
    /// How many logical lines each name took out, in the order the names were given; a name
    /// given twice takes nothing the second time, as two [`RequirementsFile::remove`]s would.
    pub removed: Vec<usize>,
    /// The kept lines that are not UTF-8, in file order.
    pub not_utf8: Vec<NotUtf8>,
    /// The kept lines with their numbers in the stored bytes, for messages.
    kept: RequirementsFile,
}

impl Removal {
    /// The kept lines as they stand in the stored file: numbered as there, so that what a check
    /// of them names is where the user finds it. Lines that are not UTF-8 are decoded lossily.
    pub(crate) fn kept_as_stored(&self) -> &RequirementsFile {
        &self.kept
    }
}

/// Take the lines naming any of `names` out of `bytes`. Never panics, whatever the bytes; fails
/// only on a name that is not a package name.
pub fn remove(bytes: &[u8], names: &[String]) -> Result<Removal, SpecError> {
    let wanted = names
        .iter()
        .map(|n| normalize_name(n).map_err(|e| SpecError::new(n, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let text = String::from_utf8_lossy(bytes);
    let mut physical = bytes.split_inclusive(|b| *b == b'\n');
    let mut at = 0;
    let mut removed = vec![0; wanted.len()];
    let (mut out, mut kept, mut not_utf8) =
        (Vec::with_capacity(bytes.len()), Vec::new(), Vec::new());
    for line in RequirementsFile::parse(&text).lines {
        let start = at;
        let mut bad = None;
        for (i, _) in line.raw.split_inclusive('\n').enumerate() {
            // Lossy decoding keeps every `\n`, so the lines of both split alike.
            let Some(part) = physical.next() else { break };
            if let (None, Err(e)) = (&bad, std::str::from_utf8(part)) {
                let valid = e.valid_up_to();
                bad = Some((line.number + i, at + valid, part[valid]));
            }
            at += part.len();
        }
        let name = match (&line.entry, bad) {
            (_, Some(_)) => leading_name(&logical_text(guard::meaning(line.number, &line.raw))),
            (Entry::Requirement { name, .. }, None) => Some(name.clone()),
            _ => None,
        };
        if let Some(i) = name
            .as_ref()
            .and_then(|n| wanted.iter().position(|w| w == n))
        {
            removed[i] += 1;
            continue;
        }
        out.extend_from_slice(&bytes[start..at]);
        if let Some((line, offset, byte)) = bad {
            not_utf8.push(NotUtf8 {
                line,
                offset,
                byte,
                name,
            });
        }
        kept.push(line);
    }
    if bytes.starts_with(BOM) && !out.is_empty() && !out.starts_with(BOM) {
        out.splice(0..0, BOM.iter().copied());
    }
    Ok(Removal {
        bytes: out,
        removed,
        not_utf8,
        kept: RequirementsFile { lines: kept },
    })
}

/// The package a line that is not UTF-8 names: the run of name characters it starts with, when
/// what follows can end a name in a requirement (a version, extras, a marker, a URL, blanks or
/// the end), e.g. `flask` in `flask==3.0 # caf\xe9`. A name cut short by a byte that is not
/// UTF-8 (`fla\xffsk==1`) names nothing, nor does a comment or an option line.
fn leading_name(logical: &str) -> Option<String> {
    let text = logical.trim_start();
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .unwrap_or(text.len());
    let (name, rest) = text.split_at(end);
    let ends = rest
        .chars()
        .next()
        .is_none_or(|c| c.is_ascii_whitespace() || "[(<>=!~;@,".contains(c));
    if name.is_empty() || !ends {
        return None;
    }
    normalize_name(name).ok()
}

#[cfg(test)]
mod tests;
