//! Do-not-call lists: numbers in national form, packed as integers and kept sorted, so a million
//! numbers take 8 MB and a look-up is a binary search.
//!
//! A number's key is its national form (`domain::national`: `+84912345678`, `84912345678` and
//! `0912345678` are one number) with a `1` in front, read as an integer: the `1` keeps the
//! leading zero, and 16 digits fit in a `u64`.

use std::path::Path;

use crate::reload::Inputs;

/// Most digits of a number on a list (E.164's 15, plus the national form's `0`).
const MAX_DIGITS: usize = 16;

/// The key of a number written any way the files and callers write it (`+84…`, `84…`, `0…`,
/// separators allowed); `None` when it holds anything but digits and separators, or too many
/// or too few digits.
pub fn key(number: &str) -> Option<u64> {
    let mut digits = [0u8; MAX_DIGITS + 1];
    let mut n = 0;
    for b in number.bytes() {
        match b {
            b'0'..=b'9' => {
                if n == digits.len() {
                    return None;
                }
                digits[n] = b - b'0';
                n += 1;
            }
            b' ' | b'-' | b'.' | b'(' | b')' | b'+' | b'\t' => {}
            _ => return None,
        }
    }
    let digits = &digits[..n];
    // As `domain::national`: 84 followed by at least 8 digits not starting with 0 is +84.
    let (zero, rest) = match digits {
        [8, 4, rest @ ..] if rest.len() >= 8 && rest[0] != 0 => (true, rest),
        _ => (false, digits),
    };
    if rest.len() + usize::from(zero) > MAX_DIGITS || rest.len() + usize::from(zero) < 3 {
        return None;
    }
    let mut k: u64 = 1;
    if zero {
        k *= 10;
    }
    for d in rest {
        k = k * 10 + u64::from(*d);
    }
    Some(k)
}

/// The national form of a key.
#[cfg(test)]
pub fn national(key: u64) -> String {
    let s = key.to_string();
    s[1..].to_owned()
}

/// A sorted list of numbers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DncList(Vec<u64>);

impl DncList {
    /// Whether `key` is on the list.
    pub fn contains(&self, key: u64) -> bool {
        self.0.binary_search(&key).is_ok()
    }

    /// How many numbers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A list of `keys` (sorted and deduplicated here).
    pub fn from_keys(mut keys: Vec<u64>) -> Self {
        keys.sort_unstable();
        keys.dedup();
        keys.shrink_to_fit();
        DncList(keys)
    }

    /// Reads the files (one number per line, `#` starts a comment, blank lines skipped) into one
    /// list; the error names the file and the line, never the number.
    pub(crate) fn load(inputs: &mut Inputs, files: &[std::path::PathBuf]) -> Result<Self, String> {
        let mut keys = Vec::new();
        for path in files {
            let text = inputs.read(path).map_err(|e| format!("do-not-call file {}: {e}", path.display()))?;
            parse_into(&text, path, &mut keys)?;
        }
        Ok(Self::from_keys(keys))
    }
}

/// Parses one file's text into `keys`.
pub fn parse_into(text: &str, path: &Path, keys: &mut Vec<u64>) -> Result<(), String> {
    keys.reserve(text.len() / 11);
    for (i, line) in text.lines().enumerate() {
        let line = line.split_once('#').map_or(line, |(before, _)| before).trim();
        if line.is_empty() {
            continue;
        }
        let k = key(line).ok_or_else(|| {
            format!(
                "do-not-call file {} line {}: not a phone number (digits, +, spaces, dashes)",
                path.display(),
                i + 1
            )
        })?;
        keys.push(k);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_a_number_is_one_key() {
        let k = key("0912345678").unwrap();
        for form in ["+84912345678", "84912345678", "0912 345 678", "+84 (912) 345-678"] {
            assert_eq!(key(form), Some(k), "{form}");
        }
        assert_eq!(national(k), "0912345678");
        assert_eq!(national(k), crate::domain::national("+84912345678"));
        assert_ne!(key("912345678"), Some(k), "the leading zero counts");
        assert_eq!(key("0912a45678"), None);
        assert_eq!(key("12"), None);
        assert_eq!(key("12345678901234567"), None);
    }

    #[test]
    fn a_file_with_comments_loads_and_a_bad_line_is_named() {
        let mut keys = Vec::new();
        let path = Path::new("dnc.txt");
        parse_into("# registry\n0912345678\n\n+84987654321  # asked 2027-01-02\n", path, &mut keys).unwrap();
        let list = DncList::from_keys(keys);
        assert_eq!(list.len(), 2);
        assert!(list.contains(key("84912345678").unwrap()));
        assert!(list.contains(key("0987654321").unwrap()));
        assert!(!list.contains(key("0987654322").unwrap()));
        let err = parse_into("0912345678\ncall me maybe\n", path, &mut Vec::new()).unwrap_err();
        assert_eq!(err, "do-not-call file dnc.txt line 2: not a phone number (digits, +, spaces, dashes)");
    }
}
