//! `check_variables`: contacts against the variables of their script. Every dynamic variable
//! (`is_dynamic_attribute`) needs a non-blank value per contact, and no contact may carry a key
//! that is not a variable of the script. The script itself comes from the caller (the service
//! reads it from the script cache), so this stays pure.

use std::collections::BTreeSet;

use super::session::path_key;
use super::{FieldViolation, ValidContact, ValidationError};

/// The variables of one script, as `check_variables` needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptVariables {
    /// Every `field_code` of the script (dynamic or not): the keys a contact may carry.
    known: BTreeSet<String>,
    /// The `field_code`s a contact must fill (`is_dynamic_attribute`), sorted, so violations
    /// come out in a stable order.
    required: BTreeSet<String>,
}

impl ScriptVariables {
    /// From `(field_code, is_dynamic_attribute)` pairs, in any order.
    pub fn new<'a>(variables: impl IntoIterator<Item = (&'a str, bool)>) -> Self {
        let mut known = BTreeSet::new();
        let mut required = BTreeSet::new();
        for (code, dynamic) in variables {
            known.insert(code.to_owned());
            if dynamic {
                required.insert(code.to_owned());
            }
        }
        ScriptVariables { known, required }
    }

    /// The `field_code`s a contact must fill.
    pub fn required(&self) -> impl Iterator<Item = &str> {
        self.required.iter().map(String::as_str)
    }

    /// Whether `key` is a variable of the script.
    pub fn is_known(&self, key: &str) -> bool {
        self.known.contains(key)
    }

    /// Checks `contacts` (numbered from `first_index` in the paths), reporting every violation:
    /// `contacts[i].variables[CODE]` for a dynamic variable missing or blank (only spaces), and
    /// for a key the script does not have. Blank counts as missing because the bot would read
    /// nothing where the script expects a value.
    pub fn check(&self, contacts: &[ValidContact], first_index: usize) -> Result<(), ValidationError> {
        let mut violations = Vec::new();
        for (n, contact) in contacts.iter().enumerate() {
            let i = first_index.saturating_add(n);
            for code in &self.required {
                let filled = contact.variables.get(code).is_some_and(|v| !v.trim().is_empty());
                if !filled {
                    violations.push(FieldViolation {
                        field: format!("contacts[{i}].variables[{}]", path_key(code)),
                        description: "is required by the script (a dynamic variable) and must not be empty".into(),
                    });
                }
            }
            for key in contact.variables.keys().filter(|k| !self.known.contains(*k)) {
                violations.push(FieldViolation {
                    field: format!("contacts[{i}].variables[{}]", path_key(key)),
                    description: "is not a variable of the script".into(),
                });
            }
        }
        if violations.is_empty() { Ok(()) } else { Err(ValidationError { violations }) }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn contact(vars: &[(&str, &str)]) -> ValidContact {
        ValidContact {
            phone: "0912345678".into(),
            email: None,
            external_contact_code: None,
            variables: vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        }
    }

    fn paths(r: Result<(), ValidationError>) -> Vec<String> {
        r.err().map(|e| e.violations.into_iter().map(|v| v.field).collect()).unwrap_or_default()
    }

    /// Label, a contact's variables, the paths expected.
    type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);

    #[test]
    fn one_row_per_rule() {
        let script = ScriptVariables::new([("tên thí sinh", true), ("diem", true), ("bac_si", false)]);
        let rows: &[Row] = &[
            ("all filled", &[("tên thí sinh", "An"), ("diem", "9")], &[]),
            ("optional given", &[("tên thí sinh", "An"), ("diem", "9"), ("bac_si", "BS. An")], &[]),
            ("one missing", &[("tên thí sinh", "An")], &["contacts[7].variables[diem]"]),
            ("blank is missing", &[("tên thí sinh", " "), ("diem", "9")], &["contacts[7].variables[tên thí sinh]"]),
            ("unknown key", &[("tên thí sinh", "An"), ("diem", "9"), ("x", "1")], &["contacts[7].variables[x]"]),
            (
                "everything wrong at once, required first",
                &[("y", ""), ("a\nb", "")],
                &[
                    "contacts[7].variables[diem]",
                    "contacts[7].variables[tên thí sinh]",
                    "contacts[7].variables[a\\nb]",
                    "contacts[7].variables[y]",
                ],
            ),
        ];
        for (label, vars, want) in rows {
            assert_eq!(paths(script.check(&[contact(vars)], 7)), *want, "{label}");
        }
    }

    #[test]
    fn indices_count_from_the_first_index() {
        let script = ScriptVariables::new([("diem", true)]);
        let got = paths(script.check(&[contact(&[("diem", "1")]), contact(&[])], 1_000));
        assert_eq!(got, ["contacts[1001].variables[diem]"]);
        assert!(ScriptVariables::new([]).check(&[contact(&[])], 0).is_ok());
        assert!(script.is_known("diem") && !script.is_known("x"));
        assert_eq!(script.required().collect::<Vec<_>>(), ["diem"]);
    }
}
