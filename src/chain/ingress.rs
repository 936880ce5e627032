//! The load balancer let into the database: one inbound rule per database
//! security group, TCP on the port from the load balancer's security group.
//! AWS keeps one rule per group, port and source, so chains that share a source
//! group (a replacement and the chain it replaces, or two stacks given the same
//! groups) share the rule. Each rule the function made records on itself which
//! chains use it (a tag per stack, listing `<logical ID>/<generation>`), and is
//! revoked only when the last of them lets go. A rule that was there before is
//! used as it is and never removed.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use tracing::info;

use super::poll;
use super::rules::{self, Rule};
use super::tags::{GENERATION_TAG, LOGICAL_ID_TAG, STACK_ID_TAG, Tags};
use super::{Owner, Progress};
use crate::error::{Error, Result, code_of};
use crate::spec::stack_name;

/// Prefix of the tags that record which chains use a rule: one key per stack (a hash
/// of its ID, as a tag key is at most 128 characters), its value the chains of that
/// stack using the rule, `<logical ID>/<generation>` separated by spaces.
pub const USERS_TAG_PREFIX: &str = "reverse-privatelink:users:";

/// Marks the rules of the load balancer's own group, which are not database rules.
pub const OWN_GROUP_RULE_TAG: &str = "reverse-privatelink:own-group";

/// An inbound rule a chain uses in a database security group.
#[derive(Debug, Clone)]
pub struct IngressRule {
    pub id: String,
    pub group_id: String,
    /// The generation of the owner's chain that uses it.
    pub generation: String,
}

/// The key of `stack_id`'s users tag.
pub fn users_key(stack_id: &str) -> String {
    format!("{USERS_TAG_PREFIX}{}", super::stable_hash(stack_id))
}

/// Every chain using a rule, as (users key, `<logical ID>/<generation>`). A rule made
/// before rules recorded their users has one: the chain that made it.
fn users_of(rule: &Rule) -> BTreeSet<(String, String)> {
    let recorded: BTreeSet<(String, String)> = rule
        .tags
        .iter()
        .filter(|(key, _)| key.starts_with(USERS_TAG_PREFIX))
        .flat_map(|(key, value)| value.split_whitespace().map(move |user| (key.clone(), user.to_string())))
        .collect();
    if !recorded.is_empty() || rule.tags.keys().any(|key| key.starts_with(USERS_TAG_PREFIX)) {
        return recorded;
    }
    let tag = |key: &str| rule.tags.get(key).cloned().unwrap_or_default();
    match rule.tags.contains_key(STACK_ID_TAG) {
        true => BTreeSet::from([(
            users_key(&tag(STACK_ID_TAG)),
            format!("{}/{}", tag(LOGICAL_ID_TAG), tag(GENERATION_TAG)),
        )]),
        false => BTreeSet::new(),
    }
}

/// A database rule the function made: inbound, from a security group, not in the load balancer's own group.
fn is_database_rule(rule: &Rule) -> bool {
    rule.tags.contains_key(STACK_ID_TAG)
        && !rule.egress
        && rule.source_group.is_some()
        && !rule.tags.contains_key(OWN_GROUP_RULE_TAG)
}

/// Every database rule the function made in this account and region (a handful per stack).
async fn made_by_the_function(ec2: &aws_sdk_ec2::Client) -> Result<Vec<Rule>> {
    // "*" matches any value (EC2 API reference, "Filtering": filter values take wildcards).
    let rules = rules::describe(ec2, vec![rules::filter(&format!("tag:{STACK_ID_TAG}"), ["*"])]).await?;
    Ok(rules.into_iter().filter(is_database_rule).collect())
}

/// The database rules each generation of `owner` uses.
pub async fn list_owned(ec2: &aws_sdk_ec2::Client, owner: &Owner) -> Result<Vec<IngressRule>> {
    let key = users_key(&owner.stack_id);
    let prefix = format!("{}/", owner.logical_id);
    Ok(made_by_the_function(ec2)
        .await?
        .into_iter()
        .flat_map(|rule| {
            let generations: Vec<String> = users_of(&rule)
                .into_iter()
                .filter(|(stack, _)| *stack == key)
                .filter_map(|(_, user)| user.strip_prefix(&prefix).map(str::to_string))
                .collect();
            generations.into_iter().map(move |generation| IngressRule {
                id: rule.id.clone(),
                group_id: rule.group_id.clone(),
                generation,
            })
        })
        .collect())
}

/// The security groups holding a database rule that a chain of this stack uses.
pub async fn groups_with_rules_of(ec2: &aws_sdk_ec2::Client, stack_id: &str) -> Result<BTreeSet<String>> {
    let key = users_key(stack_id);
    let rules = made_by_the_function(ec2).await?;
    Ok(rules
        .into_iter()
        .filter(|rule| users_of(rule).iter().any(|(stack, _)| *stack == key))
        .map(|r| r.group_id)
        .collect())
}

/// Lets each of `sources` (the load balancer's groups) into each of `databases` on
/// `port`, recording this chain on the rules it uses, and lets go of the chain's rules
/// that are no longer wanted (`owned`).
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
    let user = User::of(tags);
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
            keep.insert(rule.id.as_str());
            if !is_database_rule(rule) {
                info!(group = db, source = src, rule = %rule.id, "the database already allows the load balancer; using that rule and leaving it alone");
            } else if !users_of(rule).contains(&user.entry()) {
                info!(group = db, source = src, rule = %rule.id, "another chain's rule already lets the load balancer in; recording that this chain uses it too");
                progress.gate().await?;
                let mut users = users_of(rule);
                users.insert(user.entry());
                record_users(ec2, rule, &users).await?;
                progress.record("database rule", &format!("{db}/{}", rule.id));
            }
            continue;
        }
        progress.gate().await?;
        let mut rule_tags = tags.ec2();
        rule_tags.push(Tag::builder().key(&user.key).value(&user.value).build());
        let added = poll::settled(true, poll::NOT_AUTHORIZED_YET, || {
            ec2.authorize_security_group_ingress()
                .group_id(*db)
                .ip_permissions(rules::tcp_from_group(port, src, &user.description))
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::SecurityGroupRule)
                        .set_tags(Some(rule_tags.clone()))
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
    release(ec2, &user.owner, &stale, progress).await
}

