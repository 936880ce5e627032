//! What the template promises: events older than the custom resource's
//! ServiceTimeout are dropped (one can wait in Lambda's queue for up to 6 hours by
//! default, long after the stack stopped waiting) and retries are bounded; the RDS
//! event rule matches every failover however the database was named; and no role
//! may change security groups, load balancers or endpoint services it was not
//! bounded to.

use serde_norway::Value as Yaml;

fn number(value: &Yaml) -> u64 {
    match value {
        Yaml::Number(n) => n.as_u64().unwrap(),
        Yaml::String(s) => s.parse().unwrap(),
        other => panic!("not a number: {other:?}"),
    }
}

#[test]
fn stale_events_are_dropped_and_retries_bounded() {
    let template = template();
    let resources = &template["Resources"];
    let builder = &resources["FunctionEventInvokeConfig"]["Properties"];
    let service_timeout = number(&resources["ReversePrivateLink"]["Properties"]["ServiceTimeout"]);
    assert_eq!(number(&builder["MaximumEventAgeInSeconds"]), service_timeout);
    assert!(number(&builder["MaximumRetryAttempts"]) <= 2);
    // The function's own deadline is within it too.
    assert!(number(&resources["Function"]["Properties"]["Timeout"]) < service_timeout);
    // Every custom resource's first request already runs under that config.
    for (name, resource) in resources.as_mapping().unwrap() {
        if resource["Type"].as_str().unwrap().starts_with("Custom::") {
            let depends = serde_norway::to_string(&resource["DependsOn"]).unwrap();
            assert!(depends.contains("FunctionEventInvokeConfig"), "{name:?} does not wait for it: {depends}");
        }
    }
    // The follower's runs are checks the next scheduled run repeats: never retried, never stale.
    let follower = &resources["FollowerEventInvokeConfig"]["Properties"];
    assert_eq!(number(&follower["MaximumRetryAttempts"]), 0);
    assert!(number(&follower["MaximumEventAgeInSeconds"]) <= 300);
}

/// The template as data: CloudFormation's short forms (`!Ref`, `!Sub`, …) stay tagged values.
pub fn template() -> serde_norway::Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

/// Whether `event` matches an EventBridge `pattern` made of lists of exact values
/// and nested objects (EventBridge user guide, "Event patterns"); any other operator
/// in the pattern fails the test, so it cannot pass by not understanding one.
fn matches(pattern: &serde_norway::Value, event: &serde_json::Value) -> bool {
    use serde_norway::Value as Yaml;
    let Yaml::Mapping(fields) = pattern else { panic!("a pattern is a map: {pattern:?}") };
    fields.iter().all(|(key, expected)| {
        let key = key.as_str().unwrap();
        let value = &event[key];
        match expected {
            Yaml::Sequence(allowed) => allowed.iter().any(|allowed| match allowed {
                Yaml::String(text) => value.as_str() == Some(text.as_str()),
                other => panic!("only exact values are modelled, got {other:?} for {key}"),
            }),
            Yaml::Mapping(_) => matches(expected, value),
            other => panic!("unexpected pattern for {key}: {other:?}"),
        }
    })
}

fn rds_event(detail_type: &str, source: &str, event_id: &str) -> serde_json::Value {
    serde_json::json!({
        "version": "0", "id": "1", "detail-type": detail_type, "source": "aws.rds", "account": "123456789012",
        "time": "2026-11-25T06:00:00Z", "region": "us-east-1", "resources": [],
        "detail": {"EventID": event_id, "SourceIdentifier": source, "SourceType": "CLUSTER"}
    })
}

