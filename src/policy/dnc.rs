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
    let allowed = |b: u8| b.is_ascii_digit() || matches!(b, b' ' | b'-' | b'.' | b'(' | b')' | b'+' | b'\t');
    if !number.bytes().all(allowed) {
        return None;
    }
    // The national form packed as the attribution index packs it; its digits are the key's less one.
    let key = crate::domain::national_key(number)?;
    let digits = key.ilog10() as usize;
    (3..=MAX_DIGITS).contains(&digits).then_some(key)
}

/// The national form of a key.
#[cfg(test)]
pub fn national(key: u64) -> String {
    let s = key.to_string();
    s[1..].to_owned()
}

/// A sorted list of numbers, with a bucket index over the value range: a look-up reads the index
/// and then a bucket of a few keys (two cache lines), instead of the ~20 scattered reads of a
/// binary search over the whole 8 MB list.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DncList {
    keys: Vec<u64>,
    /// `starts[b]..starts[b + 1]` are the keys of bucket `b` (buckets split `keys[0]..=keys[last]`
    /// into equal value ranges).
    starts: Vec<u32>,
}

/// Keys per bucket on average: a bucket is a cache line or two.
const PER_BUCKET: usize = 8;

impl DncList {
    fn bucket(&self, key: u64) -> usize {
        let (min, max) = (self.keys[0], self.keys[self.keys.len() - 1]);
        let buckets = (self.starts.len() - 1) as u128;
        (u128::from(key - min) * buckets / (u128::from(max - min) + 1)) as usize
    }

    /// Whether `key` is on the list.
    pub fn contains(&self, key: u64) -> bool {
        match (self.keys.first(), self.keys.last()) {
            (Some(min), Some(max)) if (*min..=*max).contains(&key) => {
                let b = self.bucket(key);
                let (from, to) = (self.starts[b] as usize, self.starts[b + 1] as usize);
                self.keys[from..to].binary_search(&key).is_ok()
            }
            _ => false,
        }
    }

    /// How many numbers.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A list of `keys` (sorted and deduplicated here).
    pub fn from_keys(mut keys: Vec<u64>) -> Self {
        keys.sort_unstable();
        keys.dedup();
        keys.shrink_to_fit();
        let mut list = DncList { keys, starts: Vec::new() };
        if list.keys.is_empty() {
            return list;
        }
        let buckets = list.keys.len().div_ceil(PER_BUCKET);
        list.starts = vec![0; buckets + 1];
        // Each bucket's end: the number of keys whose bucket is at most it.
        let mut b = 0;
        for (i, k) in list.keys.iter().enumerate() {
            let kb = list.bucket(*k);
            while b < kb {
                b += 1;
                list.starts[b] = i as u32;
            }
        }
        for s in &mut list.starts[b + 1..] {
            *s = list.keys.len() as u32;
        }
        list
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
        // The bounds are on the national form: 3 to 16 digits, `84` counted as the trunk `0`.
        assert_eq!(key("1234567890123456").map(national).as_deref(), Some("1234567890123456"));
        assert_eq!(key(&format!("+84 {}", "9".repeat(15))).map(national), Some(format!("0{}", "9".repeat(15))));
        assert_eq!(key(&format!("84{}", "9".repeat(16))), None);
        assert_eq!(key("1-2-3").map(national).as_deref(), Some("123"));
        assert_eq!((key("1 2"), key("")), (None, None));
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
        assert!(!list.contains(key("0000000001").unwrap()) && !list.contains(key("0999999999").unwrap()));
        let err = parse_into("0912345678\ncall me maybe\n", path, &mut Vec::new()).unwrap_err();
        assert_eq!(err, "do-not-call file dnc.txt line 2: not a phone number (digits, +, spaces, dashes)");
    }
}

#[cfg(test)]
mod index_tests {
    use super::*;

    #[test]
    fn the_bucket_index_finds_every_key_and_no_other() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        let keys: Vec<u64> = (0..20_000).map(|_| 10_900_000_000 + next() % 100_000_000).collect();
        let list = DncList::from_keys(keys.clone());
        for k in &keys {
            assert!(list.contains(*k));
        }
        let set: std::collections::HashSet<u64> = keys.into_iter().collect();
        for _ in 0..20_000 {
            let k = 10_900_000_000 + next() % 100_000_000;
            assert_eq!(list.contains(k), set.contains(&k), "{k}");
        }
        let one = DncList::from_keys(vec![5]);
        assert!(one.contains(5) && !one.contains(4) && !one.contains(6));
        assert!(!DncList::default().contains(5));
    }
}
