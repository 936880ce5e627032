//! Ownership tags (how the chain finds what it built) and the user's tags.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_elasticloadbalancingv2 as elbv2;

use super::{Owner, Progress, poll};
use crate::error::{Error, Result};

pub const STACK_ID_TAG: &str = "reverse-privatelink:stack-id";
pub const LOGICAL_ID_TAG: &str = "reverse-privatelink:logical-id";
pub const GENERATION_TAG: &str = "reverse-privatelink:generation";
/// Set on a chain's resources, with its service ID as the value, once CloudFormation
/// has received that ID: from then on only a Delete naming the ID may remove them.
pub const ANSWERED_TAG: &str = "reverse-privatelink:answered";

/// On the target group of a chain that follows a database: the database as the
/// user named it. The writer sync finds the chains it keeps up to date by this tag.
pub const DATABASE_TAG: &str = "reverse-privatelink:database";

/// On the target group: the event bus that hears of each target move (`ReportToEventBus`).
pub const REPORT_TO_TAG: &str = "reverse-privatelink:report-to";

/// On the endpoint service: the principals it should allow (see [`principals_record`]).
pub const PRINCIPALS_TAG: &str = "reverse-privatelink:principals";
/// On the load balancer: the consumer's zone IDs, space-separated.
pub const CONSUMER_ZONES_TAG: &str = "reverse-privatelink:consumer-zones";

/// The principals, space-separated; or, past a tag value's 256 characters, their
/// digest (`fnv:` and 16 hex digits), which still tells whether they changed.
pub fn principals_record(principals: &BTreeSet<String>) -> String {
    let joined = principals.iter().cloned().collect::<Vec<_>>().join(" ");
    if joined.len() <= 256 {
        return joined;
    }
    format!("fnv:{}", super::stable_hash(&joined))
}

/// DescribeTags takes at most 20 ARNs.
const DESCRIBE_TAGS_BATCH: usize = 20;

/// The tags one generation's resources should carry.
pub struct Tags {
    /// Ownership tags followed by the user's tags.
    pub wanted: BTreeMap<String, String>,
    /// User tags an earlier version of the properties set and the current one dropped.
    pub dropped: BTreeSet<String>,
}

impl Tags {
    pub fn new(owner: &Owner, generation: &str, user: &BTreeMap<String, String>, dropped: &BTreeSet<String>) -> Self {
        let mut wanted = user.clone();
        wanted.insert(STACK_ID_TAG.to_string(), owner.stack_id.clone());
        wanted.insert(LOGICAL_ID_TAG.to_string(), owner.logical_id.clone());
        wanted.insert(GENERATION_TAG.to_string(), generation.to_string());
        let dropped = dropped.iter().filter(|key| !wanted.contains_key(*key)).cloned().collect();
        Tags { wanted, dropped }
    }

    /// These tags with `key` set to `value`, or dropped where there is none.
    pub fn with(&self, key: &str, value: Option<String>) -> Tags {
        let (mut wanted, mut dropped) = (self.wanted.clone(), self.dropped.clone());
        match value {
            Some(value) => {
                wanted.insert(key.to_string(), value);
            }
            None => {
                dropped.insert(key.to_string());
            }
        }
        Tags { wanted, dropped }
    }

    /// The target group's tags: these plus the database it follows and the bus its moves are
    /// reported to, or without them.
    pub fn for_target_group(&self, follows: Option<&str>, report_to: Option<&str>) -> Tags {
        self.with(DATABASE_TAG, follows.map(str::to_string)).with(REPORT_TO_TAG, report_to.map(str::to_string))
    }

    /// The endpoint service's tags: these plus the principals it should allow, so that a
    /// diagnosis can tell a principal added or removed by hand.
    pub fn for_service(&self, principals: &BTreeSet<String>) -> Tags {
        self.with(PRINCIPALS_TAG, Some(principals_record(principals)))
    }

    /// The load balancer's tags: these plus the consumer's zone IDs, when given.
    pub fn for_load_balancer(&self, consumer_zone_ids: &BTreeSet<String>) -> Tags {
        let zones = consumer_zone_ids.iter().cloned().collect::<Vec<_>>().join(" ");
        self.with(CONSUMER_ZONES_TAG, Some(zones).filter(|z| !z.is_empty()))
    }

    pub fn elb(&self) -> Vec<elbv2::types::Tag> {
        self.wanted.iter().map(|(k, v)| elbv2::types::Tag::builder().key(k).value(v).build()).collect()
    }

    pub fn ec2(&self) -> Vec<aws_sdk_ec2::types::Tag> {
        self.wanted.iter().map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build()).collect()
    }

    /// Whether `current` are the tags of a resource of this very generation and owner.
    pub fn is_same_generation(&self, current: &BTreeMap<String, String>) -> bool {
        [STACK_ID_TAG, LOGICAL_ID_TAG, GENERATION_TAG].iter().all(|key| current.get(*key) == self.wanted.get(*key))
    }

    /// Tags to set and keys to remove so that `current` becomes what is wanted;
    /// tags nobody asked for (set by other tools) are left alone.
    pub fn difference(&self, current: &BTreeMap<String, String>) -> (BTreeMap<String, String>, Vec<String>) {
        let set = self
            .wanted
            .iter()
            .filter(|(k, v)| current.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let remove = self.dropped.iter().filter(|k| current.contains_key(*k)).cloned().collect();
        (set, remove)
    }
}

/// The generation a resource belongs to, if `tags` say this owner built it.
pub fn owned_generation(owner: &Owner, tags: &BTreeMap<String, String>) -> Option<String> {
    let ours = tags.get(STACK_ID_TAG) == Some(&owner.stack_id) && tags.get(LOGICAL_ID_TAG) == Some(&owner.logical_id);
    ours.then(|| tags.get(GENERATION_TAG).cloned()).flatten()
}