/// A chain as a rule records it.
struct User {
    owner: Owner,
    key: String,
    value: String,
    description: String,
}

impl User {
    fn of(tags: &Tags) -> User {
        let tag = |key: &str| tags.wanted.get(key).cloned().unwrap_or_default();
        let owner = Owner { stack_id: tag(STACK_ID_TAG), logical_id: tag(LOGICAL_ID_TAG) };
        User {
            key: users_key(&owner.stack_id),
            value: format!("{}/{}", owner.logical_id, tag(GENERATION_TAG)),
            // "reverse-privatelink <stack name>/<logical ID>": whose rule it is, for whoever reads the database's group.
            description: format!("reverse-privatelink {}/{}", stack_name(&owner.stack_id), owner.logical_id),
            owner,
        }
    }

    fn entry(&self) -> (String, String) {
        (self.key.clone(), self.value.clone())
    }
}

/// Writes `users` onto `rule`: one tag per stack, removing the tags of stacks left without a user.
async fn record_users(ec2: &aws_sdk_ec2::Client, rule: &Rule, users: &BTreeSet<(String, String)>) -> Result<()> {
    let mut by_stack: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, user) in users {
        by_stack.entry(key).or_default().push(user);
    }
    let set: Vec<Tag> =
        by_stack.iter().map(|(key, users)| Tag::builder().key(*key).value(users.join(" ")).build()).collect();
    let gone: Vec<Tag> = rule
        .tags
        .keys()
        .filter(|key| key.starts_with(USERS_TAG_PREFIX) && !by_stack.contains_key(key.as_str()))
        .map(|key| Tag::builder().key(key).build())
        .collect();
    if !set.is_empty() {
        poll::settled(true, poll::NOT_AUTHORIZED_YET, || {
            ec2.create_tags().resources(&rule.id).set_tags(Some(set.clone())).send()
        })
        .await
        .map_err(Error::aws("recording which chains use the database rule (CreateTags)"))?;
    }
    if !gone.is_empty() {
        ec2.delete_tags()
            .resources(&rule.id)
            .set_tags(Some(gone))
            .send()
            .await
            .map_err(Error::aws("recording which chains use the database rule (DeleteTags)"))?;
    }
    Ok(())
}

/// Lets go of `rules` for `owner`'s chains of their generations: a rule another chain
/// (of any generation or stack) still uses stays, recording one user less; the last
/// user revokes it. Rules are read again first, as another chain may have joined.
pub async fn release(
    ec2: &aws_sdk_ec2::Client,
    owner: &Owner,
    rules: &[IngressRule],
    progress: &Progress,
) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let _step = progress.step("removing the load balancer from the database's security groups");
    progress.gate().await?;
    let ids: BTreeSet<&str> = rules.iter().map(|rule| rule.id.as_str()).collect();
    let current = rules::describe(ec2, vec![rules::filter("security-group-rule-id", ids.iter().copied())]).await?;
    let key = users_key(&owner.stack_id);
    let mut revoke: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for rule in &current {
        let leaving: BTreeSet<(String, String)> = rules
            .iter()
            .filter(|r| r.id == rule.id)
            .map(|r| (key.clone(), format!("{}/{}", owner.logical_id, r.generation)))
            .collect();
        let users = users_of(rule);
        let staying: BTreeSet<(String, String)> = users.difference(&leaving).cloned().collect();
        if staying.is_empty() {
            revoke.entry(&rule.group_id).or_default().push(rule.id.clone());
        } else if staying != users {
            info!(rule = %rule.id, users = ?staying, "other chains still use the database rule; it stays");
            record_users(ec2, rule, &staying).await?;
        }
    }
    for (group, ids) in revoke {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(tags: &[(&str, &str)]) -> Rule {
        Rule {
            id: "sgr-1".into(),
            group_id: "sg-db".into(),
            egress: false,
            protocol: "tcp".into(),
            from_port: 3306,
            to_port: 3306,
            cidr: None,
            source_group: Some("sg-lb".into()),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn users_are_recorded_per_stack_and_a_rule_made_before_counts_its_maker() {
        let key = users_key("stack-a");
        let shared = rule(&[(STACK_ID_TAG, "stack-a"), (&key, "Link/aaaa0000 Link/bbbb1111")]);
        assert_eq!(users_of(&shared).len(), 2);
        assert!(is_database_rule(&shared));
        let before = rule(&[(STACK_ID_TAG, "stack-a"), (LOGICAL_ID_TAG, "Link"), (GENERATION_TAG, "aaaa0000")]);
        assert_eq!(users_of(&before), BTreeSet::from([(key.clone(), "Link/aaaa0000".to_string())]));
        let theirs = rule(&[]);
        assert!(users_of(&theirs).is_empty() && !is_database_rule(&theirs));
        let own_group = rule(&[(STACK_ID_TAG, "stack-a"), (OWN_GROUP_RULE_TAG, "true")]);
        assert!(!is_database_rule(&own_group));
        assert_ne!(users_key("stack-a"), users_key("stack-b"));
        assert!(users_key("stack-a").len() <= 128);
    }
}
