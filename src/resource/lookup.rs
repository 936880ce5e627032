//! `Custom::DatabaseSecurityGroups`: the security groups whose inbound rules the
//! builder may change, and the VPC it may make its own group in, learnt when the stack
//! is deployed. `ec2:AuthorizeSecurityGroupIngress` cannot be bounded by a tag on groups
//! the stack does not own, and the condition on the rule's own tag applies only when the
//! request carries one (EC2 user guide, IAM examples); `ec2:CreateSecurityGroup` is
//! authorized on the VPC too, which carries no request tags (Service Authorization
//! Reference). So the template grants these on exactly the ARNs answered here, in a
//! policy the main resource waits for. It gets the main resource's properties, so every
//! Update that reaches the main resource first refreshes them (and the policy).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::chain::{ingress, network};
use crate::cloudformation::Success;
use crate::database::{Databases, Described};
use crate::error::Result;
use crate::spec::{Database, Spec, own_account, own_partition, own_region};

pub const RESOURCE_TYPE: &str = "Custom::DatabaseSecurityGroups";

/// Stable across updates: a new one would make CloudFormation replace the resource.
const PHYSICAL_ID: &str = "reverse-privatelink-database-security-groups";

/// An IAM statement needs a resource; this ID names no security group and no VPC.
const NONE: &str = "none";

/// In `Data.Arns`, joined by commas: the database's groups (when the chain lets the load
/// balancer in), and every group that holds a rule this stack added (so it can still be
/// revoked after the database's groups changed). In `Data.VpcArn`: the VPC of the load
/// balancer's own group (none when it has groups given).
pub async fn security_groups(
    ec2: &aws_sdk_ec2::Client,
    databases: &Databases,
    properties: &Value,
    stack_id: &str,
) -> Result<Success> {
    let spec = Spec::from_properties(properties, stack_id)?;
    let own_group = spec.security_group_ids.is_empty();
    let database = async {
        match spec.database() {
            Some(database @ Database::Identifier(_)) if spec.allow_database_ingress || own_group => {
                databases.describe(database).await.map(Some)
            }
            _ => Ok(None),
        }
    };
    let given_vpc = async {
        match own_group && !spec.subnet_ids.is_empty() {
            true => network::resolve(ec2, &spec.subnet_ids, &BTreeSet::new(), |_| false).await.map(|n| Some(n.vpc_id)),
            false => Ok(None),
        }
    };
    let (described, with_rules, given_vpc) =
        tokio::try_join!(database, ingress::groups_with_rules_of(ec2, stack_id), given_vpc)?;
    let database_groups = match &described {
        Some(described) if spec.allow_database_ingress => described.security_groups.clone(),
        _ => Vec::new(),
    };
    let vpc = match (own_group, given_vpc, &described) {
        (false, _, _) => None,
        (true, Some(vpc), _) => Some(vpc),
        (true, None, Some(described)) => Some(database_vpc(databases, described).await?),
        (true, None, None) => None,
    };
    let groups: BTreeSet<String> = database_groups.into_iter().chain(with_rules).collect();
    let arns: Vec<String> = match groups.is_empty() {
        true => vec![ec2_arn(stack_id, "security-group", NONE)],
        false => groups.iter().map(|group| ec2_arn(stack_id, "security-group", group)).collect(),
    };
    let vpc_arn = ec2_arn(stack_id, "vpc", vpc.as_deref().unwrap_or(NONE));
    Ok(Success {
        physical_resource_id: PHYSICAL_ID.to_string(),
        data: BTreeMap::from([("Arns".to_string(), arns.join(",")), ("VpcArn".to_string(), vpc_arn)]),
    })
}

/// The VPC of the database's DB subnet group, where derived subnets come from.
async fn database_vpc(databases: &Databases, described: &Described) -> Result<String> {
    match (&described.subnet_group, &described.subnet_group_name) {
        (Some(group), _) => Ok(group.vpc_id.clone()),
        (None, Some(name)) => Ok(databases.subnet_group(name).await?.vpc_id),
        (None, None) => Ok(NONE.to_string()),
    }
}

/// `arn:<partition>:ec2:<region>:<account>:<kind>/<id>`, in the stack's partition, region and account.
fn ec2_arn(stack_id: &str, kind: &str, id: &str) -> String {
    let part = |field: fn(&str) -> Option<&str>| field(stack_id).unwrap_or_default();
    format!("arn:{}:ec2:{}:{}:{kind}/{id}", part(own_partition), part(own_region), part(own_account))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_are_in_the_stacks_partition_region_and_account() {
        let stack = "arn:aws-cn:cloudformation:cn-north-1:123456789012:stack/import-db/6b6f2b10";
        assert_eq!(
            ec2_arn(stack, "security-group", "sg-0abc"),
            "arn:aws-cn:ec2:cn-north-1:123456789012:security-group/sg-0abc"
        );
        assert_eq!(ec2_arn(stack, "vpc", "vpc-0abc"), "arn:aws-cn:ec2:cn-north-1:123456789012:vpc/vpc-0abc");
    }
}
