//! Following the writer: the schedule and RDS events both mean "check every
//! chain's writer now". Level-triggered: the run always asks RDS and DNS who the
//! writer is and never trusts an address in the event; the trigger only decides
//! how long to wait for DNS to settle and goes into the logs. Everything a run
//! needs is in the target groups' tags, so the function keeps no other state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde_json::Value;
use tokio::time::Instant;
use tracing::{Instrument, error, info, info_span, warn};

mod fleet;
mod orphans;

pub use orphans::INTERVAL_ENV;

use crate::aws::Aws;
use crate::chain::network::{self, VpcBlocks};
use crate::chain::target_group::{self, Registered};
use crate::chain::{self, ANSWERED_TAG, DATABASE_TAG, GENERATION_TAG, LOGICAL_ID_TAG, REPORT_TO_TAG, STACK_ID_TAG};
use crate::cloudformation::{ResourceStatus, StatusReader};
use crate::database::{Databases, Described, Kind, Writer};
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::fleet::Reporter;
use crate::spec::{Database, EventBus};

/// Limits the sync to the chains of one stack (the template sets it to its own
/// stack ID): the function's role may change only those.
pub const STACK_ENV: &str = "REVERSE_PRIVATELINK_STACK_ID";

/// After a failover event, how long a run waits for RDS and DNS to agree on the
/// new writer ("DNS propagation may take a few minutes", RDS-EVENT-0015).
const EVENT_PATIENCE: Duration = Duration::from_secs(120);

/// Why a sync runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    /// An RDS event (`detail.EventID`, `detail.SourceIdentifier`).
    Rds {
        event_id: String,
        source: String,
        kind: RdsSource,
    },
}

/// What an RDS event is about (its `detail-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RdsSource {
    Cluster,
    Instance,
    /// A Blue/Green switchover: its source is the deployment (`bgd-…`), not a database.
    BlueGreen,
}

/// Instance events after which only the address changing tells that DNS caught up
/// with a failover, when the database has no other member to compare with: Multi-AZ
/// failover started (0013), completed with DNS still propagating (0015), completed
/// (0049), activation (0050, 0051), recovered (0065) (RDS user guide, "Amazon RDS
/// event categories and event messages").
const INSTANCE_FAILOVER_EVENTS: [&str; 6] =
    ["RDS-EVENT-0013", "RDS-EVENT-0015", "RDS-EVENT-0049", "RDS-EVENT-0050", "RDS-EVENT-0051", "RDS-EVENT-0065"];

/// How a run waits for one chain's writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Take RDS and DNS as they are now; the next scheduled run asks again.
    None,
    /// Wait for RDS and DNS to agree on the writer.
    Settle,
    /// Also wait until the address differs from the registered one.
    Move,
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Schedule => f.write_str("schedule"),
            Trigger::Rds { event_id, source, .. } => write!(f, "{event_id} from {source}"),
        }
    }
}

impl Trigger {
    /// The trigger an EventBridge event stands for, or None for events this function does not act on.
    pub fn of(event: &EventBridgeEvent<Value>) -> Option<Trigger> {
        let text = |key: &str| event.detail.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        let kind = match (event.source.as_str(), event.detail_type.as_str()) {
            ("aws.events", "Scheduled Event") => return Some(Trigger::Schedule),
            ("aws.rds", "RDS DB Cluster Event") => RdsSource::Cluster,
            ("aws.rds", "RDS DB Instance Event") => RdsSource::Instance,
            ("aws.rds", "RDS Blue Green Deployment Event") => RdsSource::BlueGreen,
            _ => return None,
        };
        Some(Trigger::Rds { event_id: text("EventID"), source: event_source(&event.detail), kind })
    }

