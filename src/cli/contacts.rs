//! The campaign CSV file: UTF-8 with or without a BOM, a header row, columns `phone` (required),
//! `email` and `ext_contact_code` (optional), every other column a script variable by
//! `field_code`; RFC 4180 quoting, so cells may hold commas, quotes and newlines.
//!
//! The file is read twice, never held whole: [`scan`] checks every row (with the same contact
//! rules the facade applies, plus duplicates across the whole file and, optionally, the
//! script's variables) and hashes the bytes; only when no row is bad does [`read`] stream the
//! contacts to the facade.

use std::{
    collections::HashMap,
    fs::File,
    hash::{DefaultHasher, Hash, Hasher},
    io::{BufRead, BufReader, Read},
    path::Path,
};

use sha2::{Digest, Sha256};

use crate::{
    domain::{ScriptVariables, validate_contacts},
    pb,
};

/// Bad rows listed in full; the rest are counted.
const MAX_REPORTED: usize = 50;

/// Where each column goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Number of columns every row must have.
    columns: usize,
    /// Index of `phone`.
    phone: usize,
    /// Index of `email`, when present.
    email: Option<usize>,
    /// Index of `ext_contact_code`, when present.
    code: Option<usize>,
    /// `(index, field_code)` of every variable column.
    variables: Vec<(usize, String)>,
}

impl Header {
    /// Reads the column names; reports a missing `phone`, empty or repeated names.
    fn parse(names: &csv::StringRecord, delimiter: u8) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let (mut phone, mut email, mut code, mut variables) = (None, None, None, Vec::new());
        let mut seen = HashMap::new();
        for (i, raw) in names.iter().enumerate() {
            let name = raw.trim();
            if name.is_empty() {
                problems.push(format!("line 1: column {} has no name", i + 1));
                continue;
            }
            if let Some(first) = seen.insert(name.to_owned(), i) {
                problems.push(format!("line 1: column {} repeats column {} ({name:?})", i + 1, first + 1));
                continue;
            }
            match name.to_ascii_lowercase().as_str() {
                "phone" => phone = Some(i),
                "email" => email = Some(i),
                "ext_contact_code" => code = Some(i),
                _ => variables.push((i, name.to_owned())),
            }
        }
        match phone {
            None => {
                let found: Vec<&str> = names.iter().take(8).collect();
                problems.push(format!(
                    "line 1: the header has no `phone` column (columns separated by {}, found {found:?}; \
                     ',', ';' and tab are recognized when a `phone` column shows which one it is)",
                    separator_name(delimiter)
                ));
            }
            Some(phone) if problems.is_empty() => {
                return Ok(Header { columns: names.len(), phone, email, code, variables });
            }
            Some(_) => {}
        }
        Err(problems)
    }

    /// The variable columns' field codes.
    pub fn variable_codes(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(|(_, c)| c.as_str())
    }

    /// One row as a contact; an empty variable cell is left out (no value).
    fn contact(&self, row: &csv::StringRecord) -> pb::Contact {
        let cell = |i: usize| row.get(i).unwrap_or_default().to_owned();
        pb::Contact {
            phone: cell(self.phone).trim().to_owned(),
            email: self.email.map(|i| cell(i).trim().to_owned()).unwrap_or_default(),
            external_contact_code: self.code.map(cell).unwrap_or_default(),
            variables: self
                .variables
                .iter()
                .filter_map(|(i, code)| Some((code.clone(), row.get(*i).filter(|v| !v.is_empty())?.to_owned())))
                .collect(),
        }
    }
}

/// Passes bytes through while hashing them.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A CSV reader over `source`, a UTF-8 BOM skipped, and the column separator it uses.
fn csv_reader<R: Read>(source: R) -> Result<(csv::Reader<BufReader<R>>, u8), String> {
    let mut buffered = BufReader::with_capacity(64 * 1024, source);
    let bom = buffered.fill_buf().map_err(|e| e.to_string())?.starts_with(b"\xEF\xBB\xBF");
    if bom {
        buffered.consume(3);
    }
    let delimiter = sniff_delimiter(buffered.fill_buf().map_err(|e| e.to_string())?);
    Ok((
        csv::ReaderBuilder::new().has_headers(true).flexible(true).delimiter(delimiter).from_reader(buffered),
        delimiter,
    ))
}

