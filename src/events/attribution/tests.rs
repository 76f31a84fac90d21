use super::{session::Contact, *};

fn tenant() -> TenantId {
    Arc::from("t")
}

fn record(session: &str, contacts: &[&str], redials: u32) -> SessionRecord {
    SessionRecord {
        session_id: session.into(),
        external_id: String::new(),
        contacts: contacts.iter().map(|c| (*c).to_owned()).collect(),
        redials,
        created_at_ms: 1,
        script_id: String::new(),
        name: String::new(),
        ..SessionRecord::default()
    }
}

fn fact<'a>(tenant: &'a TenantId, call: &'a str, phone: &'a str, fact: Fact, outcome: CallOutcome) -> FactRef<'a> {
    FactRef { tenant, call_id: call, number: national_key(phone), fact, outcome }
}

#[test]
fn unfinished_lists_only_sessions_created_before_the_cutoff_with_an_open_contact() {
    let t = tenant();
    let mut a = Attribution::new(60_000, 100, 200);
    let at = |mut r: SessionRecord, ms| {
        r.created_at_ms = ms;
        r
    };
    a.record(&t, at(record("old", &["0912000001"], 0), 100), 100);
    a.record(&t, at(record("done", &["0912000002"], 0), 100), 100);
    a.record(&t, at(record("young", &["0912000003"], 0), 500), 500);
    let done: Arc<str> = Arc::from("done");
    a.apply(fact(&t, "c2", "0912000002", Fact::Record, CallOutcome::Answered), &done, 1, 600);
    let ids = |v: Vec<(TenantId, SessionRecord)>| {
        let mut ids: Vec<String> = v.into_iter().map(|(_, r)| r.session_id).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(a.unfinished(500)), ["old"], "young is not due, done is final");
    assert_eq!(ids(a.unfinished(501)), ["old", "young"]);
}

#[test]
fn a_live_state_goes_to_the_one_open_session_holding_the_number_and_attempts_count_up() {
    let t = tenant();
    let mut a = Attribution::new(60_000, 100, 200);
    assert!(a.record(&t, record("s1", &["84912345670"], 1), 1));
    assert!(!a.record(&t, record("s1", &["0999999999"], 0), 1), "the first record counts");
    let n = "0912345670";
    let ringing = fact(&t, "c1", n, Fact::Ringing, CallOutcome::Unspecified);
    let (s, attempt) = a.attribute(ringing, None);
    assert_eq!((s.as_deref(), attempt), (Some("s1"), 1));
    let s = s.unwrap();
    a.apply(ringing, &s, attempt, 2);
    a.apply(ringing, &s, attempt, 2);
    // The call's later facts inherit its attempt; the contact's next call is attempt 2.
    assert_eq!(a.attribute(fact(&t, "c1", n, Fact::Hangup, CallOutcome::NoAnswer), None), (Some(s.clone()), 1));
    assert_eq!(a.attribute(fact(&t, "c2", n, Fact::Ringing, CallOutcome::Unspecified), None), (Some(s.clone()), 2));
    // A record is never guessed from the number (the call history attributes it)...
    assert_eq!(a.attribute(fact(&t, "c9", n, Fact::Record, CallOutcome::NoAnswer), None), (None, 0));
    // ...but inherits its call's session.
    assert_eq!(a.attribute(fact(&t, "c1", n, Fact::Record, CallOutcome::NoAnswer), None), (Some(s.clone()), 1));
    assert_eq!(a.record_of(&t, "s1").map(|r| r.redials), Some(1));
    assert!(Arc::ptr_eq(&a.session_name(&t, "s1").unwrap(), &s));
    // Another tenant's number is not this session's.
    let other: TenantId = Arc::from("u");
    assert_eq!(a.attribute(fact(&other, "c3", n, Fact::Ringing, CallOutcome::Unspecified), None), (None, 0));
}