#[test]
fn the_rds_event_rule_matches_failovers_however_the_database_was_named() {
    let template = template();
    let pattern = &template["Resources"]["FollowWriterEvents"]["Properties"]["EventPattern"];
    // Whatever the stack's DatabaseIdentifier (typed "Orders", a member "orders-2", an endpoint),
    // the events of its database arrive: the pattern does not depend on how it was typed.
    assert!(pattern["detail"].get("SourceIdentifier").is_none(), "{pattern:?}");
    for (detail_type, source, event_id) in [
        ("RDS DB Cluster Event", "orders", "RDS-EVENT-0071"),
        ("RDS DB Cluster Event", "orders", "RDS-EVENT-0073"),
        ("RDS DB Instance Event", "orders-2", "RDS-EVENT-0013"),
        ("RDS DB Instance Event", "solo", "RDS-EVENT-0015"),
        ("RDS DB Instance Event", "solo", "RDS-EVENT-0049"),
        ("RDS Blue Green Deployment Event", "bgd-hdqs3ik6vrwgutsn", "RDS-EVENT-0248"),
        ("RDS Blue Green Deployment Event", "bgd-hdqs3ik6vrwgutsn", "RDS-EVENT-0251"),
    ] {
        assert!(matches(pattern, &rds_event(detail_type, source, event_id)), "{detail_type} {event_id} from {source}");
    }
    for (detail_type, event_id) in [
        ("RDS DB Instance Event", "RDS-EVENT-0006"),
        ("RDS Blue Green Deployment Event", "RDS-EVENT-0244"),
        ("RDS DB Snapshot Event", "RDS-EVENT-0071"),
    ] {
        assert!(!matches(pattern, &rds_event(detail_type, "orders", event_id)), "{detail_type} {event_id}");
    }
}

/// Every statement of every policy in the template: role policies (a conditional one as if
/// its condition held), `AWS::IAM::RolePolicy` and `AWS::IAM::ManagedPolicy`.
fn statements(template: &Yaml) -> Vec<(String, Yaml)> {
    let mut found = Vec::new();
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let documents: Vec<&Yaml> = match resource["Type"].as_str().unwrap() {
            "AWS::IAM::Role" => resource["Properties"]["Policies"]
                .as_sequence()
                .map(|policies| policies.iter().map(|p| &when_present(p)["PolicyDocument"]).collect())
                .unwrap_or_default(),
            "AWS::IAM::RolePolicy" | "AWS::IAM::ManagedPolicy" => vec![&resource["Properties"]["PolicyDocument"]],
            _ => continue,
        };
        for statement in documents.into_iter().flat_map(|d| d["Statement"].as_sequence().unwrap()) {
            found.push((format!("{name}/{}", statement["Sid"].as_str().unwrap_or("?")), statement.clone()));
        }
    }
    found
}

/// `!If [Condition, this, !Ref AWS::NoValue]`: `this`.
fn when_present(value: &Yaml) -> &Yaml {
    match value {
        Yaml::Tagged(tagged) if tagged.tag == "!If" => &tagged.value[1],
        other => other,
    }
}

fn strings(value: &Yaml) -> Vec<String> {
    match value {
        Yaml::Sequence(items) => items.iter().flat_map(strings).collect(),
        Yaml::String(text) => vec![text.clone()],
        // `!Sub arn:…`: the string it substitutes; `!Split`/`!GetAtt`: values known once deployed.
        Yaml::Tagged(tagged) if tagged.tag == "!Sub" => strings(&tagged.value),
        Yaml::Tagged(_) => vec!["(deployed)".to_string()],
        other => panic!("unexpected policy value {other:?}"),
    }
}

/// Changes security groups (and their rules), load balancers and their parts, or endpoint
/// services and their connections, or the tags that mark what is whose.
fn mutates_the_chain(action: &str) -> bool {
    let (service, name) = action.split_once(':').unwrap();
    let read = name.starts_with("Describe") || name.starts_with("Get") || name.starts_with("List");
    match service {
        "elasticloadbalancing" => !read,
        "ec2" => {
            !read
                && (name.contains("SecurityGroup")
                    || name.contains("VpcEndpointService")
                    || name.contains("VpcEndpointConnection")
                    || name.ends_with("Tags"))
        }
        _ => false,
    }
}

/// Statements that allow a chain mutation on a wildcard resource with nothing bounding it
/// (a region condition bounds nothing).
fn unbounded(template: &Yaml) -> Vec<String> {
    let mut problems = Vec::new();
    for (where_, statement) in statements(template) {
        if statement["Effect"].as_str() != Some("Allow") {
            continue;
        }
        let actions: Vec<String> = strings(&statement["Action"]).into_iter().filter(|a| mutates_the_chain(a)).collect();
        let wildcard = strings(&statement["Resource"]).iter().any(|resource| resource.contains('*'));
        let keys = statement["Condition"].as_mapping().into_iter().flat_map(|operators| operators.values());
        let keys: Vec<&str> =
            keys.flat_map(|keys| keys.as_mapping().unwrap().keys()).filter_map(Yaml::as_str).collect();
        let bounding = keys.iter().any(|key| *key != "aws:RequestedRegion");
        if !actions.is_empty() && wildcard && !bounding {
            problems.push(format!("{where_}: {actions:?}"));
        }
    }
    problems
}