/// The column separator of a file starting with `head`: the first of `,`, `;` (what
/// spreadsheets write where the comma is the decimal mark, Vietnamese locales included) and tab
/// that makes a `phone` column of the header row; `,` when none does.
fn sniff_delimiter(head: &[u8]) -> u8 {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let has_phone = |sep: u8| {
        line.split(|b| *b == sep).any(|cell| {
            let cell = String::from_utf8_lossy(cell);
            cell.trim().trim_matches('"').trim().eq_ignore_ascii_case("phone")
        })
    };
    [b',', b';', b'\t'].into_iter().find(|sep| has_phone(*sep)).unwrap_or(b',')
}

/// A separator as the messages name it.
pub fn separator_name(delimiter: u8) -> &'static str {
    match delimiter {
        b';' => "';'",
        b'\t' => "tabs",
        _ => "','",
    }
}

fn open(path: &Path) -> Result<File, String> {
    File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// What the scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The column layout.
    pub header: Header,
    /// Data rows (contacts).
    pub rows: u64,
    /// SHA-256 of the file's bytes, hex.
    pub digest: String,
    /// The column separator found (`,`, `;` or tab).
    pub delimiter: u8,
    /// The script's required variables that have no column (with `variables`), in the script's
    /// order: without `--check-variables` a warning, not a refusal.
    pub missing_required: Vec<String>,
}

/// Checks the whole file. Rows are numbered by the line they start on (line 1 = the header).
/// Reports: wrong column count, every contact rule of the facade (phone, email, code, variable
/// keys and values), a phone repeated anywhere in the file (the facade only sees repeats within
/// one chunk), and, with `variables` and `check_variables`, header columns that are not
/// variables of the script, missing columns for required variables (once, not on every row),
/// and empty required cells. With `variables` alone, the missing columns are only noted in
/// [`Scan::missing_required`], for a warning.
pub fn scan(path: &Path, variables: Option<&ScriptVariables>, check_variables: bool) -> Result<Scan, String> {
    let mut hashing = Hashing { inner: open(path)?, hasher: Sha256::new() };
    let (mut reader, delimiter) = csv_reader(&mut hashing)?;
    let mut problems = Vec::new();
    let header = match reader.headers() {
        Ok(names) if names.iter().all(str::is_empty) => return Err(format!("{}: no header row", path.display())),
        Ok(names) => Header::parse(names, delimiter).map_err(|p| report(path, p, 0))?,
        Err(e) => return Err(format!("{}: {}", path.display(), csv_error(&e))),
    };
    // Said once for the header, never again for each row.
    let missing_required: Vec<String> = variables
        .map(|script| {
            script.required().filter(|c| !header.variable_codes().any(|h| h == *c)).map(str::to_owned).collect()
        })
        .unwrap_or_default();
    let checked = variables.filter(|_| check_variables);
    let mut header_said = missing_required.clone();
    if let Some(script) = checked {
        for code in header.variable_codes().filter(|c| !script.is_known(c)) {
            problems.push(format!("line 1: column {code:?} is not a variable of the script"));
            header_said.push(code.to_owned());
        }
        for code in &missing_required {
            problems.push(format!("line 1: no column for the script's required variable {code:?}"));
        }
    }
    // Phone hash -> first line: 16 bytes a row, enough for millions of rows.
    let mut phones: HashMap<u64, u64> = HashMap::new();
    let mut bad_rows = 0usize;
    let mut rows = 0u64;
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                bad_rows += 1;
                problems.push(csv_error(&e));
                continue;
            }
        }
        rows += 1;
        let line = record.position().map_or(0, |p| p.line());
        let before = problems.len();
        if record.len() != header.columns {
            problems.push(format!("line {line}: expected {} columns, found {}", header.columns, record.len()));
        } else {
            let row = Row { header: &header, record: &record, line, header_said: &header_said };
            check_row(&row, checked, &mut phones, &mut problems);
        }
        bad_rows += usize::from(problems.len() > before);
    }
    drop(reader);
    if rows == 0 && problems.is_empty() {
        return Err(format!("{}: no contacts (only a header row)", path.display()));
    }
    if !problems.is_empty() {
        return Err(report(path, problems, bad_rows));
    }
    // Read to the end, so the digest covers the whole file.
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|e| e.to_string())?;
    let digest = hashing.hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Scan { header, rows, digest, delimiter, missing_required })
}

/// One data row and what it is checked against.
struct Row<'a> {
    header: &'a Header,
    record: &'a csv::StringRecord,
    /// The line it starts on.
    line: u64,
    /// Variables reported once for the header (a required one without a column, a column the
    /// script does not know), not again on every row.
    header_said: &'a [String],
}