#[test]
fn a_number_in_two_open_sessions_stays_unattributed_until_one_of_them_is_final() {
    let t = tenant();
    let mut a = Attribution::new(60_000, 100, 200);
    a.record(&t, record("s1", &["0912345675"], 1), 1);
    a.record(&t, record("s2", &["0912345675"], 0), 1);
    let n = "0912345675";
    assert_eq!(a.attribute(fact(&t, "c1", n, Fact::Ringing, CallOutcome::Unspecified), None), (None, 0));
    // s2's call, attributed by its delivery, ends: no redials left, so s2 is final for it.
    let s2: Arc<str> = Arc::from("s2");
    let end = fact(&t, "c2", n, Fact::Record, CallOutcome::Busy);
    let (s, attempt) = a.attribute(end, Some(s2.clone()));
    assert_eq!((s.as_deref(), attempt), (Some("s2"), 1));
    a.apply(end, &s2, attempt, 2);
    assert_eq!(a.attribute(fact(&t, "c3", n, Fact::Ringing, CallOutcome::Unspecified), None).0.as_deref(), Some("s1"));
    // s1 has a redial: a busy first attempt leaves it open, an answered one closes it.
    let s1: Arc<str> = Arc::from("s1");
    a.apply(fact(&t, "c3", n, Fact::Record, CallOutcome::Busy), &s1, 1, 3);
    assert_eq!(a.attribute(fact(&t, "c4", n, Fact::Ringing, CallOutcome::Unspecified), None), (Some(s1.clone()), 2));
    a.apply(fact(&t, "c4", n, Fact::Record, CallOutcome::Answered), &s1, 2, 4);
    assert_eq!(a.attribute(fact(&t, "c5", n, Fact::Ringing, CallOutcome::Unspecified), None), (None, 0));
}

#[test]
fn one_tenants_sessions_push_out_only_its_own_while_others_hold_their_share() {
    let (quiet, loud): (TenantId, TenantId) = (Arc::from("quiet"), Arc::from("loud"));
    let mut a = Attribution::new(1_000_000, 100, 100);
    a.record(&quiet, record("q1", &["0900000001", "0900000002"], 0), 0);
    for i in 0..500 {
        a.record(&loud, record(&format!("l{i}"), &["0911111111", "0922222222"], 0), 1 + i);
        a.expire(1 + i);
    }
    assert!(a.record_of(&quiet, "q1").is_some(), "the quiet tenant's session stays");
    assert!(a.contacts <= 100);
    assert!(a.record_of(&loud, "l0").is_none() && a.record_of(&loud, "l499").is_some());
    // Its numbers are still attributed to it.
    let f = fact(&quiet, "c", "0900000001", Fact::Ringing, CallOutcome::Unspecified);
    assert_eq!(a.attribute(f, None).0.as_deref(), Some("q1"));
    // The orders do not keep what left.
    assert!(a.sessions_order.len() <= 2 * a.sessions + 1024);
    // A tenant over its share loses its own oldest when another records.
    let mut b = Attribution::new(1_000_000, 100, 10);
    for i in 0..5 {
        b.record(&loud, record(&format!("l{i}"), &["0911111111", "0922222222"], 0), i);
    }
    b.record(&quiet, record("q1", &["0900000001", "0900000002"], 0), 10);
    b.expire(10);
    assert!(b.record_of(&quiet, "q1").is_some() && b.record_of(&loud, "l0").is_none());
}

#[test]
fn sessions_sharing_numbers_leave_the_open_lists_by_expiry_and_by_finality() {
    // A campaign re-sending the same numbers: every session holds both, the bound keeps three.
    let t = tenant();
    let numbers = ["0900000001", "0900000002"];
    let mut a = Attribution::new(60_000, 100, 6);
    for i in 0..10 {
        a.record(&t, record(&format!("s{i}"), &numbers, 0), i);
        a.expire(i);
    }
    assert_eq!(a.sessions(), 3);
    let ringing = |call: &'static str, n: &'static str| fact_static(call, n, Fact::Ringing);
    // s7, s8 and s9 are open for both numbers: no guess.
    assert_eq!(a.attribute(ringing("c1", numbers[0]), None), (None, 0));
    // s8 becomes final for the first number (attributed by its delivery); a new session pushes
    // the oldest, s7, out.
    let s8: Arc<str> = Arc::from("s8");
    let end = fact(&t, "c2", numbers[0], Fact::Record, CallOutcome::Answered);
    a.apply(end, &s8, 1, 10);
    a.record(&t, record("s10", &["0900000003", "0900000004"], 0), 11);
    a.expire(11);
    assert!(a.record_of(&t, "s7").is_none() && a.record_of(&t, "s8").is_some());
    // s8 was closed for the first number, s7 expired: s9 is the one open session holding it.
    assert_eq!(a.attribute(ringing("c3", numbers[0]), None).0.as_deref(), Some("s9"));
    // The second number is still held by s8 and s9.
    assert_eq!(a.attribute(ringing("c4", numbers[1]), None), (None, 0));
}