    /// How to wait for the writer of `database`. The event rule matches every
    /// failover event of the account and region (an identifier typed in another case,
    /// a member standing for its cluster and a Blue/Green deployment all carry other
    /// identifiers), so an event about another database is just a scheduled run here.
    fn wait_for(&self, database: &Database, described: &Described) -> Wait {
        let Trigger::Rds { event_id, source, kind } = self else { return Wait::None };
        if *kind == RdsSource::BlueGreen {
            // Which database switched over cannot be told from the event; the switched
            // database keeps its names, so only a new address tells.
            return Wait::Move;
        }
        if !is_about(source, database, described) {
            return Wait::None;
        }
        let alone = described.members.len() <= 1;
        match *kind == RdsSource::Instance && alone && INSTANCE_FAILOVER_EVENTS.contains(&event_id.as_str()) {
            true => Wait::Move,
            false => Wait::Settle,
        }
    }
}

/// The identifier of what an RDS event is about, as AWS sends it (RDS user guide, "Amazon
/// RDS event examples" in "Creating a rule that triggers on an Amazon RDS event"): the
/// last segment of `detail.SourceArn` (`arn:aws:rds:…:db:<id>`, `…:cluster:<id>`), else
/// `detail.SourceIdentifier`, which such events carry as `rds:<id>`.
fn event_source(detail: &Value) -> String {
    let text = |key: &str| detail.get(key).and_then(Value::as_str).map(str::trim).filter(|t| !t.is_empty());
    if let Some(id) = text("SourceArn").and_then(|arn| arn.rsplit(':').next()).filter(|id| !id.is_empty()) {
        return id.to_string();
    }
    let id = text("SourceIdentifier").unwrap_or_default();
    match id.get(..4) {
        Some(prefix) if prefix.eq_ignore_ascii_case("rds:") => id[4..].to_string(),
        _ => id.to_string(),
    }
}

/// Whether an event from `source` is about `database`: the identifier as typed in any
/// case, the cluster a member stands for, any of its instances, or the first label of
/// a DNS name (an endpoint's is its cluster or instance).
fn is_about(source: &str, database: &Database, described: &Described) -> bool {
    let same = |name: &str| !name.is_empty() && name.eq_ignore_ascii_case(source);
    let given = database.as_given();
    let own = match &described.kind {
        Kind::Cluster(id) | Kind::Instance(id) => same(id),
        Kind::DnsName(_) => false,
    };
    same(given)
        || same(given.split('.').next().unwrap_or_default())
        || own
        || described.members.iter().any(|m| same(&m.instance))
}

/// One chain that follows a database: its target group and the database as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    pub target_group_arn: String,
    pub database: String,
    pub owner: chain::Owner,
    /// The service CloudFormation holds for the chain, when known.
    pub service_id: Option<String>,
    /// Where its target moves are reported (the chain's `ReportToEventBus`).
    pub report_to: Option<EventBus>,
}

impl Follower {
    fn from_tags(
        target_group_arn: String,
        tags: &BTreeMap<String, String>,
        service_id: Option<String>,
    ) -> Option<Self> {
        let tag = |key: &str| tags.get(key).cloned().unwrap_or_default();
        Some(Follower {
            database: tags.get(DATABASE_TAG)?.clone(),
            target_group_arn,
            owner: chain::Owner { stack_id: tag(STACK_ID_TAG), logical_id: tag(LOGICAL_ID_TAG) },
            service_id: service_id.or_else(|| tags.get(ANSWERED_TAG).cloned()),
            // A tag that is no bus (set by hand) reports nowhere.
            report_to: tags.get(REPORT_TO_TAG).and_then(|arn| EventBus::parse(arn).ok()),
        })
    }
}

/// What one run did to one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Unchanged,
    Retargeted,
    Failed(String),
}

/// The (logical ID, generation) a resource's tags name.
fn chain_of(tags: &BTreeMap<String, String>) -> (String, String) {
    let tag = |key: &str| tags.get(key).cloned().unwrap_or_default();
    (tag(LOGICAL_ID_TAG), tag(GENERATION_TAG))
}

/// Keeps every chain's target on its database's writer.
#[derive(Clone, Debug)]
pub struct Sync {
    aws: Aws,
    databases: Databases,
    stack_id: Option<String>,
    fleet: Reporter,
}

impl Sync {
    pub fn new(aws: Aws, databases: Databases) -> Self {
        let stack_id = std::env::var(STACK_ENV).ok().filter(|s| !s.is_empty());
        let fleet = Reporter::new(aws.events.clone());
        Sync { aws, databases, stack_id, fleet }
    }