impl Row<'_> {
    /// `line N: FIELD "VALUE": why` (the value as the file has it; nothing for an empty cell).
    fn problem(&self, field: &str, description: &str) -> String {
        let line = self.line;
        let contact = self.header.contact(self.record);
        let value = match field {
            "phone" => Some(contact.phone),
            "email" => Some(contact.email),
            "external_contact_code" => Some(contact.external_contact_code),
            _ => field
                .strip_prefix("variables[")
                .and_then(|k| k.strip_suffix(']'))
                .and_then(|k| contact.variables.get(k).cloned()),
        };
        match value.filter(|v| !v.is_empty()) {
            Some(v) => format!("line {line}: {field} {:?}: {description}", shorten(&v)),
            None => format!("line {line}: {field}: {description}"),
        }
    }

    /// Whether a violation is about a variable already reported for the header.
    fn is_header_said(&self, field: &str) -> bool {
        let key = field.strip_prefix("variables[").and_then(|k| k.strip_suffix(']'));
        key.is_some_and(|k| self.header_said.iter().any(|m| m == k))
    }
}

/// A cell for a message: at most 40 characters.
fn shorten(value: &str) -> String {
    match value.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &value[..end]),
        None => value.to_owned(),
    }
}

fn check_row(
    row: &Row<'_>,
    variables: Option<&ScriptVariables>,
    phones: &mut HashMap<u64, u64>,
    problems: &mut Vec<String>,
) {
    let contact = row.header.contact(row.record);
    let mut hasher = DefaultHasher::new();
    contact.phone.hash(&mut hasher);
    let phone_hash = hasher.finish();
    match validate_contacts(vec![contact], 1, 0) {
        Err(e) => {
            for v in e.violations {
                let field = v.field.strip_prefix("contacts[0].").unwrap_or(&v.field);
                problems.push(row.problem(field, &v.description));
            }
        }
        Ok(valid) => {
            if let Some(first) = phones.insert(phone_hash, row.line) {
                phones.insert(phone_hash, first);
                problems.push(row.problem("phone", &format!("repeats the phone of line {first}")));
            }
            if let Some(Err(e)) = variables.map(|s| s.check(&valid, 0)) {
                for v in e.violations {
                    let field = v.field.strip_prefix("contacts[0].").unwrap_or(&v.field);
                    if !row.is_header_said(field) {
                        problems.push(row.problem(field, &v.description));
                    }
                }
            }
        }
    }
}

fn csv_error(e: &csv::Error) -> String {
    // csv's own Display carries its position; we print the line ourselves.
    let kind = match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_owned(),
        csv::ErrorKind::Io(io) => io.to_string(),
        _ => e.to_string(),
    };
    match e.position() {
        Some(p) => format!("line {}: {kind}", p.line()),
        None => kind,
    }
}

fn report(path: &Path, problems: Vec<String>, bad_rows: usize) -> String {
    let total = problems.len();
    let mut text = match bad_rows {
        0 => format!("{}: the header is not usable; nothing was sent", path.display()),
        n => format!("{}: {n} bad row(s); nothing was sent", path.display()),
    };
    for p in problems.iter().take(MAX_REPORTED) {
        text.push_str("\n  ");
        text.push_str(p);
    }
    if total > MAX_REPORTED {
        text.push_str(&format!("\n  … and {} more", total - MAX_REPORTED));
    }
    text
}

/// Streams the contacts of a scanned file in order, `batch` at a time, to `sink` (which
/// returns false when the receiver is gone).
pub fn read(path: &Path, batch: usize, mut sink: impl FnMut(Vec<pb::Contact>) -> bool) -> Result<(), String> {
    let (mut reader, delimiter) = csv_reader(open(path)?)?;
    let header = Header::parse(reader.headers().map_err(|e| csv_error(&e))?, delimiter).map_err(|p| p.join("; "))?;
    let mut record = csv::StringRecord::new();
    let mut contacts = Vec::with_capacity(batch);
    while reader.read_record(&mut record).map_err(|e| csv_error(&e))? {
        contacts.push(header.contact(&record));
        if contacts.len() == batch && !sink(std::mem::replace(&mut contacts, Vec::with_capacity(batch))) {
            return Ok(());
        }
    }
    if !contacts.is_empty() {
        sink(contacts);
    }
    Ok(())
}

