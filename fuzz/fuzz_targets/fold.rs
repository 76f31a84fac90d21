//! Arbitrary text (and text pairs) into the Vietnamese search folding. Never a panic, and:
//!
//! - idempotent: `fold(fold(x)) == fold(x)`;
//! - the output is lowercase (every char is its own lowercase mapping; `char::is_uppercase` alone
//!   would flag letters such as `𝐀` that have no lowercase form at all), has no combining mark
//!   and no Vietnamese letter with a diacritic (nor `đ`/`Đ`);
//! - ASCII stays ASCII, lowercased, same length;
//! - `matches(hay, fold(needle))` is exactly `fold(hay).contains(fold(needle))` (its ASCII fast
//!   path included), and a folded string matches its own fold and every piece of it.
#![no_main]

use callbot_facade::testing::{fold, matches};
use libfuzzer_sys::fuzz_target;
use unicode_normalization::char::is_combining_mark;

/// Every Vietnamese letter with a diacritic, both cases.
const VIETNAMESE: &str = "àáảãạăằắẳẵặâầấẩẫậèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵđ\
ÀÁẢÃẠĂẰẮẲẴẶÂẦẤẨẪẬÈÉẺẼẸÊỀẾỂỄỆÌÍỈĨỊÒÓỎÕỌÔỒỐỔỖỘƠỜỚỞỠỢÙÚỦŨỤƯỪỨỬỮỰỲÝỶỸỴĐ";

fn check_fold(s: &str) -> String {
    let f = fold(s);
    assert_eq!(fold(&f), f, "fold is not idempotent on {s:?}");
    for c in f.chars() {
        assert!(c.to_lowercase().eq([c]), "{c:?} in fold({s:?}) is not lowercase");
        assert!(!is_combining_mark(c), "combining mark {c:?} in fold({s:?})");
        assert!(!VIETNAMESE.contains(c), "diacritic letter {c:?} in fold({s:?})");
    }
    if s.is_ascii() {
        assert_eq!(f, s.to_ascii_lowercase());
    }
    f
}

fuzz_target!(|input: (&str, &str)| {
    let (hay, needle) = input;
    let folded_hay = check_fold(hay);
    let folded_needle = check_fold(needle);
    assert_eq!(
        matches(hay, &folded_needle),
        folded_hay.contains(folded_needle.as_str()),
        "matches({hay:?}, {folded_needle:?})"
    );
    assert!(matches(hay, &folded_hay));
    if let Some((i, _)) = folded_hay.char_indices().nth(folded_hay.chars().count() / 2) {
        assert!(matches(hay, &folded_hay[i..]));
        assert!(matches(hay, &folded_hay[..i]));
    }
});
