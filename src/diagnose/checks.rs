//! One chain's checks, link by link, each from what AWS reads now.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, ServiceConfiguration};

use super::{ChainReport, Check};
use crate::aws::Aws;
use crate::chain::health::{self, Path, TargetHealth};
use crate::chain::load_balancer::{self, LoadBalancer};
use crate::chain::network::{self, Zone};
use crate::chain::rules::{self, Rule};
use crate::chain::target_group::{self, TargetGroup};
use crate::chain::{CONSUMER_ZONES_TAG, DATABASE_TAG, PRINCIPALS_TAG, describe_elb_tags, ec2_map, principals_record};
use crate::database::{Databases, Described, Writer};
use crate::error::{Error, Result};
use crate::spec::Database;

const SERVICE: &str = "Endpoint service";
const PRINCIPALS: &str = "Allowed principals";
const CONNECTIONS: &str = "Consumer connections";
const LOAD_BALANCER: &str = "Load balancer";
const ENFORCEMENT: &str = "PrivateLink inbound-rule enforcement";
const LISTENER: &str = "Listener";
const WRITER: &str = "Target is the writer";
const HEALTH: &str = "Target health";
const INGRESS: &str = "Database admits the load balancer";
const EGRESS: &str = "Load balancer may reach the target";

/// Every check of the chain whose endpoint service is `service_id`.
pub async fn chain(aws: &Aws, databases: &Databases, service_id: &str) -> ChainReport {
    let mut report =
        ChainReport { service_id: service_id.to_string(), service_name: String::new(), checks: Vec::new() };
    let service = match service(&aws.ec2, service_id).await {
        Ok(Some(service)) => service,
        Ok(None) => {
            report.checks.push(Check::new(
                SERVICE,
                false,
                "it no longer exists: the consumer's endpoint has nothing to connect to",
            ));
            return report;
        }
        Err(error) => {
            report.checks.push(Check::unread(SERVICE, &error));
            return report;
        }
    };
    report.service_name = service.service_name.clone().unwrap_or_default();
    let state = service.service_state.as_ref().map(|s| s.as_str().to_string()).unwrap_or_default();
    report.checks.push(Check::new(
        SERVICE,
        state == "Available",
        format!("{state}; consumers connect to {}", report.service_name),
    ));
    let recorded = ec2_map(service.tags.as_deref()).get(PRINCIPALS_TAG).cloned();
    let lb_arn = service.network_load_balancer_arns.clone().unwrap_or_default().into_iter().next();
    let (principals, connections, load_balancer) = tokio::join!(
        principals(&aws.ec2, service_id, recorded.as_deref()),
        connections(&aws.ec2, service_id),
        load_balancer_facts(aws, lb_arn.as_deref()),
    );
    report.checks.push(principals);
    report.checks.push(connections);
    let facts = match load_balancer {
        Ok(facts) => facts,
        Err(error) => {
            report.checks.push(Check::unread(LOAD_BALANCER, &error));
            return report;
        }
    };
    let database = facts.database.as_deref().map(Database::parse).and_then(std::result::Result::ok);
    let (writer, health) = tokio::join!(
        async {
            match &database {
                Some(database) => Some(databases.writer_or_settling(database, Duration::ZERO).await),
                None => None,
            }
        },
        async {
            match &facts.target_group {
                Some(tg) => Some(health::read(&aws.elb, &tg.arn, false).await),
                None => None,
            }
        },
    );
    let described = match &writer {
        Some(Ok((described, _))) => Some(described),
        _ => None,
    };
    report.checks.push(load_balancer_check(&facts, described));
    report.checks.push(enforcement(aws, &facts).await);
    report.checks.push(listener(&facts));
    report.checks.push(writer_check(
        &facts,
        writer.as_ref().map(|w| w.as_ref().map(|(_, writer)| writer)),
        health.as_ref(),
    ));
    let database_groups: BTreeSet<String> =
        described.map(|d| d.security_groups.iter().cloned().collect()).unwrap_or_default();
    report.checks.push(health_check(&facts, health.as_ref(), &database_groups));
    report.checks.push(egress(aws, &facts, health.as_ref(), &database_groups).await);
    report.checks.push(ingress(aws, &facts, &database_groups, database.as_ref()).await);
    report
}

