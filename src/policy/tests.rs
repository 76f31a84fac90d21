//! The enforcement on a test clock: the preset at 07:59, 08:00, 16:59 and a session whose
//! dialling passes 17:00, blackout dates, another zone, deferral, the cap and do-not-call.

use super::*;
use crate::reload::Inputs;

struct Fixed(Timestamp);

impl Clock for Fixed {
    fn now(&self) -> Timestamp {
        self.0
    }
}

const FILE: &str = "policies:
  - tenant: school
    time_zone: Asia/Ho_Chi_Minh
    require_purpose: true
    do_not_call_files: [DNC]
    advertising:
      preset: vn-decree-91
      blackout_dates: [2027-02-05]
  - tenant: berlin
    time_zone: Europe/Berlin
    service:
      hours: [\"09:00-12:00\", \"14:00-18:00\"]
      days: [mon, tue, wed, thu, fri]
";

fn policy(now: &str) -> Policy {
    let dir = tempfile::tempdir().unwrap();
    let dnc = dir.path().join("dnc.txt");
    std::fs::write(&dnc, "+84 900 000 001\n").unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, FILE.replace("DNC", dnc.to_str().unwrap())).unwrap();
    let set = PolicySet::load(&mut Inputs::default(), &path).unwrap();
    Policy::new(Some(Live::new(set)), Arc::new(MemoryCounts::default()), Arc::new(Fixed(now.parse().unwrap())))
}

fn numbers(phones: &[&str]) -> Vec<Option<u64>> {
    phones.iter().map(|p| dnc::key(p)).collect()
}