/// Tags of many ELB resources, by ARN.
pub async fn describe_elb(
    elb: &elbv2::Client,
    arns: Vec<String>,
) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    // One missing resource fails a whole batch, so a batch that fails so is asked again one by one.
    let batches = arns.chunks(DESCRIBE_TAGS_BATCH).map(|batch| async move {
        match elb.describe_tags().set_resource_arns(Some(batch.to_vec())).send().await {
            Ok(answer) => Ok(vec![answer]),
            Err(err) if is_not_found(&err) && batch.len() > 1 => {
                let single = batch.iter().map(|arn| async move {
                    match elb.describe_tags().resource_arns(arn).send().await {
                        Ok(answer) => Ok(Some(answer)),
                        Err(err) if is_not_found(&err) => Ok(None),
                        Err(err) => Err(err),
                    }
                });
                Ok(futures::future::try_join_all(single).await?.into_iter().flatten().collect())
            }
            Err(err) if is_not_found(&err) => Ok(Vec::new()),
            Err(err) => Err(err),
        }
    });
    let answers = futures::future::try_join_all(batches)
        .await
        .map_err(Error::aws("reading load balancer tags (DescribeTags)"))?;
    Ok(answers
        .into_iter()
        .flatten()
        .flat_map(|answer| answer.tag_descriptions.unwrap_or_default())
        .filter_map(|description| {
            let tags = description
                .tags
                .unwrap_or_default()
                .into_iter()
                .filter_map(|t| Some((t.key?, t.value.unwrap_or_default())));
            Some((description.resource_arn?, tags.collect()))
        })
        .collect())
}

fn is_not_found<R>(err: &elbv2::error::SdkError<elbv2::operation::describe_tags::DescribeTagsError, R>) -> bool {
    matches!(
        crate::error::code_of(err),
        Some("LoadBalancerNotFound" | "TargetGroupNotFound" | "ListenerNotFound" | "RuleNotFound")
    )
}

/// Brings an ELB resource's tags to what is wanted.
pub async fn sync_elb(
    elb: &elbv2::Client,
    arn: &str,
    current: &BTreeMap<String, String>,
    tags: &Tags,
    progress: &Progress,
) -> Result<()> {
    let (set, remove) = tags.difference(current);
    if !set.is_empty() {
        let _step = progress.step("tagging the load balancer resources");
        progress.gate().await?;
        tag_elb(elb, vec![arn.to_string()], &set, false).await?;
    }
    if !remove.is_empty() {
        let _step = progress.step("removing dropped tags");
        progress.gate().await?;
        elb.remove_tags()
            .resource_arns(arn)
            .set_tag_keys(Some(remove))
            .send()
            .await
            .map_err(Error::aws("removing tags (RemoveTags)"))?;
    }
    Ok(())
}

/// Sets `tags` on several ELB resources in one call; `fresh`: made moments ago.
pub async fn tag_elb(
    elb: &elbv2::Client,
    arns: Vec<String>,
    tags: &BTreeMap<String, String>,
    fresh: bool,
) -> Result<()> {
    if arns.is_empty() || tags.is_empty() {
        return Ok(());
    }
    let tags: Vec<elbv2::types::Tag> =
        tags.iter().map(|(k, v)| elbv2::types::Tag::builder().key(k).value(v).build()).collect();
    let not_found = &["LoadBalancerNotFound", "TargetGroupNotFound", "ListenerNotFound"];
    poll::settled(fresh, not_found, || {
        elb.add_tags().set_resource_arns(Some(arns.clone())).set_tags(Some(tags.clone())).send()
    })
    .await
    .map_err(Error::aws("tagging the load balancer resources (AddTags)"))?;
    Ok(())
}

/// Tags of an EC2 resource as a map.
pub fn ec2_map(tags: Option<&[aws_sdk_ec2::types::Tag]>) -> BTreeMap<String, String> {
    tags.unwrap_or_default()
        .iter()
        .filter_map(|tag| Some((tag.key.clone()?, tag.value.clone().unwrap_or_default())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner { stack_id: "stack".into(), logical_id: "Link".into() }
    }

    #[test]
    fn ownership_needs_stack_and_logical_id() {
        let mut tags = BTreeMap::from([
            (STACK_ID_TAG.to_string(), "stack".to_string()),
            (LOGICAL_ID_TAG.to_string(), "Link".to_string()),
            (GENERATION_TAG.to_string(), "abcd1234".to_string()),
        ]);
        assert_eq!(owned_generation(&owner(), &tags).as_deref(), Some("abcd1234"));
        tags.insert(LOGICAL_ID_TAG.to_string(), "Other".to_string());
        assert_eq!(owned_generation(&owner(), &tags), None);
    }

    #[test]
    fn difference_sets_changed_and_removes_only_dropped_user_tags() {
        let user = BTreeMap::from([("team".to_string(), "data".to_string())]);
        let dropped = BTreeSet::from(["old".to_string(), "team".to_string()]);
        let tags = Tags::new(&owner(), "g", &user, &dropped);
        let current = BTreeMap::from([
            ("team".to_string(), "web".to_string()),
            ("old".to_string(), "1".to_string()),
            ("someone-else".to_string(), "x".to_string()),
            (STACK_ID_TAG.to_string(), "stack".to_string()),
        ]);
        let (set, remove) = tags.difference(&current);
        assert_eq!(set.get("team").map(String::as_str), Some("data"));
        assert!(set.contains_key(GENERATION_TAG) && !set.contains_key(STACK_ID_TAG));
        assert_eq!(remove, vec!["old".to_string()]);
    }
}
