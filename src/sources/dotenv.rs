//! [`DotenvSource`] (the key in a `.env` file) and [`DotenvFile`] (a parsed `.env` file for the
//! non-secret values next to it, such as `MEGALLM_BASE_URL`).
//!
//! The file is parsed with dotenvy's iterator, which never writes the process environment.
//! dotenvy's own errors quote the offending line, which may contain the key, so they are
//! translated into messages that give the line number instead.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::key::{ApiKey, KeyPolicy};
use crate::source::{KeySource, Resolved, SourceError, SourceErrorKind, SourceKind};
use crate::sources::read::read_bounded;

/// Size limit of a `.env` file: 1 MiB. A `.env` file has tens of short lines, so a larger
/// file is a wrong path, and the limit keeps such a file from being read into memory whole.
const MAX_DOTENV_SIZE: u64 = 1024 * 1024;

/// The variable [`DotenvSource`] reads unless [`DotenvSource::with_var`] changes it.
const DEFAULT_VAR: &str = "MEGALLM_API_KEY";

/// A parsed `.env` file, for reading the non-secret settings that sit next to the key.
///
/// Values are kept in zeroizing memory, and `Debug` prints the path and the variable names
/// only. When a name appears twice, [`DotenvFile::get`] returns the first value, as dotenvy's
/// own loader does. dotenvy substitutes `$VAR` and `${VAR}` references in unquoted and
/// double-quoted values, from the process environment first and then from earlier lines of
/// the file. Single-quoted values are taken literally.
///
/// ```
/// use megallm_auth::DotenvFile;
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join(".env");
/// std::fs::write(&path, "MEGALLM_BASE_URL=https://ai.megallm.io/v1\n").unwrap();
///
/// let file = DotenvFile::load(&path).unwrap();
/// assert_eq!(file.get("MEGALLM_BASE_URL"), Some("https://ai.megallm.io/v1"));
/// ```
pub struct DotenvFile {
    path: PathBuf,
    entries: Vec<Entry>,
}

struct Entry {
    name: String,
    value: Zeroizing<String>,
    /// 1-based number of the line where the entry starts.
    line: usize,
    /// Whether dotenvy substituted a `$` reference into the value.
    substitutes: bool,
}

impl DotenvFile {
    /// Reads and parses the `.env` file at `path`.
    ///
    /// # Errors
    ///
    /// [`SourceError`] labelled `dotenv:<path>`, of kind:
    /// - not found when the file does not exist;
    /// - misconfigured when the path is a directory, or the file exceeds 1 MiB or is not UTF-8;
    /// - misconfigured when a line is not valid `.env` syntax, with a message that gives the
    ///   line number and never the line's text;
    /// - denied when the OS denies access, and unavailable for any other I/O failure.
    pub fn load(path: impl AsRef<Path>) -> Result<DotenvFile, SourceError> {
        let path = path.as_ref();
        DotenvFile::load_labelled(path, &dotenv_label(path))
    }

    fn load_labelled(path: &Path, label: &str) -> Result<DotenvFile, SourceError> {
        let description = format!(".env file {}", path.display());
        let content = read_bounded(path, MAX_DOTENV_SIZE).map_err(|error| {
            error.into_source_error(label, &description, SourceErrorKind::NotFound)
        })?;

        // Security: Utf8Error carries a byte offset only, never the bytes.
        let text = std::str::from_utf8(&content).map_err(|error| {
            let line = line_of_offset(&content, error.valid_up_to());
            SourceError::misconfigured(
                label,
                format!("{description} is not valid UTF-8 (line {line}); save it as UTF-8 text"),
            )
        })?;
        // dotenvy strips a byte order mark only when it loads into the process environment,
        // not in the iterator used here, where a BOM makes the first line a syntax error.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);

        let entries = parse_entries(text, label, &description)?;
        Ok(DotenvFile {
            path: path.to_owned(),
            entries,
        })
    }

    /// Returns the value of `name`, or `None` when the file does not define it. Use it for
    /// non-secret settings; read the key through [`DotenvSource`], which checks it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entry(name).map(|entry| entry.value.as_str())
    }

    /// Returns the names the file defines, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|entry| entry.name.as_str())
    }

    /// Returns the path the file was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.name == name)
    }
}

