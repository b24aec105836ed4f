use super::*;

/// Reads `yaml` as a listener section holding `tls` and `auth`.
fn read(yaml: &str) -> Result<(Option<TlsConfig>, AuthConfig), Vec<crate::validate::Problem>> {
    let document: Value = serde_yaml::from_str(yaml).expect("YAML");
    let mut checker = Checker::default();
    let top = checker.open("listener".to_owned(), Some(&document), &["tls", "auth"]);
    let mut tls = None;
    check_tls(&mut checker, &top, &mut tls);
    let mut auth = AuthConfig::default();
    check_auth(&mut checker, &top, AUTH_KEYS, &mut auth);
    checker.finish((tls, auth))
}

#[test]
fn the_example_lists_every_key_and_parses() {
    let document: Value = serde_yaml::from_str(EXAMPLE).expect("YAML");
    for (section, keys) in [("tls", TLS_KEYS), ("auth", AUTH_KEYS)] {
        for key in keys {
            assert!(
                document[section].get(key).is_some(),
                "{section} lacks {key}"
            );
        }
    }
    let (tls, auth) = read(EXAMPLE).expect("valid");
    let tls = tls.expect("tls");
    assert_eq!(tls.client_ca_file, Some("/etc/triage/tls/ca.crt".into()));
    assert_eq!(tls.min_version, TlsVersion::V1_2);
    assert_eq!(auth.bearer_tokens.len(), 1);
    assert_eq!(auth.bearer_token_env, ["TRIAGE_TOKEN"]);
    assert_eq!(auth.reload_interval, DEFAULT_RELOAD_INTERVAL);
}

#[test]
fn the_commented_example_is_all_defaults() {
    let text = format!("listener:\n{}", example(2, "# note: here"));
    let document: Value = serde_yaml::from_str(&text).expect("YAML");
    assert!(document["listener"]["tls"].is_null(), "{text}");
    assert!(document["listener"]["auth"].is_null(), "{text}");
    assert!(text.contains("    # note: here\n"), "{text}");
    assert_eq!(
        read(&serde_yaml::to_string(&document["listener"]).expect("YAML")),
        Ok((None, AuthConfig::default()))
    );
}

#[test]
fn a_half_tls_section_names_the_missing_file() {
    let problems = read("tls: { cert_file: /c }").expect_err("invalid");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "listener.tls.key_file");
    let problems = read("tls: { min_version: \"1.1\" }").expect_err("invalid");
    let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "listener.tls.min_version",
            "listener.tls.cert_file",
            "listener.tls.key_file"
        ]
    );
    assert!(problems[0].message.contains("RFC 8996"), "{problems:?}");
}

#[test]
fn bad_tokens_are_reported_at_their_index() {
    let problems = read(
        "auth: { bearer_tokens: [ok, \"has space\", \"\"], bearer_token_env: [\"1X\"], \
         bearer_token_files: [\"\"] }",
    )
    .expect_err("invalid");
    let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "listener.auth.bearer_tokens[1]",
            "listener.auth.bearer_tokens[2]",
            "listener.auth.bearer_token_files[0]",
            "listener.auth.bearer_token_env[0]",
        ]
    );
}

#[test]
fn a_single_value_is_a_list_of_one_and_versions_may_be_numbers() {
    let (tls, auth) = read(
        "tls: { cert_file: c, key_file: k, min_version: 1.3, reload_interval: 0s }\n\
              auth: { bearer_token_env: TOKEN }",
    )
    .expect("valid");
    let tls = tls.expect("tls");
    assert_eq!(tls.min_version, TlsVersion::V1_3);
    assert_eq!(tls.reload_interval, Duration::ZERO);
    assert_eq!(auth.bearer_token_env, ["TOKEN"]);
    assert!(auth.is_enabled());
}

#[test]
fn secrets_stay_out_of_debug_and_compare_whole() {
    let auth = AuthConfig::tokens(["s3cret"]);
    let shown = format!("{auth:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    let secret = Secret::new(" s3cret\n").expect("token");
    assert!(secret.matches("s3cret"));
    for wrong in ["s3cre", "s3crets", "S3cret", ""] {
        assert!(!secret.matches(wrong), "{wrong}");
    }
    assert!(Secret::new(" \n").is_none());
}
