use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

#[test]
fn a_panicking_run_hands_the_state_back_and_marks_the_task_down() {
    let health = Health::default();
    health.set_ready();
    let mut state = vec![1];
    let found = catch_panic(
        "detection",
        &health,
        || "window 7".to_string(),
        &mut state,
        |state| {
            state.push(2);
            panic!("bad window {}", state.len())
        },
    );
    assert_eq!(found, None::<()>);
    assert_eq!(state, [1, 2], "the state is the caller's again");
    assert!(!health.is_ready());
    let reason = health.not_ready_reason().expect("a reason");
    assert!(
        reason.contains("detection") && reason.contains("bad window 2"),
        "{reason}"
    );

    let found = catch_panic("detection", &health, String::new, &mut state, |state| {
        state.len()
    });
    assert_eq!(found, Some(2));
    assert!(health.is_ready(), "up again after a clean run");
}

#[tokio::test]
async fn a_task_that_panics_is_started_again_until_it_ends() {
    let health = Arc::new(Health::default());
    health.set_ready();
    let starts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&starts);
    supervise("recorder", Arc::clone(&health), move || {
        let run = counted.fetch_add(1, Ordering::SeqCst);
        Some(async move {
            if run < 2 {
                panic!("run {run} fails");
            }
        })
    })
    .await;
    assert_eq!(
        starts.load(Ordering::SeqCst),
        3,
        "two panics, then a clean run"
    );
    assert!(health.is_ready());
}

#[tokio::test]
async fn nothing_to_start_ends_supervision() {
    let health = Arc::new(Health::default());
    let starts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&starts);
    supervise("recorder", health, move || {
        counted.fetch_add(1, Ordering::SeqCst);
        None::<std::future::Ready<()>>
    })
    .await;
    assert_eq!(starts.load(Ordering::SeqCst), 1);
}