impl fmt::Debug for DotenvFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DotenvFile")
            .field("path", &self.path)
            .field("names", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

/// Reads the key from a variable in a `.env` file, `MEGALLM_API_KEY` in `.env` by default.
///
/// # Source details
///
/// - **Label:** `dotenv:<path as given>`, such as `dotenv:.env`.
/// - **Not found:** the file does not exist, or it does not define the variable, or defines
///   it as empty.
/// - **Errors** (messages name the file and the line number, never the line's text):
///   - misconfigured: the path is a directory, the file is too large or not UTF-8, or a line
///     is not valid `.env` syntax;
///   - misconfigured: the variable is defined twice, contains only whitespace, or contains `$`
///     outside single quotes;
///   - denied: the OS denies access;
///   - unavailable: any other I/O failure;
///   - invalid key: the value is not a valid key.
///
/// The key is taken literally. dotenvy would substitute `$VAR` inside an unquoted or
/// double-quoted value and so change the key silently, so such a value is rejected with a
/// hint to use single quotes, which keep `$` literal. A relative path is resolved against the
/// working directory at each resolution, and the process environment is never written.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use megallm_auth::{DotenvSource, KeySource};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join(".env");
/// std::fs::write(&path, "MEGALLM_API_KEY='sk-mega-DOC$EXAMPLE00'\n").unwrap();
///
/// let resolved = DotenvSource::new(&path).resolve().await.unwrap();
/// assert_eq!(resolved.key.expose_secret(), "sk-mega-DOC$EXAMPLE00");
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct DotenvSource {
    path: PathBuf,
    var: String,
    label: String,
    policy: KeyPolicy,
}

impl DotenvSource {
    /// Creates a source that reads `MEGALLM_API_KEY` from the `.env` file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> DotenvSource {
        let path = path.into();
        DotenvSource {
            label: dotenv_label(&path),
            path,
            var: DEFAULT_VAR.to_owned(),
            policy: KeyPolicy::default(),
        }
    }

    /// Reads the variable `name` instead of `MEGALLM_API_KEY`.
    #[must_use]
    pub fn with_var(mut self, name: impl Into<String>) -> DotenvSource {
        self.var = name.into();
        self
    }

    /// Sets how strictly the `sk-mega-` prefix is enforced.
    #[must_use]
    pub fn with_policy(mut self, policy: KeyPolicy) -> DotenvSource {
        self.policy = policy;
        self
    }

    /// Returns the path of the `.env` file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl KeySource for DotenvSource {
    fn label(&self) -> &str {
        &self.label
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Dotenv
    }

    fn watch_paths(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }

    async fn resolve(&self) -> Result<Resolved, SourceError> {
        let file = DotenvFile::load_labelled(&self.path, &self.label)?;
        let path = self.path.display();
        let var = &self.var;

        let mut definitions = file.entries.iter().filter(|entry| entry.name == *var);
        let Some(entry) = definitions.next() else {
            return Err(SourceError::not_found(
                &self.label,
                format!("{var} is not set in {path}"),
            ));
        };
        if let Some(second) = definitions.next() {
            return Err(SourceError::misconfigured(
                &self.label,
                format!(
                    "{var} is defined twice in {path} (lines {} and {}); keep one definition",
                    entry.line, second.line
                ),
            ));
        }

        let line = entry.line;
        if entry.substitutes {
            return Err(SourceError::misconfigured(
                &self.label,
                dollar_message(var, line, &path),
            ));
        }
        if entry.value.is_empty() {
            return Err(SourceError::not_found(
                &self.label,
                format!("{var} is empty in {path} (line {line})"),
            ));
        }
        if entry.value.trim().is_empty() {
            return Err(SourceError::misconfigured(
                &self.label,
                format!(
                    "{var} on line {line} of {path} is blank (it contains only whitespace); set it to the key or remove the line"
                ),
            ));
        }

        let key = ApiKey::parse(&entry.value, &self.label, self.policy).map_err(|invalid| {
            let message = format!(
                "{var} on line {line} of {path}: {}; {}",
                invalid.problem,
                invalid.problem.remedy()
            );
            SourceError::new(SourceErrorKind::InvalidKey, &self.label, message).with_cause(invalid)
        })?;
        Ok(Resolved::new(key, &self.label, SourceKind::Dotenv))
    }
}

