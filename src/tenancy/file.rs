//! The tenants file (`--tenants-file`; README, "Tenants"; docs/security.md): which callers may
//! call, identified by a bearer token's SHA-256 or an mTLS client certificate's SPIFFE ID (URI
//! SAN) or DNS name (DNS SAN), and as which tenant; each tenant's upstream key by reference (an
//! environment variable or a file, never inline).
//!
//! Read whole and checked whole before it is used: the first bad entry is named
//! (`tenants[2].callers[0]: ...`), so the facade refuses to start, or a reload keeps the last good
//! table (`reload.rs`). Error texts carry names and paths, never a key.
//!
//! ```yaml
//! tenants:
//!   - name: school
//!     api_key_file: /run/secrets/school-key     # or api_key_env: SCHOOL_CALLBOT_KEY
//!     callers:
//!       - bearer_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//!       - spiffe: spiffe://cluster.local/ns/grades/sa/notifier
//!       - dns: notifier.grades.svc
//! ```

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_norway::Value;

use super::Tenant;
use crate::{
    domain::ApiKey,
    reload::{Inputs, read_key},
};

/// Longest tenant name (a DNS label's bound: names go into metric labels and log fields).
const MAX_NAME_LEN: usize = 63;

/// Who a caller is, as the tenants file lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Identity {
    /// The SHA-256 of a bearer token (the token itself is never stored).
    Bearer([u8; 32]),
    /// A SPIFFE ID, compared exactly.
    Spiffe(String),
    /// A DNS name, lowercased.
    Dns(String),
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Bearer(d) => write!(f, "bearer_sha256 {}", hex(d)),
            Identity::Spiffe(s) => write!(f, "spiffe {s}"),
            Identity::Dns(s) => write!(f, "dns {s}"),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The tenants and who may act for each: what the middleware consults on every call.
pub(crate) struct TenantTable {
    tenants: Vec<Tenant>,
    identities: HashMap<Identity, usize>,
}

impl fmt::Debug for TenantTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.tenants.iter().map(|t| &*t.name).collect();
        write!(f, "TenantTable({names:?}, {} identities)", self.identities.len())
    }
}

impl TenantTable {
    /// The tenant `identity` belongs to, by index.
    pub(crate) fn tenant_of(&self, identity: &Identity) -> Option<usize> {
        self.identities.get(identity).copied()
    }

    /// The tenant at `index` (from [`TenantTable::tenant_of`]).
    pub(crate) fn tenant(&self, index: usize) -> &Tenant {
        &self.tenants[index]
    }

    /// The index of the tenant named `name`.
    pub(crate) fn by_name(&self, name: &str) -> Option<usize> {
        self.tenants.iter().position(|t| &*t.name == name)
    }

    /// Every tenant's name.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.tenants.iter().map(|t| &*t.name)
    }

    /// Every tenant's key (to forget the cached tokens of the keys a reload retired).
    pub(crate) fn keys(&self) -> impl Iterator<Item = &ApiKey> {
        self.tenants.iter().map(|t| &t.key)
    }
}

/// Reads, checks and resolves the tenants file at `path`: one line naming the entry when it
/// cannot be used. Key files named by a relative path are found beside the tenants file.
pub(crate) fn load(
    path: &Path,
    inputs: &mut Inputs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<TenantTable, String> {
    let text = inputs.read(path).map_err(|e| format!("cannot read the tenants file {}: {e}", path.display()))?;
    let in_file = |e: TenantsError| format!("tenants file {}: {e}", path.display());
    let spec = parse(&text).map_err(in_file)?;
    let base = path.parent().unwrap_or(Path::new("."));
    spec.resolve(base, inputs, env).map_err(in_file)
}

/// A tenants file that cannot be used: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {why}")]
pub(crate) struct TenantsError {
    /// The entry, as a path: `tenants`, `tenants[2].callers[0]`, `tenants[1].name`.
    pub(crate) at: String,
    /// What is wrong with it.
    pub(crate) why: String,
}

fn bad(at: impl Into<String>, why: impl fmt::Display) -> TenantsError {
    TenantsError { at: at.into(), why: why.to_string() }
}

/// The file as YAML gives it: each entry kept as a value, so that an error names its entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tenants: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(rename = "tenant", deny_unknown_fields)]
struct RawTenant {
    name: Option<String>,
    api_key_env: Option<String>,
    api_key_file: Option<PathBuf>,
    /// Never accepted (a key does not belong in a file that lists callers): refused with its
    /// own message, its value never read.
    api_key: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    callers: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename = "caller", deny_unknown_fields)]
