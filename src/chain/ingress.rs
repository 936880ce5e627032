//! The load balancer let into the database: one inbound rule per database
//! security group, TCP on the port from the load balancer's security group,
//! tagged as the chain's. A rule that already existed (same group, port and
//! source) is used as it is and never removed.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{ResourceType, TagSpecification};
use tracing::info;

use super::poll;
use super::rules::{self, Rule};
use super::tags::{self, LOGICAL_ID_TAG, STACK_ID_TAG, Tags};
use super::{Owner, Progress};
use crate::error::{Error, Result, code_of};
use crate::spec::stack_name;

/// An inbound rule the chain added to a database security group.
#[derive(Debug, Clone)]
pub struct IngressRule {
    pub id: String,
    pub group_id: String,
    pub generation: String,
}

pub async fn list_owned(ec2: &aws_sdk_ec2::Client, owner: &Owner) -> Result<Vec<IngressRule>> {
    let found = rules::describe(
        ec2,
        vec![
            rules::filter(&format!("tag:{STACK_ID_TAG}"), [owner.stack_id.as_str()]),
            rules::filter(&format!("tag:{LOGICAL_ID_TAG}"), [owner.logical_id.as_str()]),
        ],
    )
    .await?;
    Ok(found
        .into_iter()
        .filter_map(|rule| {
            let generation = tags::owned_generation(owner, &rule.tags)?;
            Some(IngressRule { id: rule.id, group_id: rule.group_id, generation })
        })
        .collect())
}

/// The security groups holding an inbound rule this stack added (any resource of it).
pub async fn groups_with_rules_of(ec2: &aws_sdk_ec2::Client, stack_id: &str) -> Result<BTreeSet<String>> {
    let found = rules::describe(ec2, vec![rules::filter(&format!("tag:{STACK_ID_TAG}"), [stack_id])]).await?;
    Ok(found.into_iter().filter(|rule| !rule.egress).map(|rule| rule.group_id).collect())
}

/// Lets each of `sources` (the load balancer's groups) into each of `databases` on
/// `port`, and removes the chain's own rules that are no longer wanted (`owned`).
pub async fn ensure(
    ec2: &aws_sdk_ec2::Client,
    databases: &BTreeSet<String>,
    sources: &BTreeSet<String>,
    port: u16,
    owned: &[IngressRule],
    tags: &Tags,
    progress: &Progress,
) -> Result<()> {
    let _step = progress.step("allowing the load balancer into the database's security groups");
    let description = description(tags);
    let wanted: BTreeSet<(&str, &str)> =
        databases.iter().flat_map(|db| sources.iter().map(move |src| (db.as_str(), src.as_str()))).collect();
    let current: Vec<Rule> = if wanted.is_empty() {
        Vec::new()
    } else {
        rules::describe(ec2, vec![rules::filter("group-id", databases.iter().map(String::as_str))]).await?
    };
    let admitted = |db: &str, src: &str| {
        current
            .iter()
            .find(|r| !r.egress && r.group_id == db && r.source_group.as_deref() == Some(src) && r.admits_tcp(port))
    };
    let mut keep: BTreeSet<&str> = BTreeSet::new();
    for (db, src) in &wanted {
        if let Some(rule) = admitted(db, src) {
            if !rule.tags.contains_key(STACK_ID_TAG) {
                info!(group = db, source = src, rule = %rule.id, "the database already allows the load balancer; using that rule and leaving it alone");
            }
            keep.insert(rule.id.as_str());
            continue;
        }
        progress.gate().await?;
        let added = poll::settled(true, poll::NOT_AUTHORIZED_YET, || {
            ec2.authorize_security_group_ingress()
                .group_id(*db)
                .ip_permissions(rules::tcp_from_group(port, src, &description))
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::SecurityGroupRule)
                        .set_tags(Some(tags.ec2()))
                        .build(),
                )
                .send()
        })
        .await;
        match added {
            Ok(added) => {
                info!(group = db, source = src, port, "allowed the load balancer into the database");
                for rule in added.security_group_rules.unwrap_or_default() {
                    if let Some(id) = rule.security_group_rule_id {
                        progress.record("database rule", &format!("{db}/{id}"));
                    }
                }
            }
            // Added between the read and now (a concurrent attempt of the same request).
            Err(err) if code_of(&err) == Some("InvalidPermission.Duplicate") => {}
            Err(err) => {
                return Err(
                    Error::aws("allowing the load balancer into the database (AuthorizeSecurityGroupIngress)")(err),
                );
            }
        }
    }
    // `owned` was read before this request added anything, so a rule added just now is never stale.
    let stale: Vec<IngressRule> = owned.iter().filter(|rule| !keep.contains(rule.id.as_str())).cloned().collect();
    remove(ec2, &stale, progress).await
}

/// "reverse-privatelink <stack name>/<logical ID>": whose rule it is, for whoever reads the database's group.
fn description(tags: &Tags) -> String {
    let tag = |key: &str| tags.wanted.get(key).map(String::as_str).unwrap_or_default();
    format!("reverse-privatelink {}/{}", stack_name(tag(STACK_ID_TAG)), tag(LOGICAL_ID_TAG))
}

/// Revokes the chain's rules, grouped by security group. Already gone is fine.
pub async fn remove(ec2: &aws_sdk_ec2::Client, owned: &[IngressRule], progress: &Progress) -> Result<()> {
    if owned.is_empty() {
        return Ok(());
    }
    let _step = progress.step("removing the load balancer from the database's security groups");
    progress.gate().await?;
    let mut by_group: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for rule in owned {
        by_group.entry(&rule.group_id).or_default().push(rule.id.clone());
    }
    for (group, ids) in by_group {
        let revoked = poll::settled(true, poll::NOT_AUTHORIZED_YET, || {
            ec2.revoke_security_group_ingress().group_id(group).set_security_group_rule_ids(Some(ids.clone())).send()
        });
        match revoked.await {
            Ok(_) => {}
            Err(err)
                if matches!(
                    code_of(&err),
                    Some(
                        "InvalidGroup.NotFound" | "InvalidSecurityGroupRuleId.NotFound" | "InvalidPermission.NotFound"
                    )
                ) => {}
            Err(err) => {
                return Err(Error::aws(
                    "removing the load balancer from the database's security group (RevokeSecurityGroupIngress)",
                )(err));
            }
        }
    }
    Ok(())
}