/// The line each of `phones` (as sent: trimmed) starts on; phones not in the file are left out.
pub fn locate<'a>(path: &Path, phones: &[&'a str]) -> Result<HashMap<&'a str, u64>, String> {
    let (mut reader, delimiter) = csv_reader(open(path)?)?;
    let header = Header::parse(reader.headers().map_err(|e| csv_error(&e))?, delimiter).map_err(|p| p.join("; "))?;
    let wanted: HashMap<&str, &'a str> = phones.iter().map(|p| (*p, *p)).collect();
    let mut found = HashMap::new();
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(|e| csv_error(&e))? {
        let phone = record.get(header.phone).unwrap_or_default().trim();
        if let Some(p) = wanted.get(phone) {
            found.entry(*p).or_insert_with(|| record.position().map_or(0, |pos| pos.line()));
        }
    }
    Ok(found)
}

/// Writes the header and the rows starting on `lines` (sorted) of the CSV at `from` to `to`,
/// with the same separator.
pub fn write_rows(from: &Path, to: &Path, lines: &[u64]) -> Result<(), String> {
    let (mut reader, delimiter) = csv_reader(open(from)?)?;
    let cannot = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", to.display());
    let mut writer = csv::WriterBuilder::new().delimiter(delimiter).from_path(to).map_err(|e| cannot(&e))?;
    writer.write_record(reader.headers().map_err(|e| csv_error(&e))?).map_err(|e| cannot(&e))?;
    let mut record = csv::StringRecord::new();
    let mut next = lines.iter().peekable();
    while next.peek().is_some() && reader.read_record(&mut record).map_err(|e| csv_error(&e))? {
        let line = record.position().map_or(0, |p| p.line());
        if next.next_if(|l| **l == line).is_some() {
            writer.write_record(&record).map_err(|e| cannot(&e))?;
        }
    }
    writer.flush().map_err(|e| cannot(&e))
}