fn fact_static(call: &'static str, phone: &'static str, what: Fact) -> FactRef<'static> {
    static TENANT: std::sync::OnceLock<TenantId> = std::sync::OnceLock::new();
    FactRef {
        tenant: TENANT.get_or_init(tenant),
        call_id: call,
        number: national_key(phone),
        fact: what,
        outcome: CallOutcome::Unspecified,
    }
}

#[test]
fn a_session_is_found_by_the_callers_own_id_while_it_is_recorded() {
    let t = tenant();
    let mut a = Attribution::new(1_000, 100, 100);
    let mut named = record("s1", &["0900000001"], 0);
    named.external_id = "order-42".into();
    a.record(&t, named, 0);
    assert_eq!(a.session_id_of(&t, "order-42").as_deref(), Some("s1"));
    assert_eq!(a.session_id_of(&t, "s1").as_deref(), Some("s1"));
    assert_eq!(a.record_of(&t, "order-42").map(|r| r.session_id), Some("s1".to_owned()));
    assert_eq!(a.session_id_of(&Arc::from("other"), "order-42"), None, "per tenant");
    a.expire(2_000);
    assert_eq!(a.session_id_of(&t, "order-42"), None, "gone with its session");
}

#[test]
fn sessions_and_calls_leave_by_age_and_by_bound() {
    let t = tenant();
    let mut a = Attribution::new(1_000, 2, 3);
    a.record(&t, record("s1", &["0900000001", "0900000002"], 0), 0);
    a.record(&t, record("s2", &["0900000003", "0900000004"], 0), 10);
    a.expire(10);
    // Four contacts over a bound of three: the oldest session went, its numbers with it.
    assert!(a.record_of(&t, "s1").is_none() && a.record_of(&t, "s2").is_some());
    assert_eq!(a.attribute(fact(&t, "c", "0900000001", Fact::Ringing, CallOutcome::Unspecified), None), (None, 0));
    let s2: Arc<str> = Arc::from("s2");
    for (i, call) in ["c1", "c2", "c3"].into_iter().enumerate() {
        a.apply(fact(&t, call, "0900000003", Fact::Ringing, CallOutcome::Unspecified), &s2, i as u32 + 1, 20);
    }
    a.expire(20);
    // Three calls over a bound of two: the first is forgotten.
    let first = fact(&t, "c1", "0999999999", Fact::Hangup, CallOutcome::NoAnswer);
    assert_eq!(a.attribute(first, None), (None, 0));
    assert_eq!(a.attribute(fact(&t, "c3", "0999999999", Fact::Hangup, CallOutcome::NoAnswer), None).1, 3);
    // Past the retention window everything goes.
    a.expire(2_000);
    assert_eq!(a.sessions(), 0);
    assert_eq!(a.attribute(fact(&t, "c3", "0999999999", Fact::Hangup, CallOutcome::NoAnswer), None), (None, 0));
}

#[test]
fn a_number_given_twice_counts_once_its_events_get_the_first_form_and_the_record_comes_back_whole() {
    let t = tenant();
    let mut a = Attribution::new(60_000, 100, 200);
    let long = "1".repeat(20);
    let mut given = record("s1", &["0912345671", "", "+84912345670", &long, "", "0912345670", "ồ"], 2);
    (given.external_id, given.script_id, given.name) = ("order-1".into(), "sc".into(), "tên".into());
    (given.purpose, given.start_ms) = (Some(crate::domain::Purpose::Service), Some(9));
    given.refused.insert("DO_NOT_CALL".into(), 3);
    a.record(&t, given.clone(), 1);
    assert_eq!(a.record_of(&t, "s1"), Some(given.clone()), "every field, contacts in order, repeats too");
    assert_eq!(a.record_of(&t, "order-1"), Some(given.clone()));
    assert_eq!(a.records(&t, &SessionQuery { limit: 10, ..SessionQuery::default() }), [given]);
    assert_eq!(a.contacts, 4, "the number given twice is one contact; the 20-digit one is kept");
    let first = a.contact_phone(&t, "s1", "84 912 345 670").unwrap();
    assert_eq!(&*first, "+84912345670", "the first form given");
    assert_eq!(a.contact_phone(&t, "s1", "0912345670"), Some(first));
    assert_eq!(a.contact_phone(&t, "s1", "0912345671").as_deref(), Some("0912345671"));
    assert_eq!(a.contact_phone(&t, "s1", &long), None, "a number without a key is never matched");
    assert_eq!(a.contact_phone(&t, "s1", "0912345672"), None);
    assert_eq!(a.contact_phone(&Arc::from("u"), "s1", "0912345670"), None, "per tenant");
    // Still contacts: the session is unfinished until they are given up too.
    let s1: Arc<str> = Arc::from("s1");
    for n in ["0912345670", "0912345671"] {
        a.apply(fact(&t, "c", n, Fact::Record, CallOutcome::Answered), &s1, 1, 2);
    }
    assert_eq!(a.unfinished(10).len(), 1);
}