async fn service(ec2: &aws_sdk_ec2::Client, service_id: &str) -> Result<Option<ServiceConfiguration>> {
    match ec2.describe_vpc_endpoint_service_configurations().service_ids(service_id).send().await {
        Ok(answer) => Ok(answer.service_configurations.unwrap_or_default().into_iter().next()),
        Err(err) if crate::error::code_of(&err).is_some_and(|c| c.starts_with("InvalidVpcEndpointService")) => Ok(None),
        Err(err) => Err(Error::aws("reading the endpoint service (DescribeVpcEndpointServiceConfigurations)")(err)),
    }
}

async fn principals(ec2: &aws_sdk_ec2::Client, service_id: &str, recorded: Option<&str>) -> Check {
    let allowed = ec2.describe_vpc_endpoint_service_permissions().service_id(service_id).send().await;
    let allowed: BTreeSet<String> = match allowed {
        Ok(answer) => answer.allowed_principals.unwrap_or_default().into_iter().filter_map(|p| p.principal).collect(),
        Err(err) => {
            return Check::unread(
                PRINCIPALS,
                &Error::aws("reading the allowed principals (DescribeVpcEndpointServicePermissions)")(err),
            );
        }
    };
    let list = allowed.iter().cloned().collect::<Vec<_>>().join(", ");
    if allowed.is_empty() {
        return Check::new(
            PRINCIPALS,
            false,
            "none: no consumer can connect; update the stack to allow AllowedPrincipals again",
        );
    }
    match recorded {
        Some(recorded) if recorded == principals_record(&allowed) => {
            Check::new(PRINCIPALS, true, format!("exactly the consumer's, as the stack asks: {list}"))
        }
        Some(recorded) if !recorded.starts_with("fnv:") => {
            let asked: BTreeSet<String> = recorded.split_whitespace().map(str::to_string).collect();
            let missing: Vec<&String> = asked.difference(&allowed).collect();
            let extra: Vec<&String> = allowed.difference(&asked).collect();
            Check::new(
                PRINCIPALS,
                false,
                format!(
                    "allows {list}, not what the stack asks (missing: {missing:?}; not asked for: {extra:?}), changed outside the stack; update the stack to set them back"
                ),
            )
        }
        Some(_) => Check::new(
            PRINCIPALS,
            false,
            format!("allows {list}, not what the stack asks; update the stack to set them back"),
        ),
        None => Check::new(
            PRINCIPALS,
            true,
            format!("{list} (the stack recorded none to compare with; its next update does)"),
        ),
    }
}

async fn connections(ec2: &aws_sdk_ec2::Client, service_id: &str) -> Check {
    let answer = ec2
        .describe_vpc_endpoint_connections()
        .filters(Filter::builder().name("service-id").values(service_id).build())
        .send()
        .await;
    let connections = match answer {
        Ok(answer) => answer.vpc_endpoint_connections.unwrap_or_default(),
        Err(err) => {
            return Check::unread(
                CONNECTIONS,
                &Error::aws("reading the endpoint connections (DescribeVpcEndpointConnections)")(err),
            );
        }
    };
    if connections.is_empty() {
        return Check::new(CONNECTIONS, true, "no consumer has connected yet");
    }
    let mut ok = true;
    let described: Vec<String> = connections
        .iter()
        .map(|c| {
            let state = c.vpc_endpoint_state.as_ref().map(|s| s.as_str().to_string()).unwrap_or_default();
            ok &= !matches!(state.to_ascii_lowercase().as_str(), "rejected" | "failed" | "expired");
            format!(
                "{} of account {}: {state}",
                c.vpc_endpoint_id.as_deref().unwrap_or("?"),
                c.vpc_endpoint_owner.as_deref().unwrap_or("?")
            )
        })
        .collect();
    Check::new(CONNECTIONS, ok, described.join("; "))
}

/// What the rest of the checks read about the load balancer's side.
struct Facts {
    load_balancer: Option<LoadBalancer>,
    lb_tags: std::collections::BTreeMap<String, String>,
    listeners: Vec<aws_sdk_elasticloadbalancingv2::types::Listener>,
    target_group: Option<TargetGroup>,
    database: Option<String>,
    zones: std::collections::BTreeMap<String, Zone>,
}

