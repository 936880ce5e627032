//! The load balancer's own security group, for a chain whose properties name
//! none. Inbound: nothing but `LoadBalancerClients`, an opt-in; PrivateLink traffic
//! needs no inbound rule while enforcement is off, and a rule for the whole VPC
//! would let every host in it around the database's own group. Outbound: TCP on the
//! port to the database's security groups when RDS names them, else to the VPC's
//! blocks (the address can move, and the writer sync may not change groups), and to
//! each target outside the VPC, that address alone (the follower never moves a target
//! out of the VPC, so only Create and Update change these); the
//! health checks obey the outbound rules (ELB user guide, "Security groups for your
//! Network Load Balancer").

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_ec2::types::{
    IpPermission, IpRange, ResourceType, SecurityGroup as SdkGroup, TagSpecification, UserIdGroupPair,
};
use tracing::info;

use super::group_holders;
use super::ingress::OWN_GROUP_RULE_TAG;
use super::poll::{self, GROUP_NOT_FOUND};
use super::rules::{self, Rule};
use super::tags::{self, LOGICAL_ID_TAG, STACK_ID_TAG, Tags};
use super::{Desired, Owner, Progress};
use crate::error::{Error, Result, code_of};

#[derive(Debug, Clone)]
pub struct SecurityGroup {
    pub id: String,
    pub name: String,
    pub generation: String,
    pub tags: BTreeMap<String, String>,
}

impl SecurityGroup {
    fn from_sdk(group: SdkGroup) -> Self {
        SecurityGroup {
            tags: tags::ec2_map(group.tags.as_deref()),
            id: group.group_id.unwrap_or_default(),
            name: group.group_name.unwrap_or_default(),
            generation: String::new(),
        }
    }
}

pub async fn list_owned(ec2: &aws_sdk_ec2::Client, owner: &Owner) -> Result<Vec<SecurityGroup>> {
    let groups: Vec<SdkGroup> = ec2
        .describe_security_groups()
        .filters(rules::filter(&format!("tag:{STACK_ID_TAG}"), [owner.stack_id.as_str()]))
        .filters(rules::filter(&format!("tag:{LOGICAL_ID_TAG}"), [owner.logical_id.as_str()]))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(Error::aws("listing security groups (DescribeSecurityGroups)"))?;
    Ok(groups
        .into_iter()
        .map(SecurityGroup::from_sdk)
        .filter_map(|mut group| {
            group.generation = tags::owned_generation(owner, &group.tags)?;
            Some(group)
        })
        .collect())
}

/// Those of `ids` that this owner made, with their generation.
pub async fn owned_among(
    ec2: &aws_sdk_ec2::Client,
    owner: &Owner,
    ids: &BTreeSet<String>,
) -> Result<Vec<SecurityGroup>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let found = ec2
        .describe_security_groups()
        .filters(rules::filter("group-id", ids.iter().map(String::as_str)))
        .send()
        .await
        .map_err(Error::aws("reading the load balancer's security groups (DescribeSecurityGroups)"))?;
    Ok(found
        .security_groups
        .unwrap_or_default()
        .into_iter()
        .map(SecurityGroup::from_sdk)
        .filter_map(|mut group| {
            group.generation = tags::owned_generation(owner, &group.tags)?;
            Some(group)
        })
        .collect())
}