fn dotenv_label(path: &Path) -> String {
    format!("dotenv:{}", path.display())
}

fn dollar_message(var: &str, line: usize, path: &impl fmt::Display) -> String {
    format!(
        "{var} on line {line} of {path} contains `$` outside single quotes, which the .env parser replaces with the value of a variable; wrap the value in single quotes ('...') to keep `$` literal"
    )
}

/// Runs dotenvy's iterator over `text` and records each entry with its line number.
///
/// dotenvy reports neither line numbers nor raw text. [`LineReader`] hands it one physical
/// line per `read` call, so the count of lines it has handed out when dotenvy yields an entry
/// is the entry's last line.
///
/// NOTE: dotenvy copies each line and value into `String`s of its own (its read buffer, the
/// line, the substitution table) and drops them without wiping. The values this crate keeps
/// are moved into `Zeroizing`, but those intermediate copies remain in freed memory.
fn parse_entries(text: &str, label: &str, description: &str) -> Result<Vec<Entry>, SourceError> {
    let lines: Vec<&str> = text.split('\n').collect();
    let lines_read = Rc::new(Cell::new(0));
    let reader = LineReader {
        rest: text.as_bytes(),
        lines_read: Rc::clone(&lines_read),
    };

    let mut entries = Vec::new();
    let mut previous_end = 0;
    for item in dotenvy::from_read_iter(reader) {
        let end = lines_read.get();
        let start = first_content_line(&lines, previous_end, end);
        previous_end = end;
        let raw = &lines[start - 1..end.max(start)];

        match item {
            Ok((name, value)) => entries.push(Entry {
                name,
                value: Zeroizing::new(value),
                line: start,
                substitutes: substitutes_variable(raw),
            }),
            Err(dotenvy::Error::LineParse(quoted_line, _)) => {
                // Security: dotenvy's error quotes the line, which may contain the key. The
                // text is wiped and only the line number goes into the message.
                drop(Zeroizing::new(quoted_line));
                return Err(syntax_error(label, description, start, raw));
            }
            Err(_) => {
                // The reader is in memory and the text is valid UTF-8, so dotenvy has no I/O
                // to fail. Its error is dropped unprinted in case a future version quotes text.
                return Err(SourceError::unavailable(
                    label,
                    format!("failed to parse {description} at line {start}"),
                ));
            }
        }
    }
    Ok(entries)
}

fn syntax_error(label: &str, description: &str, line: usize, raw: &[&str]) -> SourceError {
    let name = variable_name(raw.first().copied().unwrap_or_default());
    if substitutes_variable(raw) {
        let subject = name.unwrap_or("the variable");
        return SourceError::misconfigured(label, dollar_message(subject, line, &description));
    }

    let subject = match name {
        Some(name) => format!("line {line} of {description} ({name})"),
        None => format!("line {line} of {description}"),
    };
    SourceError::misconfigured(
        label,
        format!(
            "{subject} is not valid .env syntax; write NAME=value and quote a value that contains spaces, `#` or quote characters (single quotes keep it literal)"
        ),
    )
}

/// Returns the 1-based number of the first line in `previous_end + 1 ..= end` that is neither
/// blank nor a comment, because dotenvy skips those before an entry.
fn first_content_line(lines: &[&str], previous_end: usize, end: usize) -> usize {
    (previous_end..end)
        .find(|&index| {
            let line = lines.get(index).map_or("", |line| line.trim());
            !line.is_empty() && !line.starts_with('#')
        })
        .map_or(end.max(1), |index| index + 1)
}

/// Returns the variable name of a raw `.env` line (`NAME=` or `export NAME=`), or `None`
/// when the text before `=` is not a plain name. Only a name followed by `=` is returned,
/// so a line containing a pasted key and nothing else is never echoed.
fn variable_name(line: &str) -> Option<&str> {
    let (before, _) = line.split_once('=')?;
    let before = before.trim();
    let name = match before.strip_prefix("export") {
        Some(rest) if rest.starts_with(char::is_whitespace) => rest.trim_start(),
        _ => before,
    };

    let mut characters = name.chars();
    let first = characters.next()?;
    let valid = (first.is_ascii_alphabetic() || first == '_')
        && characters.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    valid.then_some(name)
}