async fn load_balancer_facts(aws: &Aws, arn: Option<&str>) -> Result<Facts> {
    let Some(arn) = arn else {
        return Ok(Facts {
            load_balancer: None,
            lb_tags: Default::default(),
            listeners: Vec::new(),
            target_group: None,
            database: None,
            zones: Default::default(),
        });
    };
    let elb = &aws.elb;
    let (lbs, listeners, zones) = tokio::try_join!(
        load_balancer::by_arns(elb, vec![arn.to_string()]),
        async {
            elb.describe_listeners()
                .load_balancer_arn(arn)
                .send()
                .await
                .map(|a| a.listeners.unwrap_or_default())
                .map_err(Error::aws("reading the listeners (DescribeListeners)"))
        },
        network::region_zones(&aws.ec2),
    )?;
    let forwarded: Option<String> =
        listeners.iter().flat_map(|l| l.default_actions()).find_map(|action| action.target_group_arn.clone());
    let target_group = match &forwarded {
        Some(tg) => target_group::describe(elb, vec![tg.clone()], Vec::new()).await?.into_iter().next(),
        None => None,
    };
    let arns: Vec<String> =
        std::iter::once(arn.to_string()).chain(target_group.iter().map(|tg| tg.arn.clone())).collect();
    let mut tags = describe_elb_tags(elb, arns).await?;
    let database = target_group.as_ref().and_then(|tg| tags.get(&tg.arn)?.get(DATABASE_TAG).cloned());
    let by_name = zones.into_values().map(|zone| (zone.name.clone(), zone)).collect();
    Ok(Facts {
        load_balancer: lbs.into_iter().next(),
        lb_tags: tags.remove(arn).unwrap_or_default(),
        listeners,
        target_group,
        database,
        zones: by_name,
    })
}