struct RawCaller {
    bearer_sha256: Option<String>,
    spiffe: Option<String>,
    dns: Option<String>,
}

/// A checked tenants file, keys not read yet.
#[derive(Debug)]
pub(crate) struct Spec {
    tenants: Vec<TenantSpec>,
    identities: HashMap<Identity, usize>,
}

#[derive(Debug)]
struct TenantSpec {
    name: String,
    key: KeyRef,
}

/// Where a tenant's key is.
#[derive(Debug)]
enum KeyRef {
    Env(String),
    File(PathBuf),
}

/// Parses and checks the file's text: every shape rule, names unique, each identity in one
/// tenant. No I/O.
pub(crate) fn parse(text: &str) -> Result<Spec, TenantsError> {
    if text.trim().is_empty() {
        return Err(bad("tenants", "the file is empty: it must list at least one tenant"));
    }
    let file: RawFile = serde_norway::from_str(text).map_err(|e| bad("tenants file", e))?;
    let entries = file.tenants.ok_or_else(|| bad("tenants", "is required"))?;
    if entries.is_empty() {
        return Err(bad("tenants", "lists no tenant"));
    }
    let mut spec = Spec { tenants: Vec::with_capacity(entries.len()), identities: HashMap::new() };
    // Where each identity was first listed, for the error naming both places.
    let mut listed_at: HashMap<Identity, String> = HashMap::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let at = format!("tenants[{i}]");
        let raw: RawTenant = serde_norway::from_value(entry).map_err(|e| bad(&at, e))?;
        if raw.api_key.is_some() {
            return Err(bad(
                &at,
                "an inline api_key is not allowed: name an environment variable (api_key_env) or a file (api_key_file)",
            ));
        }
        let name = raw.name.ok_or_else(|| bad(format!("{at}.name"), "is required"))?;
        check_name(&name).map_err(|why| bad(format!("{at}.name"), why))?;
        if let Some(first) = spec.tenants.iter().position(|t| t.name == name) {
            return Err(bad(format!("{at}.name"), format!("{name:?} is already the name of tenants[{first}]")));
        }
        let key = match (raw.api_key_env, raw.api_key_file) {
            (Some(var), None) if var.trim().is_empty() => return Err(bad(format!("{at}.api_key_env"), "is empty")),
            (Some(var), None) => KeyRef::Env(var.trim().to_owned()),
            (None, Some(path)) if path.as_os_str().is_empty() => {
                return Err(bad(format!("{at}.api_key_file"), "is empty"));
            }
            (None, Some(path)) => KeyRef::File(path),
            (Some(_), Some(_)) => return Err(bad(&at, "give api_key_env or api_key_file, not both")),
            (None, None) => return Err(bad(&at, "needs its key: api_key_env or api_key_file")),
        };
        for (j, caller) in raw.callers.into_iter().enumerate() {
            let at = format!("{at}.callers[{j}]");
            let raw: RawCaller = serde_norway::from_value(caller).map_err(|e| bad(&at, e))?;
            let identity = identity(raw).map_err(|why| bad(&at, why))?;
            if let Some(first) = listed_at.get(&identity) {
                return Err(bad(
                    &at,
                    format!("{identity} is already listed at {first}: an identity belongs to one tenant"),
                ));
            }
            listed_at.insert(identity.clone(), at);
            spec.identities.insert(identity, i);
        }
        spec.tenants.push(TenantSpec { name, key });
    }
    Ok(spec)
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("is longer than {MAX_NAME_LEN} characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(format!("{name:?} must be lowercase letters, digits and '-' only"));
    }
    Ok(())
}