/// Returns whether dotenvy 0.15 substitutes a variable in the value of the raw entry `lines`:
/// whether the value contains a `$` that is neither inside single quotes nor escaped with a
/// backslash. Unquoted whitespace ends the value, as in dotenvy, where only a comment may
/// follow it.
fn substitutes_variable(lines: &[&str]) -> bool {
    let Some((first, rest)) = lines.split_first() else {
        return false;
    };
    let Some((_, value)) = first.split_once('=') else {
        return false;
    };
    let continuation = rest
        .iter()
        .flat_map(|line| std::iter::once('\n').chain(line.chars()));

    let mut quote = None;
    let mut escaped = false;
    for character in value.trim_start().chars().chain(continuation) {
        if escaped {
            escaped = false;
            continue;
        }
        match (quote, character) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), _) => {}
            (_, '$') => return true,
            (_, '\\') => escaped = true,
            (Some('"'), '"') => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(character),
            (None, c) if c.is_whitespace() => return false,
            (None, _) => {}
        }
    }
    false
}

/// 1-based number of the line that contains byte `offset`.
fn line_of_offset(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count()
        + 1
}

/// A reader that returns at most one physical line per `read` call and counts the lines it
/// has returned in full.
///
/// dotenvy wraps its reader in a `BufReader`, which refills only when its buffer is empty, so
/// with this reader its buffer never contains more than the line it is parsing.
struct LineReader<'a> {
    rest: &'a [u8],
    lines_read: Rc<Cell<usize>>,
}

impl Read for LineReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let line_length = self
            .rest
            .iter()
            .position(|&byte| byte == b'\n')
            .map_or(self.rest.len(), |index| index + 1);
        let count = line_length.min(out.len());

        out[..count].copy_from_slice(&self.rest[..count]);
        self.rest = &self.rest[count..];
        if count > 0 && count == line_length {
            self.lines_read.set(self.lines_read.get() + 1);
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_detection_follows_quoting() {
        let cases = [
            ("K=a$b", true),
            ("K=\"a$b\"", true),
            ("K=\"a${b}\"", true),
            ("export K=\"a$b\"", true),
            ("K='a$b'", false),
            ("K=a\\$b", false),
            ("K=\"a\\$b\"", false),
            ("K=ab # $comment", false),
            ("K=   a$b", true),
            ("K=plain", false),
            ("K='it''s$x'", false),
        ];
        for (line, expected) in cases {
            assert_eq!(substitutes_variable(&[line]), expected, "{line}");
        }
    }

    #[test]
    fn dollar_detection_spans_lines() {
        assert!(substitutes_variable(&["K=\"first", "second$x\""]));
        assert!(!substitutes_variable(&["K='first", "second$x'"]));
    }

    #[test]
    fn variable_name_only_for_plain_names() {
        assert_eq!(
            variable_name("MEGALLM_API_KEY=x y"),
            Some("MEGALLM_API_KEY")
        );
        assert_eq!(variable_name("export   A.B_C=1"), Some("A.B_C"));
        assert_eq!(variable_name("exporter=1"), Some("exporter"));
        assert_eq!(variable_name("sk-mega-ABC"), None);
        assert_eq!(variable_name("sk-mega-ABC=1"), None);
        assert_eq!(variable_name("=1"), None);
    }

    #[test]
    fn entries_record_start_lines() {
        let text = "# comment\n\nA=1\nB=\"two\nlines\"\n\n  # indented comment\nC=3";
        let entries = parse_entries(text, "dotenv:t", ".env file t").unwrap();
        let lines: Vec<(&str, usize)> = entries
            .iter()
            .map(|entry| (entry.name.as_str(), entry.line))
            .collect();
        assert_eq!(lines, [("A", 3), ("B", 4), ("C", 8)]);
        assert_eq!(entries[1].value.as_str(), "two\nlines");
    }

    #[test]
    fn syntax_error_reports_start_line() {
        let text = "A=1\n\nB=x y\n";
        let error = parse_entries(text, "dotenv:t", ".env file t")
            .err()
            .expect("unquoted space is a syntax error");
        assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
        assert!(
            error
                .message()
                .starts_with("line 3 of .env file t (B) is not valid"),
            "{}",
            error.message()
        );
    }
}