fn load_balancer_check(facts: &Facts, described: Option<&Described>) -> Check {
    let Some(lb) = &facts.load_balancer else {
        return Check::new(LOAD_BALANCER, false, "the endpoint service has no load balancer, or it no longer exists");
    };
    let served: BTreeSet<&str> = lb.zones.values().map(String::as_str).collect();
    let shown: Vec<String> = served
        .iter()
        .map(|name| match facts.zones.get(*name) {
            Some(zone) => format!("{name} ({})", zone.id),
            None => name.to_string(),
        })
        .collect();
    let served_ids: BTreeSet<&str> =
        served.iter().filter_map(|name| Some(facts.zones.get(*name)?.id.as_str())).collect();
    let mut problems = Vec::new();
    if !lb.active {
        problems.push("it is not active".to_string());
    }
    if !lb.internal {
        problems.push("it is not internal".to_string());
    }
    if let Some(consumer) = facts.lb_tags.get(CONSUMER_ZONES_TAG) {
        let missing: Vec<&str> = consumer.split_whitespace().filter(|id| !served_ids.contains(id)).collect();
        if !missing.is_empty() {
            problems.push(format!("it does not serve the consumer's zones {}", missing.join(", ")));
        }
    }
    if let Some(described) = described {
        let missing: BTreeSet<String> = described
            .placements
            .iter()
            .filter(|p| !served.contains(p.zone.as_str()))
            .map(|p| format!("{} ({})", p.zone, p.instance))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "it does not serve the zones of the database's instances {} (a failover there would cut the path)",
                missing.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let state = format!(
        "{}, {}, in {}",
        if lb.active { "active" } else { "not active" },
        if lb.internal { "internal" } else { "internet-facing" },
        shown.join(", ")
    );
    match problems.is_empty() {
        true => Check::new(LOAD_BALANCER, true, state),
        false => Check::new(LOAD_BALANCER, false, format!("{state}: {}", problems.join("; "))),
    }
}

async fn enforcement(aws: &Aws, facts: &Facts) -> Check {
    let Some(lb) = &facts.load_balancer else { return Check::new(ENFORCEMENT, false, "no load balancer to check") };
    if lb.security_groups.is_empty() {
        return Check::new(ENFORCEMENT, true, "the load balancer has no security groups, so nothing is enforced");
    }
    match lb.enforce_inbound_on_private_link {
        Some(false) => Check::new(
            ENFORCEMENT,
            true,
            "off: PrivateLink traffic needs no inbound rule; the allowed principals decide who connects",
        ),
        None => Check::new(ENFORCEMENT, false, "AWS did not report it"),
        Some(true) => {
            let port = facts.target_group.as_ref().map_or(0, |tg| tg.port);
            let groups = lb.security_groups.iter().cloned();
            let found = rules::describe(&aws.ec2, vec![rules::filter("group-id", groups)]).await;
            let list = lb.security_groups.iter().cloned().collect::<Vec<_>>().join(", ");
            match found {
                Err(error) => Check::unread(ENFORCEMENT, &error),
                Ok(found) if found.iter().any(|r| !r.egress && r.admits_tcp(port)) => Check::new(
                    ENFORCEMENT,
                    true,
                    format!(
                        "on, as the stack asks: PrivateLink traffic must pass the inbound rules of {list}, which admit TCP {port} from some sources; the consumer's client addresses must be among them"
                    ),
                ),
                Ok(_) => Check::new(
                    ENFORCEMENT,
                    false,
                    format!(
                        "on, and no inbound rule of {list} admits TCP {port}: every consumer connection is dropped; set it off, or allow the consumer's sources (LoadBalancerClients)"
                    ),
                ),
            }
        }
    }
}

fn listener(facts: &Facts) -> Check {
    let Some(tg) = &facts.target_group else {
        return Check::new(LISTENER, false, "no listener forwards to a target group");
    };
    let forwards = facts.listeners.iter().any(|l| {
        l.port == Some(i32::from(tg.port))
            && l.default_actions().iter().any(|a| a.target_group_arn.as_deref() == Some(tg.arn.as_str()))
    });
    match forwards {
        true => Check::new(LISTENER, true, format!("TCP {} forwards to {}", tg.port, tg.arn)),
        false => Check::new(LISTENER, false, format!("no listener on {} forwards to {}", tg.port, tg.arn)),
    }
}

fn registered(health: &[TargetHealth]) -> BTreeSet<Ipv4Addr> {
    health.iter().filter(|t| t.state != "draining").filter_map(|t| t.id.parse().ok()).collect()
}

fn writer_check(
    facts: &Facts,
    writer: Option<std::result::Result<&std::result::Result<Writer, String>, &Error>>,
    health: Option<&Result<Vec<TargetHealth>>>,
) -> Check {
    let health = match health {
        Some(Ok(health)) => health,
        Some(Err(error)) => return Check::unread(WRITER, error),
        None => return Check::new(WRITER, false, "no target group to check"),
    };
    let now = registered(health).into_iter().map(|ip| ip.to_string()).collect::<Vec<_>>().join(", ");
    let Some(database) = &facts.database else {
        return Check::new(
            WRITER,
            true,
            format!("fixed addresses {now} (not followed; update the stack to move them)"),
        );
    };
    match writer {
        None => Check::new(
            WRITER,
            false,
            format!("the target group follows {database:?}, which is not a database the function can follow"),
        ),
        Some(Err(error)) => Check::unread(WRITER, error),
        Some(Ok(Err(why))) => Check::new(
            WRITER,
            false,
            format!("registered {now}; the writer of {database} cannot be told right now: {why}"),
        ),
        Some(Ok(Ok(writer))) if registered(health) == BTreeSet::from([writer.address]) => Check::new(
            WRITER,
            true,
            format!(
                "registered {now}, the writer {} of {database} now",
                writer.instance.as_deref().unwrap_or("address")
            ),
        ),
        Some(Ok(Ok(writer))) => Check::new(
            WRITER,
            false,
            format!(
                "registered {now}, but the writer of {database} is now {} at {}: a failover the follower has not followed yet (it checks every SyncIntervalMinutes; see its log for `failed`)",
                writer.instance.as_deref().unwrap_or("the name"),
                writer.address
            ),
        ),
    }
}

/// Health checks and traffic obey the load balancer's outbound rules (ELB user guide,
/// "Security groups for your Network Load Balancer"): each registered target must be let
/// out to, by address or by one of the database's groups.
async fn egress(
    aws: &Aws,
    facts: &Facts,
    health: Option<&Result<Vec<TargetHealth>>>,
    database_groups: &BTreeSet<String>,
) -> Check {
    let (Some(lb), Some(tg), Some(Ok(health))) = (&facts.load_balancer, &facts.target_group, health) else {
        return Check::new(EGRESS, false, "no load balancer or targets to check");
    };
    if lb.security_groups.is_empty() {
        return Check::new(
            EGRESS,
            true,
            "the load balancer has no security groups: its outbound traffic is not filtered",
        );
    }
    let found = rules::describe(&aws.ec2, vec![rules::filter("group-id", lb.security_groups.iter().cloned())]).await;
    let found = match found {
        Ok(found) => found,
        Err(error) => return Check::unread(EGRESS, &error),
    };
    let out: Vec<&Rule> = found.iter().filter(|r| r.egress && r.admits_tcp(tg.port)).collect();
    let reaches = |ip: Ipv4Addr| {
        out.iter().any(|r| {
            r.cidr.as_deref().is_some_and(|cidr| cidr_contains(cidr, ip))
                || r.source_group.as_ref().is_some_and(|g| database_groups.contains(g))
        })
    };
    let missing: Vec<String> =
        registered(health).into_iter().filter(|ip| !reaches(*ip)).map(|ip| ip.to_string()).collect();
    let groups = lb.security_groups.iter().cloned().collect::<Vec<_>>().join(", ");
    match missing.is_empty() {
        true => Check::new(
            EGRESS,
            true,
            format!("the outbound rules of {groups} let it reach every target on TCP {}", tg.port),
        ),
        false => Check::new(
            EGRESS,
            false,
            format!(
                "no outbound rule of {groups} lets the load balancer reach {} on TCP {}, and its health checks and traffic obey them: add an outbound rule for TCP {} to each address (as /32) to one of these groups",
                missing.join(", "),
                tg.port,
                tg.port
            ),
        ),
    }
}

/// Whether the IPv4 block `cidr` ("10.0.0.0/16") holds `ip`.
fn cidr_contains(cidr: &str, ip: Ipv4Addr) -> bool {
    let Some((net, len)) = cidr.split_once('/') else { return false };
    let (Ok(net), Ok(len)) = (net.parse::<Ipv4Addr>(), len.parse::<u32>()) else { return false };
    let mask = u32::MAX.checked_shl(32 - len.min(32)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn health_check(
    facts: &Facts,
    health: Option<&Result<Vec<TargetHealth>>>,
    database_groups: &BTreeSet<String>,
) -> Check {
    let health = match health {
        Some(Ok(health)) => health,
        Some(Err(error)) => return Check::unread(HEALTH, error),
        None => return Check::new(HEALTH, false, "no target group to check"),
    };
    if health.is_empty() {
        return Check::new(HEALTH, false, "no target is registered: the load balancer forwards to nothing");
    }
    let sick: Vec<&TargetHealth> = health.iter().filter(|t| t.state != "healthy" && t.state != "draining").collect();
    if sick.is_empty() {
        return Check::new(HEALTH, true, health::describe(health));
    }
    let no_groups = BTreeSet::new();
    let path = Path {
        port: facts.target_group.as_ref().map_or(0, |tg| tg.port),
        load_balancer_groups: facts.load_balancer.as_ref().map_or(&no_groups, |lb| &lb.security_groups),
        load_balancer_cidrs: Vec::new(),
        database_groups,
    };
    Check::new(HEALTH, false, sick.iter().map(|t| health::diagnose(t, &path)).collect::<Vec<_>>().join("; "))
}

async fn ingress(aws: &Aws, facts: &Facts, database_groups: &BTreeSet<String>, database: Option<&Database>) -> Check {
    let port = facts.target_group.as_ref().map_or(0, |tg| tg.port);
    let lb_groups = facts.load_balancer.as_ref().map(|lb| lb.security_groups.clone()).unwrap_or_default();
    if !matches!(database, Some(Database::Identifier(_))) || database_groups.is_empty() {
        return Check::new(
            INGRESS,
            true,
            "not checked: the database's security groups are not known here (fixed addresses or a DNS name); the target health above tells whether it answers",
        );
    }
    if lb_groups.is_empty() {
        return Check::new(
            INGRESS,
            true,
            "not checked: the load balancer has no security group to be admitted by; the target health above tells",
        );
    }
    let found: Result<Vec<Rule>> =
        rules::describe(&aws.ec2, vec![rules::filter("group-id", database_groups.iter().map(String::as_str))]).await;
    let found = match found {
        Ok(found) => found,
        Err(error) => return Check::unread(INGRESS, &error),
    };
    let admitting: Vec<&Rule> = found
        .iter()
        .filter(|r| !r.egress && r.admits_tcp(port))
        .filter(|r| {
            r.source_group.as_ref().is_some_and(|g| lb_groups.contains(g)) || r.cidr.as_deref() == Some("0.0.0.0/0")
        })
        .collect();
    let groups = database_groups.iter().cloned().collect::<Vec<_>>().join(", ");
    let sources = lb_groups.iter().cloned().collect::<Vec<_>>().join(", ");
    match admitting.first() {
        Some(rule) => {
            Check::new(INGRESS, true, format!("{} admits {sources} on TCP {port} ({})", rule.group_id, rule.id))
        }
        None => Check::new(
            INGRESS,
            false,
            format!(
                "no inbound rule of {groups} (the database's) admits {sources} (the load balancer's) on TCP {port}: add one, or update the stack with AllowDatabaseIngress"
            ),
        ),
    }
}