    /// Handles one EventBridge event. Never fails: one chain's trouble is logged
    /// and the others still sync; the schedule is the retry.
    pub async fn serve(&self, event: &EventBridgeEvent<Value>, deadline: Deadline) {
        let Some(trigger) = Trigger::of(event) else {
            warn!(source = %event.source, detail_type = %event.detail_type, "ignoring an EventBridge event that is neither the schedule nor an RDS event");
            return;
        };
        let span = info_span!("sync", trigger = %trigger);
        // About once an hour, a scheduled run also looks for chains CloudFormation dropped.
        let minute = event.time.map(|time| (time.timestamp().rem_euclid(3600) / 60) as u32);
        let hourly = trigger == Trigger::Schedule
            && minute.is_some_and(|minute| orphans::first_run_of_the_hour(minute, orphans::interval_minutes()));
        let dropped = async {
            let (Some(stack_id), true) = (&self.stack_id, hourly) else { return };
            let status = StatusReader::new(self.aws.cloudformation.clone());
            let until = deadline.work_until;
            match tokio::time::timeout_at(until, orphans::report(&self.aws, &status, stack_id)).await {
                Ok(Err(error)) => error!(%error, "could not look for chains CloudFormation dropped"),
                Err(_) => error!("the deadline came before the chains CloudFormation dropped could be looked for"),
                Ok(Ok(_)) => {}
            }
        };
        async { tokio::join!(self.run(&trigger, deadline), dropped) }.instrument(span).await;
    }

    /// Syncs every chain; returns what it did to each, by target group.
    pub async fn run(&self, trigger: &Trigger, deadline: Deadline) -> BTreeMap<String, Action> {
        let followers = match tokio::time::timeout_at(deadline.work_until, self.followers()).await {
            Ok(Ok(followers)) => followers,
            Ok(Err(error)) => {
                error!(%error, "could not find the chains that follow a database");
                return BTreeMap::new();
            }
            Err(_) => {
                error!("the deadline came before the chains could be listed");
                return BTreeMap::new();
            }
        };
        info!(chains = followers.len(), "syncing the database writers");
        let patience = EVENT_PATIENCE.min(deadline.work_until.saturating_duration_since(Instant::now()));
        let runs = followers.iter().map(|follower| async move {
            let started = Instant::now();
            let outcome =
                tokio::time::timeout_at(deadline.work_until, self.sync_one(follower, trigger, patience)).await;
            let outcome = outcome.unwrap_or_else(|_| Err(Error::Timeout("syncing the writer".into())));
            let millis = started.elapsed().as_millis() as u64;
            let moved = match &outcome {
                Ok(Outcome { old, writer, .. }) if *old != BTreeSet::from([writer.address]) => {
                    Some((joined(old), writer.address.to_string(), writer.instance.clone().unwrap_or_default()))
                }
                _ => None,
            };
            let action = report(follower, outcome, millis);
            if let (Some(moved), Some(bus)) = (moved, &follower.report_to) {
                let told = Box::pin(fleet::tell(&self.aws, &self.fleet, follower, bus, moved));
                if tokio::time::timeout_at(deadline.work_until, told).await.is_err() {
                    warn!(target_group = %follower.target_group_arn, "the deadline came before the move could be reported to the fleet");
                }
            }
            (follower.target_group_arn.clone(), action)
        });
        futures::future::join_all(runs).await.into_iter().collect()
    }