/// One caller entry: exactly one identity, well formed.
fn identity(raw: RawCaller) -> Result<Identity, String> {
    match (raw.bearer_sha256, raw.spiffe, raw.dns) {
        (Some(digest), None, None) => bearer_digest(digest.trim()).map(Identity::Bearer),
        (None, Some(id), None) => spiffe_id(id.trim()).map(Identity::Spiffe),
        (None, None, Some(name)) => dns_name(name.trim()).map(Identity::Dns),
        (None, None, None) => Err("names no identity: give one of bearer_sha256, spiffe, dns".to_owned()),
        _ => Err("gives more than one identity: one of bearer_sha256, spiffe, dns per entry".to_owned()),
    }
}

fn bearer_digest(text: &str) -> Result<[u8; 32], String> {
    let why = || "bearer_sha256 must be 64 hex digits: the SHA-256 of the token (sha256sum), not the token".to_owned();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(why());
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| why())?;
    }
    Ok(digest)
}

/// `spiffe://<trust domain>[/<path>]`: the trust domain lowercase letters, digits, `.`, `-`, `_`;
/// the path without whitespace (SPIFFE IDs are compared exactly).
fn spiffe_id(text: &str) -> Result<String, String> {
    let why = |what: &str| format!("spiffe must be a SPIFFE ID, spiffe://<trust domain>/<path>: {what}");
    let rest = text.strip_prefix("spiffe://").ok_or_else(|| why("it does not start with spiffe://"))?;
    let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    if domain.is_empty() || !domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    {
        return Err(why("the trust domain must be lowercase letters, digits, '.', '-', '_'"));
    }
    if path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) || path.contains("//") {
        return Err(why("the path holds whitespace or an empty segment"));
    }
    Ok(text.to_owned())
}

/// A DNS name as a certificate's DNS SAN carries it, lowercased (DNS compares case-insensitively).
fn dns_name(text: &str) -> Result<String, String> {
    let name = text.to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err("dns must be a DNS name (letters, digits, '-' in dot-separated labels; no wildcard)".to_owned());
    }
    Ok(name)
}