#[test]
fn no_role_may_change_the_chain_on_a_wildcard_resource_without_a_condition() {
    assert_eq!(unbounded(&template()), Vec::<String>::new());
    // The statement this replaced would be caught.
    let before: Yaml = serde_norway::from_str(
        r#"
Resources:
  FunctionRole:
    Type: AWS::IAM::Role
    Properties:
      Policies:
        - PolicyDocument:
            Statement:
              - Sid: ChangeInboundRulesOfDatabaseGroups
                Effect: Allow
                Action: [ec2:AuthorizeSecurityGroupIngress, ec2:RevokeSecurityGroupIngress]
                Resource: !Sub arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:security-group/*
              - Sid: Regional
                Effect: Allow
                Action: elasticloadbalancing:RegisterTargets
                Resource: "*"
                Condition:
                  StringEquals: {aws:RequestedRegion: us-east-1}
"#,
    )
    .unwrap();
    assert_eq!(unbounded(&before).len(), 2, "{:?}", unbounded(&before));
}

#[test]
fn the_follower_may_read_and_move_this_stacks_targets_only() {
    let template = template();
    let follower: Vec<(String, Yaml)> =
        statements(&template).into_iter().filter(|(where_, _)| where_.starts_with("FollowerRole/")).collect();
    assert!(!follower.is_empty());
    for (where_, statement) in follower {
        for action in strings(&statement["Action"]) {
            let name = action.split_once(':').unwrap().1;
            let reads = ["Describe", "Get", "List"].iter().any(|prefix| name.starts_with(prefix));
            let logs = action.starts_with("logs:");
            let moves = matches!(
                action.as_str(),
                "elasticloadbalancing:RegisterTargets" | "elasticloadbalancing:DeregisterTargets"
            );
            // The fleet report: on the one bus the stack is given, nothing else.
            let reports = action == "events:PutEvents";
            assert!(reads || logs || moves || reports, "{where_} allows {action}");
            if reports {
                let bus = serde_norway::to_string(&statement["Resource"]).unwrap();
                assert_eq!(bus.trim(), "!Ref ReportToEventBus", "{where_}");
            }
            if moves {
                let condition = serde_norway::to_string(&statement["Condition"]).unwrap();
                assert!(condition.contains("aws:ResourceTag/reverse-privatelink:stack-id"), "{where_}: {condition}");
            }
        }
    }
    // And it is what the schedule and the RDS event rule invoke; CloudFormation invokes the builder.
    for rule in ["FollowWriterSchedule", "FollowWriterEvents"] {
        let target = serde_norway::to_string(&template["Resources"][rule]["Properties"]["Targets"]).unwrap();
        assert!(target.contains("Follower.Arn"), "{rule}: {target}");
    }
    for resource in ["ReversePrivateLink", "DatabaseSecurityGroups"] {
        let token = serde_norway::to_string(&template["Resources"][resource]["Properties"]["ServiceToken"]).unwrap();
        assert!(token.contains("Function.Arn"), "{resource}: {token}");
    }
}

#[test]
fn the_stack_tells_the_producer_through_its_own_topic() {
    let template = template();
    let resources = &template["Resources"];
    let text = |value: &Yaml| serde_norway::to_string(value).unwrap();

    // Exactly PrivateLink (for this stack's service) and CloudWatch (for its alarms) may publish.
    let statements =
        resources["NotificationTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"].as_sequence().unwrap();
    let principals: Vec<String> =
        statements.iter().map(|s| text(&s["Principal"]["Service"]).trim().to_string()).collect();
    assert_eq!(principals, ["vpce.amazonaws.com", "cloudwatch.amazonaws.com"]);
    for statement in statements {
        assert_eq!(statement["Action"].as_str(), Some("sns:Publish"));
        let condition = text(&statement["Condition"]);
        assert!(condition.contains("aws:SourceAccount") && condition.contains("aws:SourceArn"), "{condition}");
    }
    assert!(text(&statements[0]["Condition"]).contains("vpc-endpoint-service/${ReversePrivateLink}"));
    let alarms = text(&statements[1]["Condition"]);
    assert!(alarms.contains("PathBrokenAlarm.Arn") && alarms.contains("FollowerFailingAlarm.Arn"), "{alarms}");
    assert!(text(&resources["NotificationEmailSubscription"]).contains("NotificationEmail"));

    // The consumer's connections, on the custom resource's service (re-created with a replacement).
    let notification = &resources["ConsumerConnectionNotification"]["Properties"];
    assert_eq!(text(&notification["ServiceId"]).trim(), "!Ref ReversePrivateLink");
    let events: Vec<&str> =
        notification["ConnectionEvents"].as_sequence().unwrap().iter().filter_map(Yaml::as_str).collect();
    assert_eq!(events, ["Connect", "Accept", "Reject", "Delete"]);
    assert_eq!(text(&notification["ConnectionNotificationArn"]).trim(), "!Ref NotificationTopic");

    // No healthy host, on the chain's own target group and load balancer, from Data.
    let path = &resources["PathBrokenAlarm"]["Properties"];
    assert_eq!(
        (path["Namespace"].as_str(), path["MetricName"].as_str()),
        (Some("AWS/NetworkELB"), Some("HealthyHostCount"))
    );
    let dimensions = text(&path["Dimensions"]);
    assert!(
        dimensions.contains("Name: TargetGroup") && dimensions.contains("ReversePrivateLink.TargetGroupDimension"),
        "{dimensions}"
    );
    assert!(
        dimensions.contains("Name: LoadBalancer") && dimensions.contains("ReversePrivateLink.LoadBalancerDimension"),
        "{dimensions}"
    );
    assert_eq!(number(&path["Threshold"]), 1);
    assert_eq!(path["ComparisonOperator"].as_str(), Some("LessThanThreshold"));
    for actions in ["AlarmActions", "OKActions"] {
        assert_eq!(text(&path[actions]).trim(), "- !Ref NotificationTopic", "{actions}");
    }
    assert!(
        path["AlarmDescription"].as_str().is_some_and(|d| d.contains("DiagnoseCommand"))
            || text(&path["AlarmDescription"]).contains("DiagnoseCommand")
    );

    // The follower's problems, counted from its JSON log.
    let filter = &resources["FollowerProblemsMetricFilter"]["Properties"];
    assert_eq!(text(&filter["LogGroupName"]).trim(), "!Ref FollowerLogGroup");
    let pattern = filter["FilterPattern"].as_str().unwrap();
    assert!(
        pattern.contains("$.fields.action = \"failed\"") && pattern.contains("$.fields.problem = \"zone-not-served\""),
        "{pattern}"
    );
    let follower = &resources["FollowerFailingAlarm"]["Properties"];
    assert_eq!(text(&follower["Namespace"]), text(&filter["MetricTransformations"][0]["MetricNamespace"]));
    assert_eq!(follower["MetricName"], filter["MetricTransformations"][0]["MetricName"]);

    for output in ["NotificationTopicArn", "DiagnoseCommand"] {
        assert!(template["Outputs"].get(output).is_some(), "{output}");
    }
    let command = text(&template["Outputs"]["DiagnoseCommand"]["Value"]);
    assert!(
        command.contains("aws lambda invoke")
            && command.contains("${Function}")
            && command.contains("{\"Diagnose\": {}}"),
        "{command}"
    );
}

/// Whether an alarm comparing the per-period values `values` (None: no data) fires at the end of
/// some period: `datapoints` breaching of the last `periods`, missing data not breaching.
fn fires(values: &[Option<f64>], periods: usize, datapoints: usize, breaching: impl Fn(f64) -> bool) -> Option<usize> {
    (periods..=values.len())
        .find(|end| values[end - periods..*end].iter().filter(|v| v.is_some_and(&breaching)).count() >= datapoints)
}

#[test]
fn the_path_alarm_pages_for_a_broken_path_not_for_a_registration() {
    let template = template();
    let path = &template["Resources"]["PathBrokenAlarm"]["Properties"];
    // ELB publishes one value per load balancer node; a node in a zone without the writer has none healthy.
    assert_eq!(path["Statistic"].as_str(), Some("Maximum"));
    assert_eq!(path["TreatMissingData"].as_str(), Some("notBreaching"), "no data is not a broken path");
    let period = number(&path["Period"]);
    assert_eq!(period, 60);
    let (periods, datapoints) =
        (number(&path["EvaluationPeriods"]) as usize, number(&path["DatapointsToAlarm"]) as usize);
    let broken = |v: f64| v < 1.0;
    // A registration (Create, replacement, failover): up to 180 s without a healthy host, then healthy.
    let mut registration: Vec<Option<f64>> = vec![None, Some(0.0), Some(0.0), Some(0.0)];
    registration.extend([Some(1.0); 10]);
    assert_eq!(fires(&registration, periods, datapoints, broken), None, "a registration pages nobody");
    // A gap in ELB's reporting with a registration around it does not either.
    let gappy = [Some(0.0), None, Some(0.0), Some(0.0), None, Some(1.0), Some(1.0)];
    assert_eq!(fires(&gappy, periods, datapoints, broken), None);
    // A target that stays unhealthy pages within 5 to 6 minutes.
    let dead = vec![Some(0.0); 30];
    let minute = fires(&dead, periods, datapoints, broken).expect("a dead path pages");
    assert!((5..=6).contains(&minute), "paged after {minute} minutes");
}

#[test]
fn the_follower_alarm_fires_at_every_schedule_for_a_lasting_problem_only() {
    let template = template();
    let parameter = &template["Parameters"]["SyncIntervalMinutes"];
    let (min, max) = (number(&parameter["MinValue"]), number(&parameter["MaxValue"]));
    let alarm = &template["Resources"]["FollowerFailingAlarm"]["Properties"];
    let text = |value: &Yaml| serde_norway::to_string(value).unwrap();
    for (field, key) in [("Period", "Period"), ("EvaluationPeriods", "Periods"), ("DatapointsToAlarm", "Runs")] {
        let looked_up = text(&alarm[field]);
        assert!(
            looked_up.contains("FollowerAlarmWindow")
                && looked_up.contains("SyncIntervalMinutes")
                && looked_up.contains(key),
            "{field}: {looked_up}"
        );
    }
    assert_eq!(alarm["TreatMissingData"].as_str(), Some("notBreaching"));
    let windows = &template["Mappings"]["FollowerAlarmWindow"];
    for minutes in min..=max {
        let window = &windows[minutes.to_string().as_str()];
        let (period, periods, runs) =
            (number(&window["Period"]), number(&window["Periods"]) as usize, number(&window["Runs"]) as usize);
        assert_eq!(period, 60 * minutes, "{minutes} min: one period per run");
        assert!(period as usize * periods <= 86_400, "{minutes} min: CloudWatch evaluates at most a day");
        // One value per period: 1 while the problem lasts (logged on every run), 0 on a healthy run.
        // Some runs fall a few seconds into the next period, leaving one without data.
        let problem = |length: usize| -> Vec<Option<f64>> {
            let mut values: Vec<Option<f64>> = vec![Some(0.0); 3];
            for run in 0..length {
                values.push(if run == 1 { None } else { Some(1.0) });
            }
            values.extend([Some(0.0); 3]);
            values
        };
        let breaching = |v: f64| v >= 1.0;
        let lasting = problem(runs + 1);
        let fired = fires(&lasting, periods, runs, breaching);
        assert!(fired.is_some(), "{minutes} min: a problem lasting {} runs must fire", runs + 1);
        assert!(runs as u64 * minutes >= 15 && runs >= 2, "{minutes} min: one failed run or a few minutes page nobody");
        let once = [vec![Some(0.0); 3], vec![Some(1.0)], vec![Some(0.0); 5]].concat();
        assert_eq!(fires(&once, periods, runs, breaching), None, "{minutes} min: a single failed run pages nobody");
        // And not much later than the problem's first quarter-hour (or its first runs).
        let paged_after = (fired.unwrap() - 3) as u64 * minutes;
        assert!(paged_after <= (15 + 2 * minutes).max(3 * minutes), "{minutes} min: paged after {paged_after} minutes");
    }
}
