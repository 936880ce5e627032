//! What the template promises about events: one older than the custom
//! resource's ServiceTimeout is dropped (it can wait in Lambda's queue for up to
//! 6 hours by default, long after the stack stopped waiting), and retries are bounded.

fn number_after(template: &str, key: &str) -> u64 {
    let line = template
        .lines()
        .find(|line| line.trim_start().starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("{key} not in template.yaml"));
    line.split(':').nth(1).unwrap().trim().parse().unwrap_or_else(|_| panic!("{line}"))
}

#[test]
fn stale_events_are_dropped_and_retries_bounded() {
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml")).unwrap();
    assert!(template.contains("Type: AWS::Lambda::EventInvokeConfig"));
    let service_timeout = number_after(&template, "ServiceTimeout");
    assert_eq!(number_after(&template, "MaximumEventAgeInSeconds"), service_timeout);
    assert!(number_after(&template, "MaximumRetryAttempts") <= 2);
    // The function's own deadline is within it too.
    assert!(number_after(&template, "Timeout") < service_timeout);
}