proptest::proptest! {
    /// The open numbers (a count and a sum of ordinals) against a plain list of who holds
    /// what: after any mix of records, finals and the bound pushing sessions out, a live
    /// state is attributed exactly when one live session still holds its number open.
    #[test]
    fn an_open_number_names_its_one_holder_as_a_plain_list_would(
        ops in proptest::collection::vec((0u8..3, 0u8..16, 0usize..4), 1..120),
        bound in 1usize..12,
    ) {
        let pool = ["0900000001", "0900000002", "0900000003", "0900000004"];
        let t = tenant();
        let mut a = Attribution::new(u64::MAX, 1_000, bound);
        // (session, its numbers still open), oldest first.
        let mut model: Vec<(String, Vec<usize>)> = Vec::new();
        let mut next = 0;
        for (i, (op, mask, pick)) in ops.into_iter().enumerate() {
            let now = i as u64;
            if op < 2 {
                let numbers: Vec<usize> = (0..4).filter(|b| mask & (1 << b) != 0).collect();
                let name = format!("s{next}");
                next += 1;
                let given: Vec<&str> = numbers.iter().map(|n| pool[*n]).collect();
                proptest::prop_assert!(a.record(&t, record(&name, &given, 0), now));
                a.expire(now);
                model.push((name, numbers));
            } else if let Some((name, numbers)) = {
                let at = pick % model.len().max(1);
                model.get_mut(at)
            } {
                if let Some(n) = numbers.pop() {
                    let s: Arc<str> = Arc::from(name.as_str());
                    a.apply(fact(&t, "c", pool[n], Fact::Record, CallOutcome::Answered), &s, 1, now);
                }
            }
            // The model keeps what the index kept.
            model.retain(|(name, _)| a.record_of(&t, name).is_some());
            for (n, phone) in pool.iter().enumerate() {
                let holders: Vec<&String> =
                    model.iter().filter(|(_, open)| open.contains(&n)).map(|(s, _)| s).collect();
                let want = if holders.len() == 1 { Some(holders[0].as_str()) } else { None };
                let got = a.attribute(fact(&t, "live", phone, Fact::Ringing, CallOutcome::Unspecified), None).0;
                proptest::prop_assert_eq!(got.as_deref(), want, "number {}", n);
            }
            proptest::prop_assert!(a.contacts <= bound);
        }
    }
}

