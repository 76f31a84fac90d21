//! `CampaignPlan`: a validated `CampaignSpec`, and the rules of the `CreateCampaign` stream.
//!
//! The spec's session options follow the `CreateSession` rules exactly (they are checked by
//! [`NewSession::parse`], paths prefixed `spec.`); the campaign adds `campaign_id` (the
//! idempotency root) and `chunk_size`. Each chunk of contacts is then validated on its own
//! with global indices (`contacts[1234].phone`), so memory never holds more than one chunk.

use std::time::SystemTime;

use super::session::{NewSession, SessionLimits, validate_contacts};
use super::{FieldViolation, ValidationError, Violations};
use crate::pb;

/// Contacts per chunk when the spec says 0.
pub const DEFAULT_CHUNK_SIZE: usize = 500;
/// Longest `campaign_id`: the chunk key `<campaign_id>-<index>` must stay within the 128
/// characters of an `external_session_id`, and `-` plus any `u64` index takes at most 21.
pub const MAX_CAMPAIGN_ID_CHARS: usize = 100;

/// A validated campaign spec: the options every chunk's session shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignPlan {
    /// The idempotency root; chunk `i` is keyed `<campaign_id>-<i>`.
    pub campaign_id: String,
    /// Contacts per chunk (and so per upstream session), 1..=`max_contacts`.
    pub chunk_size: usize,
    /// Whether contacts are checked against the script's variables.
    pub check_variables: bool,
    /// Whether each chunk is placed at the earliest time within the calling hours where its
    /// dialling fits, after the previous chunk's projected end.
    pub schedule_within_calling_hours: bool,
    /// The session options, with no contacts and no key: each chunk fills both in.
    template: NewSession,
}

impl CampaignPlan {
    /// Validates `spec`, reporting every violation at once with paths `spec.<field>`.
    ///
    /// Rules: the session options as in `CreateSession`; `campaign_id` required, at most 100
    /// printable ASCII characters without spaces; `chunk_size` 0 (= 500, or `max_contacts` when
    /// that is smaller) or 1..=`max_contacts`.
    pub fn parse(spec: pb::CampaignSpec, max_contacts: usize, now: SystemTime) -> Result<Self, ValidationError> {
        // Destructured in full: a field added to the proto fails to compile here until it has
        // a rule.
        let pb::CampaignSpec {
            campaign_id,
            script_id,
            name,
            caller_id,
            voice,
            speed,
            retry_count,
            calls_per_round,
            round_interval,
            retry_interval,
            start_time,
            auto_pause,
            chunk_size,
            check_variables,
            purpose,
            schedule_within_calling_hours,
        } = spec;
        let mut v = Violations::default();
        v.take(|| "spec.campaign_id".into(), check_campaign_id(&campaign_id));
        // The session rules, run on the options with one placeholder contact (always valid) so
        // that only option violations can come out.
        let options = pb::CreateSessionRequest {
            script_id,
            contacts: vec![pb::Contact { phone: "0000000000".into(), ..Default::default() }],
            name,
            caller_id,
            voice,
            speed,
            retry_count,
            calls_per_round,
            round_interval,
            retry_interval,
            start_time,
            external_session_id: String::new(),
            auto_pause,
            check_variables,
            purpose,
            // A chunk that does not fit fails as CreateSession would; scheduling is the campaign's.
            defer_to_calling_hours: false,
            validate_only: false,
        };
        let template = match NewSession::parse(options, &SessionLimits { max_contacts: 1, now }) {
            Ok(mut session) => {
                session.contacts.clear();
                Some(session)
            }
            Err(e) => {
                for FieldViolation { field, description } in e.violations {
                    v.push(format!("spec.{field}"), description);
                }
                None
            }
        };
        let chunk_size = v.take(|| "spec.chunk_size".into(), check_chunk_size(chunk_size, max_contacts));
        match template {
            Some(template) => v.into_result(CampaignPlan {
                campaign_id,
                chunk_size,
                check_variables,
                schedule_within_calling_hours,
                template,
            }),
            None => Err(ValidationError { violations: v.0 }),
        }
    }

    /// The session options every chunk shares (no contacts, no key).
    pub fn template(&self) -> &NewSession {
        &self.template
    }

    /// The script every chunk runs.
    pub fn script_id(&self) -> &str {
        &self.template.script_id
    }

    /// The session key of chunk `index`: `<campaign_id>-<index>`.
    pub fn key(&self, index: u64) -> String {
        format!("{}-{index}", self.campaign_id)
    }

    /// Validates one chunk whose first contact is the campaign's `first_contact`-th (paths are
    /// global), and makes it a session keyed [`Self::key`]`(index)`. A repeated phone is found
    /// within the chunk only: remembering every phone of a million-contact campaign would break
    /// the constant-memory promise.
    pub fn chunk(
        &self,
        index: u64,
        first_contact: usize,
        contacts: Vec<pb::Contact>,
    ) -> Result<NewSession, ValidationError> {
        let contacts = validate_contacts(contacts, self.chunk_size, first_contact)?;
        Ok(NewSession { contacts, external_session_id: Some(self.key(index)), ..self.template.clone() })
    }
}

/// The stream's first message was not a spec (a batch came first, or nothing came at all).
pub fn spec_missing() -> ValidationError {
    one("spec", "is required: the first message of the stream must carry spec")
}