/// The default campaign id: `csv-` and 16 hex digits of SHA-256 over the file digest, the
/// script id and the chunk size, so the same command on the same file resumes, and a changed
/// file, script or chunk size (which would change what each chunk key means) starts afresh.
pub fn derived_campaign_id(digest: &str, script_id: &str, chunk_size: u32) -> String {
    let mut h = Sha256::new();
    h.update(digest.as_bytes());
    h.update([0]);
    h.update(script_id.as_bytes());
    h.update([0]);
    h.update(chunk_size.to_be_bytes());
    let hex: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("csv-{hex}")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file(text: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text).unwrap();
        f
    }

    fn contacts(path: &Path) -> Vec<pb::Contact> {
        let mut all = Vec::new();
        read(path, 2, |b| {
            all.extend(b);
            true
        })
        .unwrap();
        all
    }

    #[test]
    fn bom_quotes_commas_vietnamese_and_empty_cells() {
        let f = file(
            "\u{FEFF}phone,email,ext_contact_code,tên thí sinh,ghi_chu\n\
             0912345678,an@vi.du.vn,KH-1,\"Nguyễn Văn Ánh, lớp 12\",\"nói \"\"xin chào\"\"\"\n\
             0987654321,,,Trần Thị B,\n"
                .as_bytes(),
        );
        let scan = scan(f.path(), None, false).unwrap();
        assert_eq!(scan.rows, 2);
        let got = contacts(f.path());
        assert_eq!(got[0].phone, "0912345678");
        assert_eq!(got[0].email, "an@vi.du.vn");
        assert_eq!(got[0].external_contact_code, "KH-1");
        assert_eq!(got[0].variables["tên thí sinh"], "Nguyễn Văn Ánh, lớp 12");
        assert_eq!(got[0].variables["ghi_chu"], "nói \"xin chào\"");
        assert_eq!(got[1].email, "");
        assert!(!got[1].variables.contains_key("ghi_chu"));
    }

    #[test]
    fn bad_rows_are_reported_by_line_number() {
        let f = file(
            b"phone,diem\n0912345678,9\n12,8\n0912345679\n\"0912345680\",\"multi\nline\"\n0912345678,7\n0912345681,5,extra\n",
        );
        let err = scan(f.path(), None, false).unwrap_err();
        let lines: Vec<&str> = err.lines().skip(1).map(str::trim).collect();
        assert!(err.lines().next().unwrap().ends_with("4 bad row(s); nothing was sent"), "{err}");
        assert_eq!(lines[0], "line 3: phone \"12\": must be an optional leading '+' followed by 8 to 15 digits");
        assert_eq!(lines[1], "line 4: expected 2 columns, found 1");
        // The quoted newline makes the next row start on line 7.
        assert_eq!(lines[2], "line 7: phone \"0912345678\": repeats the phone of line 2");
        assert_eq!(lines[3], "line 8: expected 2 columns, found 3");
    }

    #[test]
    fn header_problems() {
        for (text, want) in [
            (&b"email,diem\n"[..], "no `phone` column"),
            (b"phone,diem,diem\n", "repeats column 2"),
            (b"phone,,x\n", "column 2 has no name"),
            (b"", "no header row"),
            (b"phone\n", "no contacts"),
        ] {
            let err = scan(file(text).path(), None, false).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn check_variables_against_the_script() {
        let script = ScriptVariables::new([("diem", true), ("ten", true), ("ghi_chu", false)]);
        let f = file("phone,diem,lop\n0912345678,9,12A\n0912345679,,12B\n".as_bytes());
        let err = scan(f.path(), Some(&script), true).unwrap_err();
        assert!(err.contains("line 1: column \"lop\" is not a variable of the script"), "{err}");
        assert!(err.contains("line 1: no column for the script's required variable \"ten\""), "{err}");
        assert!(err.contains("line 3: variables[diem]: is required"), "{err}");
        // The missing column is said once, for the header, not again on every row.
        assert_eq!(err.matches("\"ten\"").count(), 1, "{err}");
        assert!(!err.contains("variables[ten]"), "{err}");
        assert!(err.starts_with(&format!("{}: 1 bad row(s)", f.path().display())), "{err}");
        // Without --check-variables: no refusal, the missing column noted for a warning.
        let scan = scan(f.path(), Some(&script), false).unwrap();
        assert_eq!(scan.missing_required, ["ten"]);
    }

    #[test]
    fn a_bad_value_is_quoted_in_its_message() {
        let f = file(
            b"phone,email
0912 345 104,an@
",
        );
        let err = scan(f.path(), None, false).unwrap_err();
        assert!(err.contains("line 2: phone \"0912 345 104\": must be"), "{err}");
        assert!(err.contains("line 2: email \"an@\": "), "{err}");
    }

    #[test]
    fn semicolon_and_tab_separators_are_detected() {
        for (text, sep) in [
            ("phone;tên thí sinh;diem\n0912345678;Nguyễn Văn Ánh;9,5\n", b';'),
            ("\u{FEFF}\"phone\"\tdiem\n0912345678\t9\n", b'\t'),
            ("phone,diem\n0912345678,\"9;5\"\n", b','),
        ] {
            let f = file(text.as_bytes());
            let scan = scan(f.path(), None, false).unwrap();
            assert_eq!(scan.delimiter, sep, "{text}");
            let got = contacts(f.path());
            assert_eq!(got[0].phone, "0912345678", "{text}");
            assert_eq!(got[0].variables.len(), scan.header.variables.len(), "{text}");
        }
        let f = file("phone;tên;diem\n0912345678;An;9,5\n".as_bytes());
        assert_eq!(contacts(f.path())[0].variables["diem"], "9,5");
        // No `phone` column whatever the separator: the error names the one used.
        let err = scan(file(b"so_dien_thoai|diem\n1|2\n").path(), None, false).unwrap_err();
        assert!(err.contains("columns separated by ','"), "{err}");
    }

    #[test]
    fn refused_rows_are_located_and_written_back() {
        let f = file(b"phone;diem\n0912345001;1\n\"0912345002\";\"a\nb\"\n0912345003;3\n");
        let found = locate(f.path(), &["0912345003", "0912345002", "0999999999"]).unwrap();
        assert_eq!(found["0912345002"], 3);
        assert_eq!(found["0912345003"], 5);
        assert!(!found.contains_key("0999999999"));
        let out = tempfile::NamedTempFile::new().unwrap();
        write_rows(f.path(), out.path(), &[3, 5]).unwrap();
        let text = std::fs::read_to_string(out.path()).unwrap();
        assert_eq!(text, "phone;diem\n0912345002;\"a\nb\"\n0912345003;3\n");
    }

    #[test]
    fn derived_ids_depend_on_content_script_and_chunk_size() {
        let a = derived_campaign_id("d1", "s", 500);
        assert_eq!(a, derived_campaign_id("d1", "s", 500));
        assert!(a.starts_with("csv-") && a.len() == 20);
        for other in [derived_campaign_id("d2", "s", 500), derived_campaign_id("d1", "t", 500)] {
            assert_ne!(a, other);
        }
        assert_ne!(a, derived_campaign_id("d1", "s", 100));
    }
}