/// Creates the chain's security group, or brings an existing one's rules and tags
/// to what is wanted. Returns its ID.
pub async fn ensure(
    ec2: &aws_sdk_ec2::Client,
    existing: Option<&SecurityGroup>,
    want: &Desired<'_>,
    tags: &Tags,
    progress: &Progress,
) -> Result<String> {
    let _step = progress.step("creating the load balancer's security group");
    let wanted = wanted_rules(want);
    let Some(group) = existing else {
        let id = create(ec2, want, tags).await?;
        progress.record("security group", &id);
        // A new group allows all outbound traffic and nothing inbound.
        let default_egress =
            Wanted { egress: true, protocol: "-1".into(), from: -1, to: -1, peer: Peer::Cidr("0.0.0.0/0".into()) };
        apply(ec2, &id, &wanted, &BTreeSet::from([default_egress]), &BTreeMap::new(), tags, true).await?;
        return Ok(id);
    };
    let current = rules::describe(ec2, vec![rules::filter("group-id", [group.id.as_str()])]).await?;
    let ids: BTreeMap<Wanted, String> = current.iter().map(|rule| (Wanted::of(rule), rule.id.clone())).collect();
    let current: BTreeSet<Wanted> = ids.keys().cloned().collect();
    // While the writer settles the registered target stays (its address unknown here), and
    // so does the way out to an address outside the VPC.
    let mut wanted = wanted;
    if want.resolved.keep_targets {
        wanted.extend(current.iter().filter(|rule| rule.egress && rule.peer.is_single_address()).cloned());
    }
    if current != wanted {
        progress.gate().await?;
        apply(ec2, &group.id, &wanted, &current, &ids, tags, false).await?;
    }
    let (set, _) = tags.difference(&group.tags);
    if !set.is_empty() {
        progress.gate().await?;
        tag(ec2, &group.id, &set).await?;
    }
    Ok(group.id.clone())
}

/// The own group's name. The chain's resource name (letters, digits and hyphens, at most
/// 32 characters) fits AWS's rules for group names (at most 255 characters of letters,
/// digits, spaces and `._-:/()#,@[]+=&;{}!$*`) but one: a name may not start with `sg-`
/// (EC2 API reference, CreateSecurityGroup, GroupName), as `Name` or the stack's name may.
fn group_name(resource_name: &str) -> String {
    match resource_name.get(..3).is_some_and(|start| start.eq_ignore_ascii_case("sg-")) {
        true => format!("lb-{resource_name}"),
        false => resource_name.to_string(),
    }
}

async fn create(ec2: &aws_sdk_ec2::Client, want: &Desired<'_>, tags: &Tags) -> Result<String> {
    let name = group_name(&want.resource_name());
    let created = ec2
        .create_security_group()
        .group_name(&name)
        .description(format!("reverse-privatelink load balancer of {}", want.resource_name()))
        .vpc_id(&want.resolved.network.vpc_id)
        .tag_specifications(
            TagSpecification::builder().resource_type(ResourceType::SecurityGroup).set_tags(Some(tags.ec2())).build(),
        )
        .send()
        .await;
    match created {
        Ok(created) => created.group_id.ok_or_else(|| Error::Unexpected {
            step: "creating the load balancer's security group",
            message: "CreateSecurityGroup returned no group ID".into(),
        }),
        // An earlier attempt of the same request created it (a group name is unique per VPC).
        Err(err) if code_of(&err) == Some("InvalidGroup.Duplicate") => {
            adopt(ec2, &name, &want.resolved.network.vpc_id, tags).await
        }
        Err(err) => Err(Error::aws("creating the load balancer's security group (CreateSecurityGroup)")(err)),
    }
}

/// The group of that name in the VPC, if this chain made it.
async fn adopt(ec2: &aws_sdk_ec2::Client, name: &str, vpc_id: &str, tags: &Tags) -> Result<String> {
    let found = ec2
        .describe_security_groups()
        .filters(rules::filter("group-name", [name]))
        .filters(rules::filter("vpc-id", [vpc_id]))
        .send()
        .await
        .map_err(Error::aws("reading the load balancer's security group (DescribeSecurityGroups)"))?;
    let group = found.security_groups.unwrap_or_default().into_iter().next().map(SecurityGroup::from_sdk);
    match group {
        Some(group) if tags.is_same_generation(&group.tags) => Ok(group.id),
        _ => Err(Error::Unexpected {
            step: "creating the load balancer's security group",
            message: format!("a security group named {name} already exists in {vpc_id} and was not made by this stack"),
        }),
    }
}

/// A rule as the chain wants it: direction, protocol, ports (-1 for all) and peer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Wanted {
    egress: bool,
    protocol: String,
    from: i32,
    to: i32,
    peer: Peer,
}

