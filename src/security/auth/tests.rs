use super::*;

fn header(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value.parse().expect("header"));
    headers
}

#[test]
fn any_listed_token_passes_and_others_are_told_apart() {
    let config = AuthConfig::tokens(["one", "two"]);
    let auth = BearerAuth::load("test", "t.auth", &config)
        .expect("loads")
        .expect("enabled");
    assert_eq!(auth.check_headers(&header("Bearer one")), Ok(()));
    assert_eq!(auth.check_headers(&header("bearer  two ")), Ok(()));
    assert_eq!(
        auth.check_headers(&header("Bearer three")),
        Err(Denied::Invalid)
    );
    assert_eq!(
        auth.check_headers(&header("Basic one")),
        Err(Denied::Missing)
    );
    assert_eq!(auth.check_headers(&HeaderMap::new()), Err(Denied::Missing));
    assert_eq!(auth.check(Some("Bearer")), Err(Denied::Missing));
    assert!(BearerAuth::load("test", "t.auth", &AuthConfig::default())
        .expect("loads")
        .is_none());
    let shown = format!("{auth:?}");
    assert!(!shown.contains("one"), "{shown}");
}

#[test]
fn environment_and_file_errors_name_the_field() {
    let dir = tempfile::tempdir().expect("dir");
    let config = AuthConfig {
        bearer_token_env: vec!["TRIAGE_TEST_SURELY_UNSET_TOKEN".to_owned()],
        ..AuthConfig::default()
    };
    let error = BearerAuth::load("test", "admin.auth", &config).expect_err("unset");
    assert_eq!(error.field, "admin.auth.bearer_token_env[0]");
    assert!(
        error.message.contains("TRIAGE_TEST_SURELY_UNSET_TOKEN"),
        "{error}"
    );

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let config = AuthConfig {
        bearer_token_files: vec![dir.path().join("missing"), empty],
        ..AuthConfig::default()
    };
    let error = BearerAuth::load("test", "admin.auth", &config).expect_err("missing");
    assert_eq!(error.field, "admin.auth.bearer_token_files[0]");
    assert!(
        error
            .to_string()
            .starts_with("admin.auth.bearer_token_files[0]: cannot read "),
        "{error}"
    );
    assert!(error.message.contains("missing"), "{error}");
}

#[test]
fn a_changed_token_file_is_reloaded_and_a_broken_one_keeps_the_old_token() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("token");
    std::fs::write(&path, "first\n").expect("write");
    let config = AuthConfig {
        bearer_token_files: vec![path.clone()],
        reload_interval: Duration::from_secs(30),
        ..AuthConfig::default()
    };
    let auth = BearerAuth::load("test", "t.auth", &config)
        .expect("loads")
        .expect("enabled");
    let set = Arc::clone(&auth.sets[0]);
    let start = Instant::now();
    assert!(set.matches("first", start, "test"));

    std::fs::write(&path, "second-token\n").expect("rewrite");
    // Not looked at again before the interval has passed.
    assert!(set.matches("first", start, "test"));
    let later = start + Duration::from_secs(31);
    assert!(set.matches("second-token", later, "test"));
    assert!(!set.matches("first", later, "test"));

    // Emptied (a rotation gone wrong): the last good token stays.
    std::fs::write(&path, "").expect("empty it");
    let later = later + Duration::from_secs(31);
    assert!(set.matches("second-token", later, "test"));
    assert!(!set.matches("", later, "test"));
}

#[test]
fn any_of_accepts_each_parts_tokens() {
    let admin = BearerAuth::load("admin", "admin.auth", &AuthConfig::tokens(["a"])).expect("loads");
    let changes = BearerAuth::fixed(
        "admin",
        "changes.api_token",
        vec![Secret::new("c").expect("token")],
    );
    let both = BearerAuth::any_of("admin", [admin, changes]).expect("some");
    assert_eq!(both.check(Some("Bearer a")), Ok(()));
    assert_eq!(both.check(Some("Bearer c")), Ok(()));
    assert_eq!(both.check(Some("Bearer b")), Err(Denied::Invalid));
    assert!(BearerAuth::any_of("admin", [None, None]).is_none());
}
