//! The contact rules of `CreateSession` (and of each campaign chunk, and of the command line's CSV
//! rows): phone, email, contact code, variables, and a phone repeated within one request; every
//! violation collected with its field path (`contacts[3].variables[ho_ten]`).

use std::collections::BTreeMap;

use super::phone::is_valid_phone;
use super::session::{MAX_ID_CHARS, non_empty};
use super::{ValidationError, Violations, at_most_chars, is_space_or_control};
use crate::pb;

/// Longest accepted email (RFC 5321 path limit).
const MAX_EMAIL_CHARS: usize = 254;
/// Longest accepted variable key.
const MAX_VARIABLE_KEY_CHARS: usize = 64;
/// Longest accepted variable value.
const MAX_VARIABLE_VALUE_CHARS: usize = 2_000;
/// Most variables one contact may carry (scripts have a handful; this bounds the work).
const MAX_VARIABLES: usize = 100;

/// A contact that passed every rule: the upstream's `contact_info[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidContact {
    /// Phone number exactly as given (`+`? and 8 to 15 digits).
    pub phone: String,
    /// Email, `None` when the caller left it empty.
    pub email: Option<String>,
    /// Caller-side contact code (`ext_contact_code`), `None` when empty.
    pub external_contact_code: Option<String>,
    /// Script variable values by `field_code` (`mapping_variables`), byte-exact; a `BTreeMap`
    /// so the upstream body is deterministic whatever order the client sent.
    pub variables: BTreeMap<String, String>,
}

/// Validates `contacts` on their own, with the `CreateSession` contact rules, numbering them
/// from `first_index` in the field paths (`contacts[first_index + i].phone`): a campaign chunk
/// reports global indices, the command line one CSV row at a time. A repeated phone is found
/// within `contacts` only.
pub fn validate_contacts(
    contacts: Vec<pb::Contact>,
    max_contacts: usize,
    first_index: usize,
) -> Result<Vec<ValidContact>, ValidationError> {
    let mut v = Violations::default();
    let contacts = parse_contacts(contacts, max_contacts, first_index, &mut v);
    v.into_result(contacts)
}

/// Validates the contact list; moves each contact's strings into its [`ValidContact`]. Paths
/// count from `offset`.
pub(super) fn parse_contacts(
    contacts: Vec<pb::Contact>,
    max_contacts: usize,
    offset: usize,
    v: &mut Violations,
) -> Vec<ValidContact> {
    if contacts.is_empty() {
        v.push("contacts", "at least one contact is required");
        return Vec::new();
    }
    if contacts.len() > max_contacts {
        v.push("contacts", format!("must hold at most {max_contacts} contacts"));
        return Vec::new();
    }
    let duplicate_of = earlier_duplicates(&contacts);
    contacts
        .into_iter()
        .zip(duplicate_of)
        .enumerate()
        .map(|(i, (c, first))| parse_contact(offset.saturating_add(i), c, first.map(|f| offset.saturating_add(f)), v))
        .collect()
}

/// For each contact, the index of an earlier contact with the same valid phone, if any.
/// Compared exactly as sent: `+8491…` and `091…` are not recognized as the same person.
/// Invalid phones are skipped: the phone rule already reports them.
///
/// By sorting (phone, index) pairs rather than hashing: no per-call SipHash of every phone and,
/// unlike a cheaper unkeyed hash, no input that degrades it: O(n log n) whatever the phones. A
/// valid phone is sorted as one integer ([`exact_key`]), not as text.
fn earlier_duplicates(contacts: &[pb::Contact]) -> Vec<Option<usize>> {
    let mut by_phone: Vec<(u64, usize)> =
        contacts.iter().enumerate().filter_map(|(j, c)| exact_key(&c.phone).map(|k| (k, j))).collect();
    by_phone.sort_unstable();
    let mut duplicate_of = vec![None; contacts.len()];
    for same in by_phone.chunk_by(|a, b| a.0 == b.0) {
        // Sorted by index within the same phone: the first is the earliest.
        let first = same[0].1;
        for &(_, j) in &same[1..] {
            duplicate_of[j] = Some(first);
        }
    }
    duplicate_of
}