/// Whom a rule admits or reaches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    Cidr(String),
    Group(String),
    /// Anything else (IPv6, a prefix list), by rule ID: never wanted.
    Other(String),
}

impl Peer {
    /// A `LoadBalancerClients` entry: a security group ID or a CIDR block.
    fn of_client(source: &str) -> Peer {
        match source.starts_with("sg-") {
            true => Peer::Group(source.to_string()),
            false => Peer::Cidr(source.to_string()),
        }
    }

    /// One IPv4 address (`/32`): the way out to a target outside the VPC.
    fn is_single_address(&self) -> bool {
        matches!(self, Peer::Cidr(cidr) if cidr.ends_with("/32"))
    }
}

impl Wanted {
    fn of(rule: &Rule) -> Self {
        let peer = match (&rule.cidr, &rule.source_group) {
            (Some(cidr), _) => Peer::Cidr(cidr.clone()),
            (None, Some(group)) => Peer::Group(group.clone()),
            (None, None) => Peer::Other(rule.id.clone()),
        };
        Wanted { egress: rule.egress, protocol: rule.protocol.clone(), from: rule.from_port, to: rule.to_port, peer }
    }

    fn tcp(egress: bool, port: i32, peer: Peer) -> Self {
        Wanted { egress, protocol: "tcp".into(), from: port, to: port, peer }
    }
}

fn wanted_rules(want: &Desired<'_>) -> BTreeSet<Wanted> {
    let port = i32::from(want.resolved.port);
    let database_groups = &want.resolved.database_security_groups;
    let towards: Vec<Peer> = match database_groups.is_empty() {
        false => database_groups.iter().cloned().map(Peer::Group).collect(),
        true => want.resolved.network.blocks.cidrs().into_iter().map(Peer::Cidr).collect(),
    };
    // A target outside the VPC (a peered VPC, on premises; the group has the VPC's blocks):
    // exactly that address, as health checks and traffic obey the outbound rules.
    let outside = want.resolved.target_ips.iter().filter(|ip| !want.resolved.network.contains(**ip));
    let towards = towards.into_iter().chain(outside.map(|ip| Peer::Cidr(format!("{ip}/32"))));
    let inbound =
        want.spec.load_balancer_clients.iter().map(|source| Wanted::tcp(false, port, Peer::of_client(source)));
    inbound.chain(towards.map(|peer| Wanted::tcp(true, port, peer))).collect()
}

const DUPLICATE: &str = "InvalidPermission.Duplicate";

/// Adds `permissions` with `send`. AWS refuses the whole call when one rule exists already
/// (`InvalidPermission.Duplicate`): an earlier attempt of this request added it before it was
/// killed, tagged as this one would. Then each rule is added alone, and those already there
/// are adopted: a rule is its group, direction, protocol, ports and peer, so it is the one wanted.
async fn add_adopting<O, E, R, Sent>(
    permissions: &[IpPermission],
    send: impl Fn(Vec<IpPermission>) -> Sent,
) -> std::result::Result<(), aws_sdk_ec2::error::SdkError<E, R>>
where
    Sent: Future<Output = std::result::Result<O, aws_sdk_ec2::error::SdkError<E, R>>>,
    E: aws_sdk_ec2::error::ProvideErrorMetadata,
{
    if permissions.is_empty() {
        return Ok(());
    }
    match send(permissions.to_vec()).await {
        Err(err) if code_of(&err) == Some(DUPLICATE) => {
            for permission in permissions {
                match send(vec![permission.clone()]).await {
                    Err(err) if code_of(&err) != Some(DUPLICATE) => return Err(err),
                    _ => {}
                }
            }
            Ok(())
        }
        added => added.map(|_| ()),
    }
}

/// Why a revoke did not go through.
enum Revoke {
    /// A rule to revoke is not there any more (`InvalidPermission.NotFound`,
    /// `InvalidSecurityGroupRuleId.NotFound`): what the call wanted, for that rule.
    Gone,
    Failed(Error),
}