#[test]
fn the_arenas_keep_only_the_chunks_of_sessions_held_and_records_come_back_whole_across_them() {
    let t = tenant();
    // A bound of 300 contacts: twenty 15-contact sessions held at a time.
    let mut a = Attribution::new(u64::MAX, 100, 300);
    let numbers: Vec<String> = (0..15).map(|i| format!("09120000{i:02}")).collect();
    let given: Vec<&str> = numbers.iter().map(String::as_str).collect();
    for i in 0..20_000u64 {
        let mut r = record(&format!("session-{i:08}"), &given, 0);
        r.external_id = format!("order-{i}");
        a.record(&t, r, i);
        a.expire(i);
    }
    let mine = a.tenants.get("t").unwrap();
    assert_eq!(a.sessions(), 20);
    // About 6 MB of texts and contacts went through; what is held fits a chunk or two.
    assert!(mine.texts.chunks.len() <= 2 && mine.contact_lists.chunks.len() <= 2);
    let last = a.record_of(&t, "order-19999").unwrap();
    assert_eq!((last.session_id.as_str(), last.contacts.len()), ("session-00019999", 15));
    assert_eq!(last.contacts, numbers);
    assert!(a.record_of(&t, "session-00019979").is_none() && a.record_of(&t, "session-00019980").is_some());
    assert!(a.record_of(&t, "order-19979").is_none() && a.record_of(&t, "order-19980").is_some());
    // The keys of the 19,980 sessions gone were dropped along the way.
    assert!(mine.ids.len() <= 2 * 20 + KEYS_SLACK && mine.externals.len() <= 2 * 20 + KEYS_SLACK);
    // A session larger than a chunk gets one of its own, and comes back whole.
    let many: Vec<String> = (0..9_000).map(|i| format!("0913{i:06}")).collect();
    let mut big = Attribution::new(u64::MAX, 100, 100_000);
    let r = SessionRecord { contacts: many.clone(), ..record("big", &[], 0) };
    big.record(&t, r.clone(), 1);
    big.record(&t, record("small", &["0900000001"], 0), 2);
    assert_eq!(big.record_of(&t, "big"), Some(r));
    assert_eq!(big.record_of(&t, "small").map(|r| r.contacts), Some(vec!["0900000001".to_owned()]));
    let f = fact(&t, "c", "0913008999", Fact::Ringing, CallOutcome::Unspecified);
    assert_eq!(big.attribute(f, None).0.as_deref(), Some("big"));
}

#[test]
fn a_contact_takes_24_bytes_and_an_open_number_16() {
    // BENCHMARKS.md ("Fourth session") counts the index's memory from these: a full index holds
    // 200,000 contacts and as many open numbers when they are distinct.
    assert!(std::mem::size_of::<Contact>() <= 24, "{}", std::mem::size_of::<Contact>());
    assert!(std::mem::size_of::<Open>() <= 16, "{}", std::mem::size_of::<Open>());
}

#[test]
fn a_tenants_order_keeps_no_session_gone_by_age() {
    let t = tenant();
    let mut a = Attribution::new(100, 1_000, 10_000);
    for i in 0..1_000u64 {
        a.record(&t, record(&format!("s{i}"), &["0900000001"], 0), i * 10);
        a.expire(i * 10);
    }
    // 100 ms of retention at one session per 10 ms: about ten live, and no more places.
    let mine = a.tenants.get("t").unwrap();
    assert!(a.sessions() <= 11 && mine.ring.len() == a.sessions(), "{} {}", a.sessions(), mine.ring.len());
    assert!(a.sessions_order.len() <= 2 * a.sessions + 1024);
    // The number is held by every live session: no guess.
    assert_eq!(a.attribute(fact(&t, "c", "0900000001", Fact::Ringing, CallOutcome::Unspecified), None), (None, 0));
    a.expire(1_000_000);
    assert!(a.tenants.is_empty() && a.sessions() == 0 && a.contacts == 0, "a tenant without sessions goes");
}

#[test]
fn a_callers_name_given_twice_names_the_later_session_until_it_goes_through_key_rebuilds() {
    let t = tenant();
    // Ten one-contact sessions held; every session is named "order" by its caller, and every
    // tenth is recorded a second time (a repeat: not a session of its own).
    let mut a = Attribution::new(u64::MAX, 100, 10);
    for i in 0..1_000u64 {
        let mut r = record(&format!("s{i}"), &["0900000001"], 0);
        r.external_id = "order".into();
        assert!(a.record(&t, r.clone(), i));
        if i % 10 == 0 {
            assert!(!a.record(&t, r, i), "recorded before");
        }
        a.expire(i);
        // The latest session holds the name, and its own id, whatever left before it.
        assert_eq!(a.session_id_of(&t, "order").as_deref(), Some(format!("s{i}").as_str()));
        assert_eq!(a.session_id_of(&t, &format!("s{i}")).as_deref(), Some(format!("s{i}").as_str()));
        assert!(i < 10 || a.session_id_of(&t, &format!("s{}", i - 10)).is_none(), "gone at {i}");
        let mine = a.tenants.get("t").unwrap();
        assert!(mine.ids.len() <= 2 * mine.ring.len() + KEYS_SLACK + 1);
    }
    a.expire(u64::MAX);
    a.retention_ms = 0;
    a.expire(u64::MAX);
    assert_eq!(a.session_id_of(&t, "order"), None, "all gone");
}