/// A spec arrived after the first message.
pub fn spec_repeated() -> ValidationError {
    one("spec", "must be sent once, in the first message only")
}

/// A message carried neither spec nor batch.
pub fn item_missing() -> ValidationError {
    one("item", "every message must carry spec or batch")
}

/// The stream ended without a single contact.
pub fn no_contacts() -> ValidationError {
    one("contacts", "at least one contact is required")
}

fn one(field: &str, description: &str) -> ValidationError {
    ValidationError { violations: vec![FieldViolation { field: field.into(), description: description.into() }] }
}

/// Required, ≤ 100 printable ASCII characters (0x21..=0x7E), as an `external_session_id`.
fn check_campaign_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        Err("is required")
    } else if id.len() <= MAX_CAMPAIGN_ID_CHARS && id.bytes().all(|b| (0x21..=0x7E).contains(&b)) {
        Ok(())
    } else {
        Err("must be at most 100 printable ASCII characters without spaces")
    }
}

/// 0 → the default (500, capped at `max_contacts`); otherwise 1..=`max_contacts`.
fn check_chunk_size(size: i32, max_contacts: usize) -> Result<usize, &'static str> {
    match usize::try_from(size) {
        Ok(0) => Ok(DEFAULT_CHUNK_SIZE.min(max_contacts).max(1)),
        Ok(n) if n <= max_contacts => Ok(n),
        _ => Err("must be between 1 and the facade's --max-contacts (0 = 500)"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    const NOW_SECS: u64 = 1_750_000_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW_SECS)
    }

    fn spec() -> pb::CampaignSpec {
        pb::CampaignSpec { campaign_id: "c1".into(), script_id: "script-1".into(), ..Default::default() }
    }

    fn paths(r: Result<CampaignPlan, ValidationError>) -> Vec<String> {
        r.err().map(|e| e.violations.into_iter().map(|v| v.field).collect()).unwrap_or_default()
    }

    fn contact(phone: &str) -> pb::Contact {
        pb::Contact { phone: phone.into(), ..Default::default() }
    }

    type Mutation = fn(&mut pb::CampaignSpec);

    #[test]
    fn one_row_per_rule() {
        let rows: &[(&str, Mutation, &[&str])] = &[
            ("minimal", |_| {}, &[]),
            ("campaign_id empty", |s| s.campaign_id.clear(), &["spec.campaign_id"]),
            ("campaign_id space", |s| s.campaign_id = "a b".into(), &["spec.campaign_id"]),
            ("campaign_id non-ASCII", |s| s.campaign_id = "đợt-1".into(), &["spec.campaign_id"]),
            ("campaign_id 100", |s| s.campaign_id = "c".repeat(100), &[]),
            ("campaign_id 101", |s| s.campaign_id = "c".repeat(101), &["spec.campaign_id"]),
            ("chunk_size 10 (max)", |s| s.chunk_size = 10, &[]),
            ("chunk_size 11", |s| s.chunk_size = 11, &["spec.chunk_size"]),
            ("chunk_size -1", |s| s.chunk_size = -1, &["spec.chunk_size"]),
            ("script_id empty", |s| s.script_id.clear(), &["spec.script_id"]),
            ("speed 4", |s| s.speed = Some(4), &["spec.speed"]),
            (
                "everything at once, in field order",
                |s| {
                    s.campaign_id.clear();
                    s.script_id.clear();
                    s.voice = 99;
                    s.chunk_size = -5;
                },
                &["spec.campaign_id", "spec.script_id", "spec.voice", "spec.chunk_size"],
            ),
        ];
        for (label, mutate, want) in rows {
            let mut s = spec();
            mutate(&mut s);
            assert_eq!(paths(CampaignPlan::parse(s, 10, now())), *want, "{label}");
        }
    }

    #[test]
    fn chunk_size_defaults_to_500_capped_at_max_contacts() {
        assert_eq!(CampaignPlan::parse(spec(), 10_000, now()).unwrap().chunk_size, 500);
        assert_eq!(CampaignPlan::parse(spec(), 3, now()).unwrap().chunk_size, 3);
    }

    #[test]
    fn chunks_carry_the_options_the_key_and_global_paths() {
        let mut s = spec();
        s.name = "Đợt 1".into();
        s.speed = Some(2);
        s.chunk_size = 3;
        let plan = CampaignPlan::parse(s, 10, now()).unwrap();
        assert_eq!(plan.script_id(), "script-1");
        let session = plan.chunk(2, 6, vec![contact("0912345678"), contact("0912345679")]).unwrap();
        assert_eq!(session.external_session_id.as_deref(), Some("c1-2"));
        assert_eq!(session.name.as_deref(), Some("Đợt 1"));
        assert_eq!(session.speed, Some(2));
        assert_eq!(session.contacts.len(), 2);
        let err = plan.chunk(1, 3, vec![contact("0912345678"), contact("12"), contact("0912345678")]).unwrap_err();
        let got: Vec<_> = err.violations.iter().map(|v| (v.field.as_str(), v.description.as_str())).collect();
        assert_eq!(got[0].0, "contacts[4].phone");
        assert_eq!(got[1], ("contacts[5].phone", "duplicates contacts[3].phone"));
        assert_eq!(plan.key(u64::MAX).len(), 2 + 1 + 20);
    }
}