impl Revoke {
    fn of<E, R>(step: &'static str) -> impl FnOnce(aws_sdk_ec2::error::SdkError<E, R>) -> Revoke
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        move |err| match code_of(&err) {
            Some("InvalidPermission.NotFound" | "InvalidSecurityGroupRuleId.NotFound") => Revoke::Gone,
            _ => Revoke::Failed(Error::aws(step)(err)),
        }
    }
}

/// Authorizes what is missing and revokes what is not wanted.
async fn apply(
    ec2: &aws_sdk_ec2::Client,
    group_id: &str,
    wanted: &BTreeSet<Wanted>,
    current: &BTreeSet<Wanted>,
    rule_ids: &BTreeMap<Wanted, String>,
    tags: &Tags,
    fresh: bool,
) -> Result<()> {
    let permissions = |egress: bool, rules: Vec<&Wanted>| -> Vec<IpPermission> {
        rules
            .into_iter()
            .filter(|rule| rule.egress == egress)
            .filter_map(|rule| {
                let ports = (rule.protocol != "-1").then_some((rule.from, rule.to));
                let permission = IpPermission::builder()
                    .ip_protocol(&rule.protocol)
                    .set_from_port(ports.map(|p| p.0))
                    .set_to_port(ports.map(|p| p.1));
                let description = "reverse-privatelink";
                let permission = match &rule.peer {
                    Peer::Cidr(cidr) => {
                        permission.ip_ranges(IpRange::builder().cidr_ip(cidr).description(description).build())
                    }
                    Peer::Group(group) => permission.user_id_group_pairs(
                        UserIdGroupPair::builder().group_id(group).description(description).build(),
                    ),
                    // Known by rule ID only, and revoked by it.
                    Peer::Other(_) => return None,
                };
                Some(permission.build())
            })
            .collect()
    };
    let add: Vec<&Wanted> = wanted.difference(current).collect();
    let remove: Vec<&Wanted> = current.difference(wanted).collect();
    let rule_tags = || {
        let mut rule_tags = tags.ec2();
        rule_tags.push(aws_sdk_ec2::types::Tag::builder().key(OWN_GROUP_RULE_TAG).value("true").build());
        TagSpecification::builder().resource_type(ResourceType::SecurityGroupRule).set_tags(Some(rule_tags)).build()
    };
    let ingress = permissions(false, add.clone());
    let egress = permissions(true, add);
    let add_ingress = async {
        let send = |permissions: Vec<IpPermission>| {
            poll::settled(fresh, GROUP_NOT_FOUND, move || {
                ec2.authorize_security_group_ingress()
                    .group_id(group_id)
                    .set_ip_permissions(Some(permissions.clone()))
                    .tag_specifications(rule_tags())
                    .send()
            })
        };
        add_adopting(&ingress, send)
            .await
            .map_err(Error::aws("letting LoadBalancerClients into the load balancer (AuthorizeSecurityGroupIngress)"))
    };
    let add_egress = async {
        let send = |permissions: Vec<IpPermission>| {
            poll::settled(fresh, GROUP_NOT_FOUND, move || {
                ec2.authorize_security_group_egress()
                    .group_id(group_id)
                    .set_ip_permissions(Some(permissions.clone()))
                    .tag_specifications(rule_tags())
                    .send()
            })
        };
        add_adopting(&egress, send)
            .await
            .map_err(Error::aws("allowing the load balancer out to the database (AuthorizeSecurityGroupEgress)"))
    };
    tokio::try_join!(add_ingress, add_egress)?;
    // Revoked after the new rules are in, so the path is never closed in between.
    for egress in [false, true] {
        let here: Vec<&Wanted> = remove.iter().copied().filter(|rule| rule.egress == egress).collect();
        let ids: Vec<String> = here.iter().filter_map(|rule| rule_ids.get(*rule).cloned()).collect();
        let by_permission =
            permissions(egress, here.into_iter().filter(|rule| !rule_ids.contains_key(*rule)).collect());
        if ids.is_empty() && by_permission.is_empty() {
            continue;
        }
        // What a killed attempt of this request revoked after this one read is gone
        // already (`…NotFound` fails the whole call): then each rule is revoked alone.
        let revoke = |ids: Vec<String>, by_permission: Vec<IpPermission>| async move {
            let (ids, by_permission) =
                (Some(ids).filter(|ids| !ids.is_empty()), Some(by_permission).filter(|p| !p.is_empty()));
            if egress {
                poll::settled(fresh, GROUP_NOT_FOUND, || {
                    ec2.revoke_security_group_egress()
                        .group_id(group_id)
                        .set_security_group_rule_ids(ids.clone())
                        .set_ip_permissions(by_permission.clone())
                        .send()
                })
                .await
                .map(|_| ())
                .map_err(Revoke::of("removing the load balancer's other outbound rules (RevokeSecurityGroupEgress)"))
            } else {
                ec2.revoke_security_group_ingress()
                    .group_id(group_id)
                    .set_security_group_rule_ids(ids)
                    .set_ip_permissions(by_permission)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(Revoke::of(
                        "removing the load balancer's other inbound rules (RevokeSecurityGroupIngress)",
                    ))
            }
        };
        match revoke(ids.clone(), by_permission.clone()).await {
            Ok(()) => {}
            Err(Revoke::Failed(error)) => return Err(error),
            Err(Revoke::Gone) => {
                let singles = ids.iter().map(|id| (vec![id.clone()], Vec::new()));
                for (ids, by_permission) in singles.chain(by_permission.iter().map(|p| (Vec::new(), vec![p.clone()]))) {
                    match revoke(ids, by_permission).await {
                        Ok(()) | Err(Revoke::Gone) => {}
                        Err(Revoke::Failed(error)) => return Err(error),
                    }
                }
            }
        }
    }
    Ok(())
}

