use std::time::Duration;

use http_body_util::{BodyExt, Full};

use super::*;

fn body(bytes: usize, budget: &BodyBudget) -> (Budgeted<Full<Bytes>>, Claim) {
    let claim = Claim::default();
    let body = Budgeted::new(
        Full::new(Bytes::from(vec![7u8; bytes])),
        budget.clone(),
        Arc::clone(&claim),
    );
    (body, claim)
}

#[tokio::test]
async fn a_body_waits_for_room_until_an_earlier_request_is_answered() {
    let budget = BodyBudget::new("test_budget", 10);
    let (mut first, first_claim) = body(6, &budget);
    let (mut second, second_claim) = body(6, &budget);

    let frame = first.frame().await.expect("a frame").expect("data");
    assert_eq!(frame.data_ref().map(Bytes::len), Some(6));
    assert_eq!(budget.permits.available_permits(), 4);

    // Six more do not fit while the first request holds its six.
    let waiting = tokio::time::timeout(Duration::from_millis(100), second.frame()).await;
    assert!(waiting.is_err(), "the second body waits");
    assert!(!second.is_end_stream(), "a frame is still owed");

    // The body alone going does not give the bytes back: the handler may
    // still hold them. The request being answered (its claim dropped) does.
    // (The semaphore is fair: the four left over are already set aside for
    // the waiting body.)
    drop(first);
    assert_eq!(budget.permits.available_permits(), 0);
    drop(first_claim);
    assert_eq!(budget.permits.available_permits(), 4);
    let frame = tokio::time::timeout(Duration::from_secs(5), second.frame())
        .await
        .expect("room now")
        .expect("a frame")
        .expect("data");
    assert_eq!(frame.data_ref().map(Bytes::len), Some(6));
    assert_eq!(budget.permits.available_permits(), 4);
    drop((second, second_claim));
    assert_eq!(budget.permits.available_permits(), 10);
}

#[tokio::test]
async fn a_frame_bigger_than_the_budget_takes_all_of_it_rather_than_waiting() {
    let budget = BodyBudget::new("test_budget_big", 4);
    let (mut big, claim) = body(100, &budget);
    let frame = tokio::time::timeout(Duration::from_secs(5), big.frame())
        .await
        .expect("not stuck")
        .expect("a frame")
        .expect("data");
    assert_eq!(frame.data_ref().map(Bytes::len), Some(100));
    assert_eq!(budget.permits.available_permits(), 0);
    assert!(big.frame().await.is_none(), "then the end");
    drop((big, claim));
    assert_eq!(budget.permits.available_permits(), 4);
}

#[test]
fn json_is_recognised_with_parameters_and_any_case() {
    let table = [
        (Some("application/json"), true),
        (Some("application/json; charset=utf-8"), true),
        (Some("Application/JSON"), true),
        (Some("application/x-protobuf"), false),
        (Some("application/jsonl"), false),
        (None, false),
    ];
    for (content_type, expected) in table {
        let value = content_type.map(HeaderValue::from_static);
        assert_eq!(is_json(value.as_ref()), expected, "{content_type:?}");
    }
}

#[test]
fn the_408_is_an_otlp_status_in_the_request_encoding() {
    let limits = HttpLimits {
        read_header_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(30),
        errors: ErrorBody::Otlp,
    };
    let protobuf = body_timeout(limits, false);
    assert_eq!(protobuf.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(
        protobuf.headers()[header::CONTENT_TYPE],
        "application/x-protobuf"
    );
    assert_eq!(protobuf.headers()[header::CONNECTION], "close");
    let json = body_timeout(limits, true);
    assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
    let text = body_timeout(
        HttpLimits {
            errors: ErrorBody::Text,
            ..limits
        },
        true,
    );
    assert_eq!(
        text.headers()[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
}
