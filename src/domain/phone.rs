//! The phone number rule shared by validation, and masking so logs never carry a full number.

/// Fewest digits of a phone number (national numbers without trunk prefix are shorter).
const MIN_DIGITS: usize = 8;
/// Most digits of a phone number (E.164 maximum).
const MAX_DIGITS: usize = 15;
/// Trailing digits [`mask_phone`] leaves readable, enough to tell numbers apart in a log.
const KEPT_DIGITS: usize = 3;

/// True when `s` is an optional leading `+` followed by 8 to 15 ASCII digits, nothing else
/// (no spaces, dashes or brackets): the only shape the upstream accepts reliably.
pub fn is_valid_phone(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    (MIN_DIGITS..=MAX_DIGITS).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The national form of a Vietnamese number, for comparing numbers however they were written:
/// `+84912345678`, `84912345678` and `0912345678` are all `0912345678`. Separators (spaces,
/// dashes, dots, brackets) are dropped; a number in any other form is returned as its digits.
pub fn national(s: &str) -> String {
    // Sized once: collecting from a filter would start empty and grow (a reallocation or two per
    // number, and a session records every contact's). Digits are ASCII: taken as bytes.
    let mut digits = String::with_capacity(s.len());
    for b in s.bytes().filter(u8::is_ascii_digit) {
        digits.push(char::from(b));
    }
    if digits.len() >= 10 && digits.starts_with("84") && !digits[2..].starts_with('0') {
        // `84` + at least 8 digits: the trunk `0` in place of the country code, in place.
        digits.replace_range(..2, "0");
    }
    digits
}

/// Most digits of a national form [`national_key`] packs (with its leading `1`, 19 digits fit a
/// `u64`).
const KEY_DIGITS: usize = 18;

/// `national(s)` packed as an integer, without building it: a `1` followed by its digits (the
/// `1` keeps leading zeros apart), so two numbers have the same key exactly when they have the
/// same national form. `None` when the national form has more than 18 digits (no valid phone
/// has: [`is_valid_phone`] allows 15). The attribution index keys contacts by it.
pub fn national_key(s: &str) -> Option<u64> {
    // One digit more than a key holds: `84` + 17 digits is still an 18-digit national form.
    let mut digits = [0u8; KEY_DIGITS + 1];
    let mut n = 0;
    for b in s.bytes().filter(u8::is_ascii_digit) {
        if n == digits.len() {
            return None;
        }
        digits[n] = b - b'0';
        n += 1;
    }
    let digits = &digits[..n];
    let (zero, rest) = match digits {
        [8, 4, rest @ ..] if rest.len() >= 8 && rest[0] != 0 => (true, rest),
        _ => (false, digits),
    };
    if rest.len() + usize::from(zero) > KEY_DIGITS {
        return None;
    }
    let mut key: u64 = if zero { 10 } else { 1 };
    for d in rest {
        key = key * 10 + u64::from(*d);
    }
    Some(key)
}

/// Masks a phone number for logs: every digit except the last 3 becomes `*`, a `+` is kept,
/// any other character becomes `*` too; strings shorter than 4 chars are fully masked.
///
/// Phone numbers are personal data; this lets a log line identify a contact without
/// exposing it. Works on any UTF-8 (invalid input is logged too) and never panics.
pub fn mask_phone(s: &str) -> String {
    let chars = s.chars().count();
    if chars < 4 {
        return "*".repeat(chars);
    }
    let mut digits_left = s.chars().filter(char::is_ascii_digit).count();
    s.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                digits_left -= 1;
                if digits_left < KEPT_DIGITS { c } else { '*' }
            } else if c == '+' {
                '+'
            } else {
                '*'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_phones() {
        let rows: &[(&str, bool)] = &[
            ("0912345678", true),
            ("+84912345678", true),
            ("12345678", true),
            ("+12345678", true),
            ("123456789012345", true),
            ("+123456789012345", true),
            ("1234567", false),
            ("+1234567", false),
            ("1234567890123456", false),
            ("", false),
            ("+", false),
            ("++84912345678", false),
            ("84+912345678", false),
            ("0912 345 678", false),
            ("0912-345-678", false),
            (" 0912345678", false),
            ("0912345678\n", false),
            ("(091)2345678", false),
            ("０９１２３４５６７８", false), // full-width digits
            ("٠١٢٣٤٥٦٧٨٩", false),           // Arabic-Indic digits
            ("0912345678a", false),
        ];
        for (s, want) in rows {
            assert_eq!(is_valid_phone(s), *want, "is_valid_phone({s:?})");
        }
    }

    #[test]
    fn masks() {
        let rows: &[(&str, &str)] = &[
            ("", ""),
            ("1", "*"),
            ("+84", "***"),
            ("ab", "**"),
            ("1234", "*234"),
            ("0912345678", "*******678"),
            ("+84912345678", "+********678"),
            ("0912-345-678", "*********678"),
            ("số 0912", "****912"),
            ("12", "**"),
            ("abcd", "****"),
            ("ab1d", "**1*"),
            ("😀😀😀😀5", "****5"),
        ];
        for (s, want) in rows {
            assert_eq!(mask_phone(s), *want, "mask_phone({s:?})");
        }
    }

    #[test]
    fn mask_never_panics_and_hides_all_but_three_digits() {
        let inputs = ["\u{0}\u{0}\u{0}\u{0}", "++++", "ễễễễễ", "\u{10FFFF}1234567890", &"9".repeat(100_000)];
        for s in inputs {
            let masked = mask_phone(s);
            assert_eq!(masked.chars().count(), s.chars().count());
            assert!(masked.chars().filter(char::is_ascii_digit).count() <= KEPT_DIGITS);
        }
    }
}

#[cfg(test)]
mod national_tests {
    use super::{national, national_key};

    #[test]
    fn numbers_compare_in_their_national_form() {
        for (given, expected) in [
            ("+84912345678", "0912345678"),
            ("84912345678", "0912345678"),
            ("0912345678", "0912345678"),
            ("091 234-5678", "0912345678"),
            ("(+84) 28.3822.1234", "02838221234"),
            ("1900123456", "1900123456"),
            ("840912345678", "840912345678"),
            ("8412", "8412"),
            ("", ""),
        ] {
            assert_eq!(national(given), expected, "{given}");
        }
    }

    /// The key of a national form, read back: its digits after the leading `1`.
    fn unpack(key: u64) -> String {
        key.to_string()[1..].to_owned()
    }

    #[test]
    fn a_numbers_key_is_its_national_form_packed() {
        for given in [
            "+84912345678",
            "84912345678",
            "0912345678",
            "091 234-5678",
            "(+84) 28.3822.1234",
            "8412",
            "",
            "007",
            "abc",
        ] {
            assert_eq!(national_key(given).map(unpack), Some(national(given)), "{given}");
        }
        // 18 digits fit; 19 do not, unless `84` shortens them to 18.
        let eighteen = "1".repeat(18);
        assert_eq!(national_key(&eighteen).map(unpack), Some(eighteen.clone()));
        assert_eq!(national_key(&format!("{eighteen}1")), None);
        assert_eq!(national_key(&format!("849{}", "1".repeat(16))).map(unpack), Some(format!("09{}", "1".repeat(16))));
        assert_eq!(national_key(&"9".repeat(100)), None);
    }

    proptest::proptest! {
        #[test]
        fn keys_are_equal_exactly_when_national_forms_are(a in "[0-9+ 8-]{0,22}", b in "[0-9+ 4-]{0,22}") {
            if let (Some(ka), Some(kb)) = (national_key(&a), national_key(&b)) {
                proptest::prop_assert_eq!(ka == kb, national(&a) == national(&b));
                proptest::prop_assert_eq!(unpack(ka), national(&a));
            } else {
                proptest::prop_assert!(national(&a).len() > 18 || national(&b).len() > 18);
            }
        }
    }
}