fn ask<'a>(numbers: &'a [Option<u64>], holder: &'a str) -> Ask<'a> {
    Ask {
        tenant: "school",
        purpose: Some(Purpose::Advertising),
        numbers,
        pacing: Pacing::new(Some(1), Some(60), None, None),
        start: None,
        defer: false,
        schedule_after: None,
        holder,
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[tokio::test]
async fn the_preset_opens_at_eight_and_closes_at_five_local() {
    let one = numbers(&["0912345678"]);
    // 07:59 local (UTC+7).
    let err = policy("2027-01-04T00:59:00Z").decide(ask(&one, "s"), true).await.unwrap_err();
    assert!(
        matches!(err, PolicyError::OutsideHours { next_opening: Some(t) } if t == ts("2027-01-04T01:00:00Z")),
        "{err:?}"
    );
    // 08:00.
    let v = policy("2027-01-04T01:00:00Z").decide(ask(&one, "s"), true).await.unwrap();
    assert_eq!((v.admitted.as_slice(), v.shown_start(), v.moved), (&[0][..], None, false));
    // 16:59: one contact, one minute of dialling, fits exactly.
    let v = policy("2027-01-04T09:59:00Z").decide(ask(&one, "s"), true).await.unwrap();
    assert_eq!(v.end, ts("2027-01-04T10:00:00Z"));
    // 16:59 with two contacts at one a minute: the dialling passes 17:00.
    let two = numbers(&["0912345678", "0912345679"]);
    let err = policy("2027-01-04T09:59:00Z").decide(ask(&two, "s"), true).await.unwrap_err();
    assert!(matches!(err, PolicyError::WindowTooShort { max_contacts: 1 }), "{err:?}");
    // Deferred: the next morning.
    let p = policy("2027-01-04T09:59:00Z");
    let v = p.decide(Ask { defer: true, ..ask(&two, "s") }, true).await.unwrap();
    assert_eq!((v.shown_start(), v.moved), (Some(ts("2027-01-05T01:00:00Z")), true));
    // The preset allows 9 hours: 540 contacts at one a minute, not 541.
    let many: Vec<Option<u64>> = (0..541).map(|i| dnc::key(&format!("08{i:08}"))).collect();
    let err = p.decide(Ask { defer: true, ..ask(&many, "m") }, false).await.unwrap_err();
    assert!(matches!(err, PolicyError::WindowTooShort { max_contacts: 540 }), "{err:?}");
}

#[tokio::test]
async fn blackout_dates_and_another_zone() {
    let one = numbers(&["0912345678"]);
    // 2027-02-05 10:00 local is blacked out; deferral goes to the 6th at 08:00.
    let p = policy("2027-02-05T03:00:00Z");
    let err = p.decide(ask(&one, "s"), false).await.unwrap_err();
    assert!(
        matches!(err, PolicyError::OutsideHours { next_opening: Some(t) } if t == ts("2027-02-06T01:00:00Z")),
        "{err:?}"
    );
    // Berlin's service hours, Monday 2027-01-04 at 12:30 CET (lunch break): next 14:00 CET.
    let p = policy("2027-01-04T11:30:00Z");
    let berlin = Ask { tenant: "berlin", purpose: Some(Purpose::Service), ..ask(&one, "s") };
    let err = p.decide(berlin, false).await.unwrap_err();
    assert!(
        matches!(err, PolicyError::OutsideHours { next_opening: Some(t) } if t == ts("2027-01-04T13:00:00Z")),
        "{err:?}"
    );
    // Friday 18:30 CET: Monday 09:00.
    let p = policy("2027-01-08T17:30:00Z");
    let v = p.decide(Ask { defer: true, ..berlin }, false).await.unwrap();
    assert_eq!(v.start, ts("2027-01-11T08:00:00Z"));
    // Summer time: 09:00 CEST is 07:00 UTC.
    let p = policy("2027-07-05T06:00:00Z");
    let v = p.decide(Ask { defer: true, ..berlin }, false).await.unwrap();
    assert_eq!(v.start, ts("2027-07-05T07:00:00Z"));
}

#[tokio::test]
async fn purpose_do_not_call_then_the_cap() {
    let p = policy("2027-01-04T02:00:00Z");
    let phones = numbers(&["0900000001", "0912345678", "+84912345679"]);
    let err = p.decide(Ask { purpose: None, ..ask(&phones, "s") }, true).await.unwrap_err();
    assert!(matches!(err, PolicyError::PurposeRequired));
    let v = p.decide(ask(&phones, "s1"), true).await.unwrap();
    assert_eq!(v.admitted, [1, 2]);
    assert_eq!(v.refused, [(0, Refusal::DoNotCall)]);
    // Two hours later, another session: capped until 24 h after the first.
    let later = Ask { start: Some(ts("2027-01-04T04:00:00Z")), ..ask(&phones[1..], "s2") };
    let err = p.decide(later, true).await.unwrap_err();
    let PolicyError::NoCallableContacts { refused } = err else { panic!("{err:?}") };
    let after = Some(ts("2027-01-05T02:00:00Z"));
    assert_eq!(refused, [(0, Refusal::FrequencyCap(after)), (1, Refusal::FrequencyCap(after))]);
    // Released (the upstream refused the first session): admitted.
    p.release("school", Purpose::Advertising, &[phones[1].unwrap(), phones[2].unwrap()], "s1").await;
    let v = p.decide(later, false).await.unwrap();
    assert_eq!(v.admitted, [0, 1]);
    // An added number is refused like a listed one.
    p.counts().add_dnc("school", &[phones[1].unwrap()]).await.unwrap();
    let v = p.decide(later, false).await.unwrap();
    assert_eq!(v.refused, [(0, Refusal::DoNotCall)]);
}

#[tokio::test]
async fn validate_only_counts_nothing() {
    let p = policy("2027-01-04T02:00:00Z");
    let one = numbers(&["0912345678"]);
    for holder in ["a", "b", "c"] {
        let v = p.decide(ask(&one, holder), false).await.unwrap();
        assert_eq!(v.reserved, None);
    }
    assert!(p.decide(ask(&one, "d"), true).await.is_ok());
    assert!(p.decide(ask(&one, "e"), true).await.is_err());
}

#[tokio::test]
async fn campaign_chunks_are_placed_after_each_other_within_the_hours() {
    // Monday 16:00 local: a chunk of 30 minutes fits twice before 17:00, the third goes on Tuesday.
    let p = policy("2027-01-04T09:00:00Z");
    let chunk: Vec<Option<u64>> = (0..30).map(|i| dnc::key(&format!("08{i:08}"))).collect();
    let mut after = p.now();
    let mut starts = Vec::new();
    for i in 0..3 {
        let holder = format!("c-{i}");
        let a = Ask { schedule_after: Some(after), ..ask(&chunk, &holder) };
        let v = p.decide(a, false).await.unwrap();
        starts.push(v.start);
        after = v.end;
    }
    assert_eq!(starts, [ts("2027-01-04T09:00:00Z"), ts("2027-01-04T09:30:00Z"), ts("2027-01-05T01:00:00Z")]);
}

#[test]
fn pacing_length_and_fit() {
    let p = Pacing::new(None, None, None, None);
    assert_eq!(p.length(500), SignedDuration::from_secs(34 * 30));
    let p = Pacing::new(Some(10), Some(60), Some(2), Some(300));
    // 3 passes of 10 rounds of a minute, and two waits of 5 minutes.
    assert_eq!(p.length(100), SignedDuration::from_mins(40));
    assert_eq!(p.max_contacts(SignedDuration::from_mins(40)), 100);
    assert_eq!(p.max_contacts(SignedDuration::from_mins(9)), 0);
}