    /// The target groups that carry a database tag (of this stack, when the function
    /// knows it) of chains CloudFormation holds. The tag index only proposes them: their
    /// tags are read from the target groups themselves, as the index can lag behind a
    /// change of `Database`. A chain carries the answered mark once CloudFormation showed
    /// it took it; one without (the mark not written yet, or never, if CloudFormation could
    /// not be asked then) is followed if CloudFormation says it holds it now.
    pub async fn followers(&self) -> Result<Vec<Follower>> {
        let filters = [(DATABASE_TAG, None), (STACK_ID_TAG, self.stack_id.as_deref())];
        let filters = if self.stack_id.is_some() { &filters[..] } else { &filters[..1] };
        let indexed = chain::tagged(&self.aws.tagging, filters, &["elasticloadbalancing:targetgroup"])
            .await
            .map_err(Error::aws("finding the chains that follow a database (tag:GetResources)"))?;
        let arns = indexed.into_iter().map(|(arn, _)| arn).collect();
        let tagged = chain::describe_elb_tags(&self.aws.elb, arns).await?;
        let ours = |tags: &BTreeMap<String, String>| {
            self.stack_id.as_ref().is_none_or(|stack_id| tags.get(STACK_ID_TAG) == Some(stack_id))
        };
        let (marked, unmarked): (Vec<_>, Vec<_>) =
            tagged.into_iter().filter(|(_, tags)| ours(tags)).partition(|(_, tags)| tags.contains_key(ANSWERED_TAG));
        let held = self.held_unmarked(&unmarked).await;
        let held_unmarked = unmarked.into_iter().filter_map(|(arn, tags)| {
            let service_id = held.get(&chain_of(&tags))?.clone();
            Follower::from_tags(arn, &tags, Some(service_id))
        });
        Ok(marked
            .into_iter()
            .filter_map(|(arn, tags)| Follower::from_tags(arn, &tags, None))
            .chain(held_unmarked)
            .collect())
    }

    /// Of the unmarked chains, (logical ID, generation) of those CloudFormation holds now, with
    /// the service ID it holds, asked once per logical ID. A chain a request is still building
    /// is not held yet (a Create's resource has no physical ID; a replacement's holds the old
    /// chain); without the stack, or an answer from CloudFormation, none is.
    async fn held_unmarked(
        &self,
        unmarked: &[(String, BTreeMap<String, String>)],
    ) -> BTreeMap<(String, String), String> {
        let Some(stack_id) = &self.stack_id else { return BTreeMap::new() };
        let logical_ids: BTreeSet<String> = unmarked.iter().map(|(_, tags)| chain_of(tags).0).collect();
        let status = StatusReader::new(self.aws.cloudformation.clone());
        let asked = logical_ids.into_iter().map(|logical_id| {
            let status = &status;
            async move {
                let held = status.resource(stack_id, &logical_id).await;
                // A chain being deleted is no longer followed.
                if matches!(&held, ResourceStatus::Settled { status, .. } if status.starts_with("DELETE")) {
                    return None;
                }
                let owner = chain::Owner { stack_id: stack_id.clone(), logical_id: logical_id.clone() };
                let service = chain::Chain::new(&self.aws, owner).service(held.physical_id()?).await;
                match service {
                    Ok(service) => service.map(|service| ((logical_id, service.generation), service.id)),
                    Err(error) => {
                        warn!(%error, %logical_id, "could not read the endpoint service CloudFormation holds");
                        None
                    }
                }
            }
        });
        let held: BTreeMap<_, _> = futures::future::join_all(asked).await.into_iter().flatten().collect();
        for (logical_id, generation) in held.keys() {
            info!(%logical_id, %generation, "following a chain CloudFormation holds though it carries no answered mark yet");
        }
        held
    }

    async fn sync_one(&self, follower: &Follower, trigger: &Trigger, patience: Duration) -> Result<Outcome> {
        let database = Database::parse(&follower.database).map_err(|message| Error::Property {
            property: "Database",
            message: format!("the target group's {DATABASE_TAG} tag: {message}"),
        })?;
        let elb = &self.aws.elb;
        let arn = &follower.target_group_arn;
        let (described, current) =
            tokio::try_join!(self.databases.describe(&database), target_group::registered(elb, arn))?;
        let old = addresses(&current);
        let wait = trigger.wait_for(&database, &described);
        let (patience, moved_from) = match wait {
            Wait::None => (Duration::ZERO, BTreeSet::new()),
            Wait::Settle => (patience, BTreeSet::new()),
            Wait::Move => (patience, old.clone()),
        };
        let (_, writer) = self.databases.settle(&database, described, patience, &moved_from).await?;
        if old == BTreeSet::from([writer.address]) {
            // A writer in a zone the load balancer lacks is said on every run while it lasts:
            // the stack's alarm counts runs in a row.
            let problem = match &writer.zone {
                Some(_) => zone_not_served(&writer, &self.target_group(arn, false).await?.zones),
                None => None,
            };
            let unmoved = (wait == Wait::Move).then(|| {
                Problem::Unmoved(format!(
                    "the writer's address stayed {} for {}s after the event; leaving the target (the schedule checks again)",
                    writer.address,
                    patience.as_secs()
                ))
            });
            return Ok(Outcome { old, writer, problem: problem.or(unmoved) });
        }
        let group = self.target_group(arn, true).await?;
        let problem = zone_not_served(&writer, &group.zones);
        let writer = self.move_targets(&database, arn, &group, &current, writer).await?;
        Ok(Outcome { old, writer, problem })
    }

