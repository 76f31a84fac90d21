//! Vietnamese-aware search folding: `ListScriptsRequest.name_contains` matches script names
//! case-insensitively and regardless of diacritics (`"diem"` finds `"Thông báo điểm thi"`).

use unicode_normalization::char::{decompose_canonical, is_combining_mark};

/// Folds `s` for searching: lowercase, every combining mark stripped after canonical (NFD)
/// decomposition, and `đ`/`Đ` mapped to `d` (they have no decomposition).
///
/// It exists because operators type script names without tones on ordinary keyboards. ASCII
/// input takes a fast path; the only allocation is the output. Variation selectors and other
/// marks that ride on emoji are marks too and fold away; the emoji themselves pass through.
pub fn fold(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
            continue;
        }
        // Lowercase first: a few lowercase mappings (e.g. `İ`) produce a base letter plus a mark.
        for lower in c.to_lowercase() {
            if lower == 'đ' {
                out.push('d');
            } else {
                decompose_canonical(lower, |d| {
                    if !is_combining_mark(d) {
                        out.push(d);
                    }
                });
            }
        }
    }
    out
}

/// True when `haystack`, folded, contains `folded_needle` (which the caller folds once per
/// request with [`fold`]); an empty needle matches everything, as an empty filter means "all".
///
/// ASCII haystacks are compared in place without allocating.
pub fn matches(haystack: &str, folded_needle: &str) -> bool {
    if folded_needle.is_empty() {
        return true;
    }
    if haystack.is_ascii() {
        // The fold of an ASCII string is ASCII, so a non-ASCII needle can never match it.
        let needle = folded_needle.as_bytes();
        return folded_needle.is_ascii()
            && haystack.as_bytes().windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle));
    }
    fold(haystack).contains(folded_needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_table() {
        let rows: &[(&str, &str)] = &[
            ("", ""),
            ("abc XYZ 123", "abc xyz 123"),
            ("Thông báo ĐIỂM thi", "thong bao diem thi"),
            ("đ Đ đường ĐƯỜNG", "d d duong duong"),
            // a with every tone, plain, ă, â
            ("a à á ả ã ạ", "a a a a a a"),
            ("ă ằ ắ ẳ ẵ ặ", "a a a a a a"),
            ("â ầ ấ ẩ ẫ ậ", "a a a a a a"),
            ("À Á Ả Ã Ạ Ă Ằ Ắ Ẳ Ẵ Ặ Â Ầ Ấ Ẩ Ẫ Ậ", "a a a a a a a a a a a a a a a a a"),
            ("e è é ẻ ẽ ẹ", "e e e e e e"),
            ("ê ề ế ể ễ ệ", "e e e e e e"),
            ("È É Ẻ Ẽ Ẹ Ê Ề Ế Ể Ễ Ệ", "e e e e e e e e e e e"),
            ("i ì í ỉ ĩ ị", "i i i i i i"),
            ("Ì Í Ỉ Ĩ Ị", "i i i i i"),
            ("o ò ó ỏ õ ọ", "o o o o o o"),
            ("ô ồ ố ổ ỗ ộ", "o o o o o o"),
            ("ơ ờ ớ ở ỡ ợ", "o o o o o o"),
            ("Ò Ó Ỏ Õ Ọ Ô Ồ Ố Ổ Ỗ Ộ Ơ Ờ Ớ Ở Ỡ Ợ", "o o o o o o o o o o o o o o o o o"),
            ("u ù ú ủ ũ ụ", "u u u u u u"),
            ("ư ừ ứ ử ữ ự", "u u u u u u"),
            ("Ù Ú Ủ Ũ Ụ Ư Ừ Ứ Ử Ữ Ự", "u u u u u u u u u u u"),
            ("y ỳ ý ỷ ỹ ỵ", "y y y y y y"),
            ("Ỳ Ý Ỷ Ỹ Ỵ", "y y y y y"),
            // Decomposed (NFD) input folds like precomposed input.
            ("Thoe\u{302}\u{301}ng", "thoeng"),
            ("Tie\u{302}\u{309}ng Vie\u{323}\u{302}t", "tieng viet"),
            ("TIẾNG VIỆT", "tieng viet"),
            ("Nguyễn Văn Đức", "nguyen van duc"),
            // Emoji and other scripts pass through.
            ("Chúc mừng 🎉😀", "chuc mung 🎉😀"),
            ("👍🏽 ok", "👍🏽 ok"),
            ("日本語", "日本語"),
            // Other Latin diacritics, and a lowercase mapping that yields a mark.
            ("Crème Brûlée", "creme brulee"),
            ("İstanbul", "istanbul"),
            ("ÅNGSTRÖM", "angstrom"),
        ];
        for (input, want) in rows {
            assert_eq!(fold(input), *want, "fold({input:?})");
            assert_eq!(fold(want), *want, "fold is idempotent on {want:?}");
        }
    }

    #[test]
    fn ascii_fast_path_equals_general_path() {
        let s = "Hello, World! 0123 ~";
        assert_eq!(fold(s), s.to_lowercase());
    }

    #[test]
    fn matches_table() {
        let rows: &[(&str, &str, bool)] = &[
            ("Thông báo điểm thi", "", true),
            ("", "", true),
            ("", "a", false),
            ("Thông báo điểm thi", "diem", true),
            ("Thông báo điểm thi", "thong bao", true),
            ("Thông báo điểm thi", "điểm", false), // needle must be folded by the caller
            ("Thông báo điểm thi", &fold("ĐIỂM"), true),
            ("Thông báo điểm thi", "diem thi x", false),
            ("Nhac no HOC PHI", "hoc phi", true),
            ("Nhac no HOC PHI", "hoc phí", false),
            ("ab", "abc", false),
            ("Khuyến mãi 🎉", "🎉", true),
            ("Khuyen mai", "🎉", false),
        ];
        for (hay, needle, want) in rows {
            assert_eq!(matches(hay, needle), *want, "matches({hay:?}, {needle:?})");
        }
    }
}
