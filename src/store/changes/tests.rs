use super::*;
use crate::model::{Change, ChangeFilter, ChangeKind, ChangeSource};

fn change(service: &str, kind: ChangeKind, at: u64) -> Change {
    Change {
        id: 0,
        service: service.to_string(),
        kind,
        version: None,
        key: None,
        value: None,
        description: String::new(),
        time_unix_nanos: at,
        link: None,
        external_id: None,
        source: ChangeSource::Api,
    }
}

#[test]
fn ids_are_assigned_and_filters_apply() {
    let log = ChangeLog::new(10);
    let a = log.record(change("payment", ChangeKind::Deploy, 30));
    let b = log.record(change("cart", ChangeKind::Config, 10));
    assert_eq!((a, b), (1, 2));
    let all = log.list(&ChangeFilter::default());
    assert_eq!(all.iter().map(|c| c.id).collect::<Vec<_>>(), vec![2, 1]);
    let payment = log.list(&ChangeFilter {
        service: Some("payment".into()),
        ..ChangeFilter::default()
    });
    assert_eq!(payment.len(), 1);
    let window = log.list(&ChangeFilter {
        since_unix_nanos: Some(11),
        until_unix_nanos: Some(31),
        ..ChangeFilter::default()
    });
    assert_eq!(window.iter().map(|c| c.id).collect::<Vec<_>>(), vec![1]);
    assert_eq!(log.get(2).unwrap().service, "cart");
    assert_eq!(log.recorded(ChangeSource::Api), 2);
    assert_eq!(log.recorded(ChangeSource::Telemetry), 0);
}

#[test]
fn full_log_drops_oldest() {
    let log = ChangeLog::new(2);
    for at in 0..3 {
        log.record(change("a", ChangeKind::Deploy, at));
    }
    assert_eq!(log.len(), 2);
    assert_eq!(log.dropped(), 1);
    assert!(log.get(1).is_none());
    log.restore(Change {
        id: 40,
        ..change("b", ChangeKind::Scale, 9)
    });
    assert_eq!(log.record(change("c", ChangeKind::Infra, 10)), 41);
}

#[test]
fn the_same_change_told_twice_is_recorded_once() {
    let log = ChangeLog::default();
    let with_id = |id: &str| Change {
        external_id: Some(id.to_owned()),
        ..change("payment", ChangeKind::Deploy, 10)
    };
    assert!(log.record_once(with_id("deploy-81")).is_some());
    assert!(log.record_once(with_id("deploy-81")).is_none(), "same id");
    assert!(
        log.record_once(with_id("deploy-82")).is_some(),
        "another id"
    );
    // Without ids, the same fields at the same time are the same change;
    // a second one a second later is not.
    assert!(log
        .record_once(change("cart", ChangeKind::Config, 20))
        .is_some());
    assert!(log
        .record_once(change("cart", ChangeKind::Config, 20))
        .is_none());
    assert!(log
        .record_once(change("cart", ChangeKind::Config, 21))
        .is_some());
    assert_eq!(log.len(), 4);
}