    /// Registers `writer`, asks again who the writer is, and deregisters the rest only
    /// if it still is: two overlapping runs, one of which read RDS before a failover,
    /// never undo each other. If it moved meanwhile, the run follows it (a few times at
    /// most, then leaves the rest to the next run).
    async fn move_targets(
        &self,
        database: &Database,
        arn: &str,
        group: &TargetGroupFacts,
        current: &Registered,
        mut writer: Writer,
    ) -> Result<Writer> {
        const ROUNDS: usize = 3;
        let elb = &self.aws.elb;
        // What is registered as far as this run knows: what it read, and what it registered since.
        let mut current = current.clone();
        for round in 1..=ROUNDS {
            // The follower's role lets it move targets, and nothing else: never to an address
            // outside the target group's VPC, which only someone's tags could have asked for.
            if !group.blocks.contains(writer.address) {
                return Err(Error::Unexpected {
                    step: "moving the target",
                    message: format!(
                        "the writer's address {} is outside the target group's VPC ({}); the writer sync registers only addresses inside it (update the stack to register it)",
                        writer.address,
                        group.blocks.cidrs().join(", ")
                    ),
                });
            }
            let wanted = BTreeSet::from([writer.address]);
            let targets = target_group::Targets { ips: &wanted, port: group.port, in_vpc: &|_| true };
            target_group::register(elb, arn, &current, &targets, false).await?;
            current.insert((writer.address.to_string(), i32::from(group.port)));
            let (_, now) = self.databases.writer(database, Duration::ZERO).await?;
            if now.address == writer.address {
                target_group::deregister_others(elb, arn, &current, &targets).await?;
                return Ok(writer);
            }
            warn!(registered = %writer.address, writer = %now.address, round, "the writer moved again while the target moved; following it");
            writer = now;
        }
        warn!(writer = %writer.address, "the writer kept moving; the next run deregisters what is stale");
        Ok(writer)
    }

    /// Port and load balancer zones of a target group, and its VPC's blocks `with_blocks`
    /// (read only when its target changes).
    async fn target_group(&self, arn: &str, with_blocks: bool) -> Result<TargetGroupFacts> {
        let elb = &self.aws.elb;
        let described = elb
            .describe_target_groups()
            .target_group_arns(arn)
            .send()
            .await
            .map_err(Error::aws("reading the target group (DescribeTargetGroups)"))?;
        let group = described.target_groups.unwrap_or_default().into_iter().next().ok_or_else(|| {
            Error::Unexpected { step: "reading the target group", message: format!("{arn} is no longer described") }
        })?;
        let port = group.port.and_then(|p| u16::try_from(p).ok()).unwrap_or_default();
        let vpc_id = group.vpc_id.unwrap_or_default();
        let load_balancers = group.load_balancer_arns.unwrap_or_default();
        let zones = async {
            if load_balancers.is_empty() {
                return Ok(BTreeSet::new());
            }
            let described = elb
                .describe_load_balancers()
                .set_load_balancer_arns(Some(load_balancers))
                .send()
                .await
                .map_err(Error::aws("reading the load balancer's zones (DescribeLoadBalancers)"))?;
            Ok(described
                .load_balancers
                .unwrap_or_default()
                .into_iter()
                .flat_map(|lb| lb.availability_zones.unwrap_or_default())
                .filter_map(|zone| zone.zone_name)
                .collect())
        };
        let blocks = async {
            match with_blocks {
                true => network::vpc_blocks(&self.aws.ec2, &vpc_id).await,
                false => Ok(VpcBlocks::default()),
            }
        };
        let (blocks, zones) = tokio::try_join!(blocks, zones)?;
        Ok(TargetGroupFacts { port, blocks, zones })
    }
}

