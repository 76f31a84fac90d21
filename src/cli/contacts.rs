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
    fn parse(names: &csv::StringRecord) -> Result<Self, Vec<String>> {
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
            None => problems.push("line 1: the header has no `phone` column".into()),
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

/// A CSV reader over `source`, a UTF-8 BOM skipped.
fn csv_reader<R: Read>(source: R) -> Result<csv::Reader<BufReader<R>>, String> {
    let mut buffered = BufReader::with_capacity(64 * 1024, source);
    let bom = buffered.fill_buf().map_err(|e| e.to_string())?.starts_with(b"\xEF\xBB\xBF");
    if bom {
        buffered.consume(3);
    }
    Ok(csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(buffered))
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
}

/// Checks the whole file. Rows are numbered by the line they start on (line 1 = the header).
/// Reports: wrong column count, every contact rule of the facade (phone, email, code, variable
/// keys and values), a phone repeated anywhere in the file (the facade only sees repeats within
/// one chunk), and, with `variables`, header columns that are not variables of the script,
/// missing columns for required variables, and empty required cells.
pub fn scan(path: &Path, variables: Option<&ScriptVariables>) -> Result<Scan, String> {
    let mut hashing = Hashing { inner: open(path)?, hasher: Sha256::new() };
    let mut reader = csv_reader(&mut hashing)?;
    let mut problems = Vec::new();
    let header = match reader.headers() {
        Ok(names) if names.iter().all(str::is_empty) => return Err(format!("{}: no header row", path.display())),
        Ok(names) => Header::parse(names).map_err(|p| report(path, p, 0))?,
        Err(e) => return Err(format!("{}: {}", path.display(), csv_error(&e))),
    };
    if let Some(script) = variables {
        for code in header.variable_codes().filter(|c| !script.is_known(c)) {
            problems.push(format!("line 1: column {code:?} is not a variable of the script"));
        }
        for code in script.required().filter(|c| !header.variable_codes().any(|h| h == *c)) {
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
            check_row(&header, &record, line, variables, &mut phones, &mut problems);
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
    Ok(Scan { header, rows, digest })
}

fn check_row(
    header: &Header,
    record: &csv::StringRecord,
    line: u64,
    variables: Option<&ScriptVariables>,
    phones: &mut HashMap<u64, u64>,
    problems: &mut Vec<String>,
) {
    let contact = header.contact(record);
    let mut hasher = DefaultHasher::new();
    contact.phone.hash(&mut hasher);
    let phone_hash = hasher.finish();
    match validate_contacts(vec![contact], 1, 0) {
        Err(e) => {
            for v in e.violations {
                let field = v.field.strip_prefix("contacts[0].").unwrap_or(&v.field);
                problems.push(format!("line {line}: {field}: {}", v.description));
            }
        }
        Ok(valid) => {
            if let Some(first) = phones.insert(phone_hash, line) {
                phones.insert(phone_hash, first);
                problems.push(format!("line {line}: phone: repeats the phone of line {first}"));
            }
            if let Some(Err(e)) = variables.map(|s| s.check(&valid, 0)) {
                for v in e.violations {
                    let field = v.field.strip_prefix("contacts[0].").unwrap_or(&v.field);
                    problems.push(format!("line {line}: {field}: {}", v.description));
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
    let mut reader = csv_reader(open(path)?)?;
    let header = Header::parse(reader.headers().map_err(|e| csv_error(&e))?).map_err(|p| p.join("; "))?;
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
        let scan = scan(f.path(), None).unwrap();
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
        let err = scan(f.path(), None).unwrap_err();
        let lines: Vec<&str> = err.lines().skip(1).map(str::trim).collect();
        assert!(err.lines().next().unwrap().ends_with("4 bad row(s); nothing was sent"), "{err}");
        assert_eq!(lines[0], "line 3: phone: must be an optional leading '+' followed by 8 to 15 digits");
        assert_eq!(lines[1], "line 4: expected 2 columns, found 1");
        // The quoted newline makes the next row start on line 7.
        assert_eq!(lines[2], "line 7: phone: repeats the phone of line 2");
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
            let err = scan(file(text).path(), None).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn check_variables_against_the_script() {
        let script = ScriptVariables::new([("diem", true), ("ten", true), ("ghi_chu", false)]);
        let f = file("phone,diem,lop\n0912345678,9,12A\n0912345679,,12B\n".as_bytes());
        let err = scan(f.path(), Some(&script)).unwrap_err();
        assert!(err.contains("line 1: column \"lop\" is not a variable of the script"), "{err}");
        assert!(err.contains("line 1: no column for the script's required variable \"ten\""), "{err}");
        assert!(err.contains("line 3: variables[diem]: is required"), "{err}");
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