async fn tag(ec2: &aws_sdk_ec2::Client, group_id: &str, set: &BTreeMap<String, String>) -> Result<()> {
    let tags = set.iter().map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build());
    ec2.create_tags()
        .resources(group_id)
        .set_tags(Some(tags.collect()))
        .send()
        .await
        .map_err(Error::aws("tagging the load balancer's security group (CreateTags)"))?;
    Ok(())
}

/// Deletes the group. AWS refuses while a load balancer still uses it, and for a
/// while after one was deleted (its network interfaces go last), so that is
/// retried; the caller's deadline bounds the wait. Someone else's rule or interface
/// that holds it ends the wait at once, named ([`group_holders`]). Already gone is fine.
pub async fn delete(ec2: &aws_sdk_ec2::Client, group_id: &str, progress: &Progress) -> Result<()> {
    let _step = progress.step("deleting the load balancer's security group");
    let mut pause = Duration::from_secs(2);
    loop {
        match ec2.delete_security_group().group_id(group_id).send().await {
            Ok(_) => return Ok(()),
            Err(err) if matches!(code_of(&err), Some("InvalidGroup.NotFound" | "InvalidGroupId.NotFound")) => {
                return Ok(());
            }
            Err(err) if code_of(&err) == Some("DependencyViolation") => {
                // Boxed: only asked on a refusal, it need not weigh on every tear-down's future.
                let holders = Box::pin(group_holders::holders(ec2, group_id)).await?;
                if !holders.only_releasing() {
                    return Err(holders.error(group_id));
                }
                info!(
                    group_id,
                    holders = holders.releasing,
                    "the load balancer's interfaces or the chain's own database rules still use the security group; trying again"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(15));
            }
            Err(err) => {
                return Err(Error::aws("deleting the load balancer's security group (DeleteSecurityGroup)")(err));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_group_names_never_start_with_sg() {
        assert_eq!(group_name("import-db-0a1b2c3d"), "import-db-0a1b2c3d");
        assert_eq!(group_name("sg-import-0a1b2c3d"), "lb-sg-import-0a1b2c3d");
        assert_eq!(group_name("SG-import-0a1b2c3d"), "lb-SG-import-0a1b2c3d");
        assert_eq!(group_name("sgx-0a1b2c3d"), "sgx-0a1b2c3d");
    }
}
