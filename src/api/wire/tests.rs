//! The wire's schemas against the readers that enforce them.

use super::*;

#[test]
fn form_decoding() {
    assert_eq!(
        form_pairs("a=1&b=x+y%21&c&d=%zz&e=%4"),
        vec![
            ("a".into(), "1".into()),
            ("b".into(), "x y!".into()),
            ("c".into(), "".into()),
            ("d".into(), "%zz".into()),
            ("e".into(), "%4".into()),
        ]
    );
}

#[test]
fn the_vm_request_schema_holds_the_handlers_rules() {
    let ok = |v: Value| check(&VM_REQUEST, &v).is_ok();
    assert!(ok(
        json!({"profile": {"save": true}, "start_url": "https://example.com/a?b=c#d"})
    ));
    assert!(ok(
        json!({"profile": "abc", "start_url": null, "width": 800, "height": null})
    ));
    assert!(ok(
        json!({"timeout": {"absolute": null, "webhook": {"url": "http://127.0.0.1:9/x"}}})
    ));
    assert!(!ok(json!({"start_url": "file:///etc/passwd"})));
    assert!(!ok(json!({"start_url": "http://"})));
    assert!(!ok(json!({"user_agent": "\n"})));
    assert!(!ok(json!({"user_agent": "a\u{85}"})));
    assert!(!ok(json!({"profile": {"load": "../x"}})));
    assert!(!ok(json!({"profile": 5})));
    assert!(!ok(json!({"timeout": {"absolute": MAX_TIMEOUT + 1}})));
    assert!(!ok(json!({"width": 99})));
    assert!(!ok(json!({"timeout": {"webhook": {"url": "ftp://x"}}})));
}

/// An integer query parameter the schema allows is read; one past it is refused by both.
#[test]
fn integer_query_schema_and_reader_agree() {
    #[derive(serde::Deserialize)]
    struct Q {
        generation: Option<u64>,
    }
    let params = [Param {
        name: "generation",
        schema: generation,
        description: "",
    }];
    let max = generation()["maximum"].as_u64().unwrap();
    let q: Q = query(&params, Some(&format!("generation={max}"))).unwrap();
    assert_eq!(q.generation, Some(max));
    let past = u128::from(max) + 1;
    assert!(query::<Q>(&params, Some(&format!("generation={past}"))).is_err());
    let v = json!(past as f64);
    assert!(schema::validate(&generation(), &v, "").is_err());
}

/// The schema says what `storage_state::parse` enforces for an origin: whatever one
/// accepts, the other does.
#[test]
fn origin_schema_and_parser_agree() {
    let schema = storage_state_schema();
    let label = |n: usize| "a".repeat(n);
    let host253 = [label(63), label(63), label(63), label(61)].join(".");
    for origin in [
        "http://a.b".to_string(),
        "https://x:1".into(),
        "https://x:65535".into(),
        "https://x:65536".into(),
        "https://x:99999".into(),
        "https://x:080".into(),
        format!("http://{host253}"),
        format!("http://{host253}a"),
        format!("https://{host253}:8080"),
        format!("https://{}.b", label(63)),
        format!("https://{}.b", label(64)),
        format!("https://{}", ["a"; 10].join(".")),
        "http://[::1]:3000".into(),
    ] {
        let doc = json!({"origins": [{"origin": origin, "localStorage": []}]});
        let by_schema = check(&schema, &doc).is_ok();
        let by_parser = crate::storage_state::parse(&doc).is_ok();
        assert!(
            !by_schema || by_parser,
            "{origin}: the schema allows what the server refuses"
        );
    }
    assert!(check(
        &schema,
        &json!({"origins": [{"origin": "https://x:65535"}]})
    )
    .is_ok());
    assert!(check(
        &schema,
        &json!({"origins": [{"origin": "https://x:65536"}]})
    )
    .is_err());
}