impl Spec {
    /// Reads every tenant's key (environment variables through `env`, files relative to `base`).
    pub(crate) fn resolve(
        self,
        base: &Path,
        inputs: &mut Inputs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<TenantTable, TenantsError> {
        let mut tenants = Vec::with_capacity(self.tenants.len());
        for (i, t) in self.tenants.into_iter().enumerate() {
            let key = match &t.key {
                KeyRef::Env(var) => {
                    let at = format!("tenants[{i}].api_key_env");
                    let value = env(var).ok_or_else(|| bad(&at, format!("{var} is not set")))?;
                    let value = value.trim();
                    if value.is_empty() {
                        return Err(bad(&at, format!("{var} is empty")));
                    }
                    if value.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
                        return Err(bad(&at, format!("{var} holds whitespace or control characters")));
                    }
                    ApiKey::new(value)
                }
                KeyRef::File(path) => {
                    read_key(inputs, &base.join(path)).map_err(|why| bad(format!("tenants[{i}].api_key_file"), why))?
                }
            };
            tenants.push(Tenant { name: t.name.into(), key });
        }
        Ok(TenantTable { tenants, identities: self.identities })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_good_file_resolves_every_identity_to_its_tenant() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("school.key"), "  school-key\n").unwrap();
        let text = format!(
            "tenants:\n\
             - name: school\n  api_key_file: school.key\n  callers:\n\
             \x20   - bearer_sha256: {}\n    - spiffe: spiffe://cluster.local/ns/grades/sa/notifier\n\
             - name: clinic-2\n  api_key_env: CLINIC_KEY\n  callers:\n    - dns: Reminder.Clinic.SVC\n\
             - name: idle\n  api_key_env: CLINIC_KEY\n",
            DIGEST.to_uppercase()
        );
        std::fs::write(dir.path().join("tenants.yaml"), text).unwrap();
        let env = |v: &str| (v == "CLINIC_KEY").then(|| "clinic-key".to_owned());
        let table = load(&dir.path().join("tenants.yaml"), &mut Inputs::default(), &env).unwrap();
        let name = |id: Identity| table.tenant_of(&id).map(|i| table.tenant(i).name.to_string());
        let digest = bearer_digest(DIGEST).unwrap();
        assert_eq!(name(Identity::Bearer(digest)).as_deref(), Some("school"));
        assert_eq!(
            name(Identity::Spiffe("spiffe://cluster.local/ns/grades/sa/notifier".into())).as_deref(),
            Some("school")
        );
        assert_eq!(name(Identity::Dns("reminder.clinic.svc".into())).as_deref(), Some("clinic-2"));
        assert_eq!(name(Identity::Dns("other.svc".into())), None);
        assert_eq!(table.tenant(table.by_name("school").unwrap()).key.expose(), "school-key");
        assert_eq!(table.tenant(table.by_name("clinic-2").unwrap()).key.expose(), "clinic-key");
        assert_eq!(table.by_name("nobody"), None);
        let debug = format!("{table:?}");
        assert!(!debug.contains("school-key") && !debug.contains("clinic-key"), "{debug}");
    }

    /// Every bad shape, with the entry its error names.
    #[test]
    fn every_bad_shape_is_refused_naming_its_entry() {
        let ok_tenant = "- name: a\n  api_key_env: K\n";
        let rows: Vec<(String, &str, &str)> = vec![
            ("".into(), "tenants", "empty"),
            ("tenants: []\n".into(), "tenants", "lists no tenant"),
            ("other: 1\n".into(), "tenants file", "unknown field"),
            ("tenants: [\n".into(), "tenants file", ""),
            ("tenants:\n  - just-a-string\n".into(), "tenants[0]", "invalid type"),
            ("tenants:\n- api_key_env: K\n".into(), "tenants[0].name", "is required"),
            ("tenants:\n- name: School\n  api_key_env: K\n".into(), "tenants[0].name", "lowercase"),
            ("tenants:\n- name: a_b\n  api_key_env: K\n".into(), "tenants[0].name", "lowercase"),
            (format!("tenants:\n- name: {}\n  api_key_env: K\n", "a".repeat(64)), "tenants[0].name", "longer"),
            (format!("tenants:\n{ok_tenant}{ok_tenant}"), "tenants[1].name", "already the name of tenants[0]"),
            ("tenants:\n- name: a\n".into(), "tenants[0]", "needs its key"),
            ("tenants:\n- name: a\n  api_key_env: K\n  api_key_file: /k\n".into(), "tenants[0]", "not both"),
            ("tenants:\n- name: a\n  api_key: s3cr3t-inline\n".into(), "tenants[0]", "inline api_key is not allowed"),
            ("tenants:\n- name: a\n  api_key_env: ' '\n".into(), "tenants[0].api_key_env", "is empty"),
            ("tenants:\n- name: a\n  api_key_env: K\n  colour: red\n".into(), "tenants[0]", "unknown field `colour`"),
            (format!("tenants:\n{ok_tenant}  callers:\n  - {{}}\n"), "tenants[0].callers[0]", "names no identity"),
            (
                format!("tenants:\n{ok_tenant}  callers:\n  - dns: a.svc\n    spiffe: spiffe://td/x\n"),
                "tenants[0].callers[0]",
                "more than one identity",
            ),
            (format!("tenants:\n{ok_tenant}  callers:\n  - token: abc\n"), "tenants[0].callers[0]", "unknown field"),
            (format!("tenants:\n{ok_tenant}  callers:\n  - bearer_sha256: abc\n"), "tenants[0].callers[0]", "64 hex"),
            (
                format!("tenants:\n{ok_tenant}  callers:\n  - bearer_sha256: {}\n", "z".repeat(64)),
                "tenants[0].callers[0]",
                "64 hex",
            ),
            (
                format!("tenants:\n{ok_tenant}  callers:\n  - spiffe: https://td/x\n"),
                "tenants[0].callers[0]",
                "spiffe://",
            ),
            (
                format!("tenants:\n{ok_tenant}  callers:\n  - spiffe: spiffe://TD/x\n"),
                "tenants[0].callers[0]",
                "trust domain",
            ),
            (
                format!("tenants:\n{ok_tenant}  callers:\n  - spiffe: spiffe:///x\n"),
                "tenants[0].callers[0]",
                "trust domain",
            ),
            (format!("tenants:\n{ok_tenant}  callers:\n  - dns: '*.svc'\n"), "tenants[0].callers[0]", "DNS name"),
            (format!("tenants:\n{ok_tenant}  callers:\n  - dns: a..svc\n"), "tenants[0].callers[0]", "DNS name"),
            (
                format!(
                    "tenants:\n{ok_tenant}  callers:\n  - dns: a.svc\n- name: b\n  api_key_env: K\n  callers:\n  - spiffe: spiffe://td/b\n  - dns: A.svc\n"
                ),
                "tenants[1].callers[1]",
                "already listed at tenants[0].callers[0]",
            ),
            (
                format!(
                    "tenants:\n{ok_tenant}  callers:\n  - bearer_sha256: {DIGEST}\n  - bearer_sha256: {}\n",
                    DIGEST.to_uppercase()
                ),
                "tenants[0].callers[1]",
                "already listed at tenants[0].callers[0]",
            ),
        ];
        for (text, at, why) in rows {
            let err = parse(&text).expect_err(&text);
            assert_eq!(err.at, at, "{text:?}: {err}");
            assert!(err.why.contains(why), "{text:?}: want {why:?} in {err}");
            assert!(!err.to_string().contains("s3cr3t-inline"), "{err}");
            assert!(!err.to_string().contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn keys_are_read_and_checked_naming_the_tenant() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty.key"), " \n").unwrap();
        std::fs::write(dir.path().join("two-lines.key"), "abc\nsecretpart\n").unwrap();
        let rows = [
            ("api_key_env: MISSING", "tenants[1].api_key_env", "MISSING is not set"),
            ("api_key_env: BLANK", "tenants[1].api_key_env", "BLANK is empty"),
            ("api_key_file: nowhere.key", "tenants[1].api_key_file", "cannot read"),
            ("api_key_file: empty.key", "tenants[1].api_key_file", "is empty"),
            ("api_key_file: two-lines.key", "tenants[1].api_key_file", "whitespace"),
        ];
        let env = |v: &str| match v {
            "K" => Some("k".to_owned()),
            "BLANK" => Some("  ".to_owned()),
            _ => None,
        };
        for (key, at, why) in rows {
            let text = format!("tenants:\n- name: a\n  api_key_env: K\n- name: b\n  {key}\n");
            let err = parse(&text).unwrap().resolve(dir.path(), &mut Inputs::default(), &env).unwrap_err();
            assert_eq!(err.at, at, "{key}: {err}");
            assert!(err.why.contains(why), "{key}: want {why:?} in {err}");
            assert!(!err.why.contains("secretpart"), "never the key: {err}");
        }
        assert!(
            parse("tenants:\n- name: a\n  api_key_env: K\n")
                .unwrap()
                .resolve(dir.path(), &mut Inputs::default(), &no_env)
                .is_err()
        );
    }

    #[test]
    fn a_load_error_is_one_line_naming_the_file_and_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.yaml");
        std::fs::write(&path, "tenants:\n- name: a\n  api_key_env: K\n  callers:\n  - dns: '*'\n").unwrap();
        let err = load(&path, &mut Inputs::default(), &no_env).unwrap_err();
        assert!(err.starts_with(&format!("tenants file {}: tenants[0].callers[0]: ", path.display())), "{err}");
        let err = load(&dir.path().join("absent.yaml"), &mut Inputs::default(), &no_env).unwrap_err();
        assert!(err.starts_with("cannot read the tenants file "), "{err}");
    }
}
