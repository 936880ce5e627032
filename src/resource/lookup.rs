//! `Custom::DatabaseSecurityGroups`: the security groups whose inbound rules the
//! builder may change, learnt when the stack is deployed. `ec2:AuthorizeSecurityGroupIngress`
//! cannot be bounded by a tag on groups the stack does not own, and the condition on
//! the rule's own tag applies only when the request carries one (EC2 user guide, IAM
//! examples), so the template grants it on exactly these groups' ARNs, in a policy the
//! main resource waits for. It gets the main resource's properties, so every Update
//! that reaches the main resource first refreshes this list (and the policy).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::chain::ingress;
use crate::cloudformation::Success;
use crate::database::Databases;
use crate::error::Result;
use crate::spec::{Database, Spec};

pub const RESOURCE_TYPE: &str = "Custom::DatabaseSecurityGroups";

/// Stable across updates: a new one would make CloudFormation replace the resource.
const PHYSICAL_ID: &str = "reverse-privatelink-database-security-groups";

/// An IAM statement needs a resource; this ARN names no security group.
const NO_GROUP: &str = "none";

/// The database's groups (when the chain lets the load balancer in), and every group
/// that holds a rule this stack added (so it can still be revoked after the database's
/// groups changed), as ARNs joined by commas in `Data.Arns`.
pub async fn security_groups(
    ec2: &aws_sdk_ec2::Client,
    databases: &Databases,
    properties: &Value,
    stack_id: &str,
) -> Result<Success> {
    let spec = Spec::from_properties(properties, stack_id)?;
    let database_groups = async {
        match spec.database() {
            Some(database @ Database::Identifier(_)) if spec.allow_database_ingress => {
                databases.describe(database).await.map(|described| described.security_groups)
            }
            _ => Ok(Vec::new()),
        }
    };
    let (database_groups, with_rules) =
        tokio::try_join!(database_groups, ingress::groups_with_rules_of(ec2, stack_id))?;
    let groups: BTreeSet<String> = database_groups.into_iter().chain(with_rules).collect();
    let arns: Vec<String> = match groups.is_empty() {
        true => vec![group_arn(stack_id, NO_GROUP)],
        false => groups.iter().map(|group| group_arn(stack_id, group)).collect(),
    };
    Ok(Success {
        physical_resource_id: PHYSICAL_ID.to_string(),
        data: BTreeMap::from([("Arns".to_string(), arns.join(","))]),
    })
}

/// `arn:<partition>:ec2:<region>:<account>:security-group/<id>`, in the stack's partition, region and account.
fn group_arn(stack_id: &str, group: &str) -> String {
    // arn:aws:cloudformation:us-east-1:123456789012:stack/name/guid
    let parts: Vec<&str> = stack_id.splitn(6, ':').collect();
    let part = |i: usize| parts.get(i).copied().unwrap_or_default();
    format!("arn:{}:ec2:{}:{}:security-group/{group}", part(1), part(3), part(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_are_in_the_stacks_partition_region_and_account() {
        let stack = "arn:aws-cn:cloudformation:cn-north-1:123456789012:stack/import-db/6b6f2b10";
        assert_eq!(group_arn(stack, "sg-0abc"), "arn:aws-cn:ec2:cn-north-1:123456789012:security-group/sg-0abc");
    }
}