struct TargetGroupFacts {
    port: u16,
    /// Empty unless asked for.
    blocks: VpcBlocks,
    zones: BTreeSet<String>,
}

/// What a person should know about a chain after a run.
enum Problem {
    /// The writer is in a zone the load balancer has no subnet in: counted by the stack's alarm.
    ZoneNotServed(String),
    /// The address never moved after a failover event.
    Unmoved(String),
}

fn zone_not_served(writer: &Writer, zones: &BTreeSet<String>) -> Option<Problem> {
    let zone = writer.zone.as_ref().filter(|zone| !zones.contains(*zone))?;
    Some(Problem::ZoneNotServed(format!(
        "the writer {} is in {zone}, where the load balancer has no subnet, so it gets no traffic; add a subnet in {zone} to the stack's SubnetIds (or, with derived subnets, update the stack: the zone is added in place)",
        writer.instance.as_deref().unwrap_or("instance")
    )))
}

struct Outcome {
    old: BTreeSet<Ipv4Addr>,
    writer: Writer,
    problem: Option<Problem>,
}

fn addresses(registered: &Registered) -> BTreeSet<Ipv4Addr> {
    registered.iter().filter_map(|(id, _)| id.parse().ok()).collect()
}

fn joined(addresses: &BTreeSet<Ipv4Addr>) -> String {
    addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// One log line per chain and run.
fn report(follower: &Follower, outcome: Result<Outcome>, millis: u64) -> Action {
    let database = follower.database.as_str();
    let target_group = follower.target_group_arn.as_str();
    match outcome {
        Ok(Outcome { old, writer, problem }) => {
            let new = writer.address.to_string();
            let instance = writer.instance.unwrap_or_default();
            let unchanged = old == BTreeSet::from([writer.address]);
            let action = if unchanged { "unchanged" } else { "retargeted" };
            let old = joined(&old);
            match problem {
                Some(Problem::ZoneNotServed(problem)) => {
                    // `problem` is what the stack's metric filter counts, beside action = failed.
                    let problem_kind = "zone-not-served";
                    error!(
                        database,
                        target_group,
                        old,
                        new,
                        writer_instance = instance,
                        action,
                        millis,
                        problem = problem_kind,
                        "{problem}"
                    );
                }
                Some(Problem::Unmoved(problem)) => {
                    warn!(database, target_group, old, new, writer_instance = instance, action, millis, "{problem}");
                }
                None if unchanged => {
                    info!(
                        database,
                        target_group,
                        old,
                        new,
                        writer_instance = instance,
                        action,
                        millis,
                        "writer unchanged"
                    );
                }
                None => info!(
                    database,
                    target_group,
                    old,
                    new,
                    writer_instance = instance,
                    action,
                    millis,
                    "writer moved; target group follows"
                ),
            }
            if unchanged { Action::Unchanged } else { Action::Retargeted }
        }
        Err(err) => {
            let error = err.to_string();
            error!(database, target_group, action = "failed", millis, %error, "could not sync the writer");
            Action::Failed(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: Value) -> EventBridgeEvent<Value> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn triggers_come_from_the_schedule_and_rds_events_only() {
        let scheduled = event(json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}));
        assert_eq!(Trigger::of(&scheduled), Some(Trigger::Schedule));
        let rds = event(json!({"detail-type": "RDS DB Instance Event", "source": "aws.rds",
            "detail": {"EventID": "RDS-EVENT-0015", "SourceIdentifier": "solo"}}));
        let trigger = Trigger::of(&rds).unwrap();
        assert_eq!(trigger.to_string(), "RDS-EVENT-0015 from solo");
        let blue_green = event(json!({"detail-type": "RDS Blue Green Deployment Event", "source": "aws.rds",
            "detail": {"EventID": "RDS-EVENT-0248", "SourceIdentifier": "bgd-hdqs3ik6vrwgutsn"}}));
        assert!(matches!(Trigger::of(&blue_green), Some(Trigger::Rds { kind: RdsSource::BlueGreen, .. })));
        // As AWS publishes them: the ARN names the database, the identifier carries a prefix.
        let published = event(json!({"detail-type": "RDS DB Instance Event", "source": "aws.rds",
            "detail": {"EventID": "RDS-EVENT-0049", "SourceIdentifier": "rds:My-DB-Instance",
                "SourceArn": "arn:aws:rds:us-east-1:123456789012:db:my-db-instance", "SourceType": "DB_INSTANCE"}}));
        assert_eq!(Trigger::of(&published).unwrap().to_string(), "RDS-EVENT-0049 from my-db-instance");
        let no_arn = event(json!({"detail-type": "RDS DB Cluster Event", "source": "aws.rds",
            "detail": {"EventID": "RDS-EVENT-0071", "SourceIdentifier": "RDS:orders"}}));
        assert_eq!(Trigger::of(&no_arn).unwrap().to_string(), "RDS-EVENT-0071 from orders");
        let cluster = event(json!({"detail-type": "RDS DB Cluster Event", "source": "aws.rds",
            "detail": {"EventID": "RDS-EVENT-0071", "SourceIdentifier": "rds:orders",
                "SourceArn": "arn:aws:rds:us-east-1:123456789012:cluster:orders"}}));
        let orders = described(Kind::Cluster("orders".into()), &["orders-1", "orders-2"]);
        let typed = Database::parse("Orders").unwrap();
        assert_eq!(Trigger::of(&cluster).unwrap().wait_for(&typed, &orders), Wait::Settle);
        let other =
            event(json!({"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2", "detail": {}}));
        assert_eq!(Trigger::of(&other), None);
    }

    fn member(id: &str) -> crate::database::Member {
        crate::database::Member { instance: id.into(), endpoint: format!("{id}.x.rds.amazonaws.com"), zone: None }
    }

    fn described(kind: Kind, members: &[&str]) -> Described {
        let mut described = Described::dns("x.example.com");
        described.kind = kind;
        described.members = members.iter().map(|m| member(m)).collect();
        described
    }

    fn rds(kind: RdsSource, event_id: &str, source: &str) -> Trigger {
        Trigger::Rds { event_id: event_id.into(), source: source.into(), kind }
    }

    #[test]
    fn an_event_waits_only_for_the_databases_it_is_about() {
        let cluster = described(Kind::Cluster("orders".into()), &["orders-1", "orders-2"]);
        let solo = described(Kind::Instance("solo".into()), &["solo"]);
        let typed = |text: &str| Database::parse(text).unwrap();
        let failover = rds(RdsSource::Cluster, "RDS-EVENT-0071", "orders");
        assert_eq!(failover.wait_for(&typed("Orders"), &cluster), Wait::Settle, "typed in another case");
        assert_eq!(failover.wait_for(&typed("orders-2"), &cluster), Wait::Settle, "a member standing for its cluster");
        assert_eq!(failover.wait_for(&typed("orders.cluster-abc.us-east-1.rds.amazonaws.com"), &cluster), Wait::Settle);
        assert_eq!(failover.wait_for(&typed("solo"), &solo), Wait::None, "another database");
        let instance = rds(RdsSource::Instance, "RDS-EVENT-0015", "SOLO");
        assert_eq!(instance.wait_for(&typed("solo"), &solo), Wait::Move, "no other member to compare with");
        assert_eq!(
            rds(RdsSource::Instance, "RDS-EVENT-0015", "orders-1").wait_for(&typed("orders"), &cluster),
            Wait::Settle
        );
        let switchover = rds(RdsSource::BlueGreen, "RDS-EVENT-0248", "bgd-abc");
        assert_eq!(switchover.wait_for(&typed("solo"), &solo), Wait::Move);
        assert_eq!(Trigger::Schedule.wait_for(&typed("solo"), &solo), Wait::None);
    }
}