/// A valid phone as one integer that tells apart exactly the strings that differ: its digits'
/// value (at most 15 digits: under 2^50), their count (leading zeros) and the `+`.
fn exact_key(phone: &str) -> Option<u64> {
    if !is_valid_phone(phone) {
        return None;
    }
    let (plus, digits) = match phone.strip_prefix('+') {
        Some(digits) => (1, digits),
        None => (0, phone),
    };
    let value = digits.bytes().fold(0u64, |v, b| v * 10 + u64::from(b - b'0'));
    Some(value | (digits.len() as u64) << 50 | plus << 54)
}

/// Validates contact `i`; `duplicate_of` is the earlier contact with the same phone, if any.
fn parse_contact(i: usize, c: pb::Contact, duplicate_of: Option<usize>, v: &mut Violations) -> ValidContact {
    let pb::Contact { phone, email, external_contact_code, variables } = c;
    if phone.is_empty() {
        v.push(format!("contacts[{i}].phone"), "is required");
    } else if !is_valid_phone(&phone) {
        v.push(format!("contacts[{i}].phone"), "must be an optional leading '+' followed by 8 to 15 digits");
    } else if let Some(first) = duplicate_of {
        v.push(format!("contacts[{i}].phone"), format!("duplicates contacts[{first}].phone"));
    }
    v.take(|| format!("contacts[{i}].email"), check_email(&email));
    if !at_most_chars(&external_contact_code, MAX_ID_CHARS) {
        v.push(format!("contacts[{i}].external_contact_code"), "must be at most 128 characters");
    }
    // Sorted first, so violations come out in a deterministic order too.
    if variables.len() > MAX_VARIABLES {
        v.push(format!("contacts[{i}].variables"), "must hold at most 100 variables");
    } else {
        for (key, value) in &variables {
            if let Err(description) = check_variable(key, value) {
                v.push(format!("contacts[{i}].variables[{}]", path_key(key)), description);
            }
        }
    }
    ValidContact { phone, email: non_empty(email), external_contact_code: non_empty(external_contact_code), variables }
}

/// Empty, or plausible: ≤ 254 chars, exactly one `@`, non-empty local part, a domain with a dot
/// that neither starts nor ends it, no whitespace or control characters. Deliverability is the
/// upstream's business; this only catches obvious mistakes such as a phone in the email field.
fn check_email(email: &str) -> Result<(), &'static str> {
    const RULE: &str = "must be a plausible email address (local@domain.tld, no spaces, at most 254 characters)";
    if email.is_empty() {
        return Ok(());
    }
    if !at_most_chars(email, MAX_EMAIL_CHARS) || has_space_or_control(email) {
        return Err(RULE);
    }
    // '@' and '.' are ASCII, never part of a multi-byte character: searched as bytes.
    let bytes = email.as_bytes();
    let Some(at) = bytes.iter().position(|&b| b == b'@') else {
        return Err(RULE);
    };
    let (local, domain) = (&bytes[..at], &bytes[at + 1..]);
    if !local.is_empty()
        && !domain.contains(&b'@')
        && domain.contains(&b'.')
        && domain.first() != Some(&b'.')
        && domain.last() != Some(&b'.')
    {
        Ok(())
    } else {
        Err(RULE)
    }
}

/// Whether `s` holds a whitespace or control character; ASCII text (nearly all emails) is
/// checked byte by byte: its whitespace and control characters are the bytes up to the space,
/// and DEL. One pass: the characters are decoded only from the first non-ASCII byte on (on short
/// strings `str::is_ascii` first and a second pass cost more than the check itself).
fn has_space_or_control(s: &str) -> bool {
    match s.bytes().position(|b| b <= b' ' || b >= 0x7f) {
        None => false,
        Some(at) => s[at..].chars().any(is_space_or_control),
    }
}

/// Whether `s` holds a control character, in one pass as [`has_space_or_control`].
fn has_control(s: &str) -> bool {
    match s.bytes().position(|b| !(b' '..0x7f).contains(&b)) {
        None => false,
        Some(at) => s[at..].chars().any(char::is_control),
    }
}

fn check_variable(key: &str, value: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        Err("variable key must not be empty")
    } else if !at_most_chars(key, MAX_VARIABLE_KEY_CHARS) {
        Err("variable key must be at most 64 characters")
    } else if has_control(key) {
        // Spaces are allowed: real upstream field codes have them (`tên thí sinh`).
        Err("variable key must not contain control characters")
    } else if !at_most_chars(value, MAX_VARIABLE_VALUE_CHARS) {
        Err("variable value must be at most 2000 characters")
    } else {
        Ok(())
    }
}

/// A variable key as shown inside a field path: valid keys verbatim; invalid ones escaped
/// (no raw newlines in logs) and cut to 64 chars, so a huge key cannot blow up the error.
///
/// The fuzz targets (through `crate::testing`) check that every `variables[KEY]` path names a
/// real key.
pub fn path_key(key: &str) -> String {
    if at_most_chars(key, MAX_VARIABLE_KEY_CHARS) && !key.chars().any(char::is_control) {
        return key.to_owned();
    }
    let mut shown: String = key.chars().take(MAX_VARIABLE_KEY_CHARS).flat_map(char::escape_debug).collect();
    if !at_most_chars(key, MAX_VARIABLE_KEY_CHARS) {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ascii_fast_paths_agree_with_the_char_rules() {
        let samples: Vec<String> = (0u32..0x3000)
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .chain(["", "plain", "hoc.sinh1@truong.edu.vn", "tên thí sinh", "a\u{85}b"].map(String::from))
            .collect();
        for s in &samples {
            assert_eq!(has_space_or_control(s), s.chars().any(is_space_or_control), "{s:?}");
            assert_eq!(has_control(s), s.chars().any(char::is_control), "{s:?}");
        }
    }

    #[test]
    fn emails_are_checked_as_before() {
        for ok in ["a@b.vn", "hoc.sinh1@truong.edu.vn", "ễ@đ.vn", "a.b@c.d.e"] {
            assert_eq!(check_email(ok), Ok(()), "{ok}");
        }
        for bad in ["a@b", "@b.vn", "a@.vn", "a@b.vn.", "a@b@c.vn", "ab.vn", "a b@c.vn", "a@b.v\u{85}n", "a@b.vn\n"] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_repeat_of_a_phone_names_its_first_occurrence() {
        let contact = |phone: &str| pb::Contact { phone: phone.into(), ..Default::default() };
        let contacts: Vec<pb::Contact> =
            ["0912000002", "0912000001", "0912000002", "bad", "0912000001", "0912000002", "bad", "+84912000002"]
                .into_iter()
                .map(contact)
                .collect();
        // Invalid phones are never duplicates; `+84…` is not `0…`.
        assert_eq!(super::earlier_duplicates(&contacts), vec![None, None, Some(0), None, Some(1), Some(0), None, None]);
        // Leading zeros, the `+` and the length tell numbers apart; the longest fit.
        let contacts: Vec<pb::Contact> =
            ["12345678", "012345678", "+12345678", "0012345678", "+012345678", "999999999999999", "999999999999999"]
                .into_iter()
                .map(contact)
                .collect();
        assert_eq!(super::earlier_duplicates(&contacts), vec![None, None, None, None, None, None, Some(5)]);
    }

    #[test]
    fn space_and_control_checks_find_them_anywhere_ascii_or_not() {
        for (s, space_or_control, control) in [
            ("", false, false),
            ("abc", false, false),
            ("a b", true, false),
            ("a\u{7f}", true, true),
            ("ễ đ", true, false),
            ("ễđ", false, false),
            ("ễ\u{85}", true, true),
            ("đ\u{a0}x", true, false),
            ("x\ty", true, true),
        ] {
            assert_eq!(has_space_or_control(s), space_or_control, "{s:?}");
            assert_eq!(has_control(s), control, "{s:?}");
        }
    }
}
