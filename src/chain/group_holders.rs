//! Who keeps the chain's own security group from being deleted. AWS refuses
//! `DeleteSecurityGroup` with `DependencyViolation` while a rule of another group
//! references the group or a network interface uses it (EC2 API reference,
//! DeleteSecurityGroup). A deleted load balancer's interfaces linger for minutes
//! (ELB user guide, "Delete a Network Load Balancer"), and a database rule the function
//! made goes with the tear-down or failed build that owns it: both are waited out. Someone
//! else's rule or interface holds the group until a person removes it: that is named.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::NetworkInterface;

use super::rules::{self, Rule};
use super::tags::STACK_ID_TAG;
use crate::error::{Error, Result};

/// What uses a security group.
#[derive(Debug, Default)]
pub struct Holders {
    /// Rules of other groups that reference it.
    pub rules: Vec<Rule>,
    /// Interfaces that are not a load balancer's: their IDs and what they are.
    pub interfaces: Vec<String>,
    /// A load balancer's interfaces AWS is still releasing, and database rules the function
    /// made, which the request that owns them removes.
    pub releasing: usize,
}

impl Holders {
    /// Whether only AWS itself holds the group, for a while.
    pub fn only_releasing(&self) -> bool {
        self.rules.is_empty() && self.interfaces.is_empty()
    }

    /// The error naming each holder and what to remove; the caller says how to retry.
    pub fn error(&self, group_id: &str) -> Error {
        let rules = self.rules.iter().map(|rule| {
            let direction = if rule.egress { "outbound" } else { "inbound" };
            format!("rule {} of {} ({direction}) references it", rule.id, rule.group_id)
        });
        let interfaces = self.interfaces.iter().map(|eni| format!("network interface {eni} uses it"));
        let holders: Vec<String> = rules.chain(interfaces).collect();
        Error::GroupInUse(format!(
            "the load balancer's security group {group_id} cannot be deleted: {}. The function removes only what it made: remove {} yourself, then retry",
            holders.join("; "),
            if holders.len() == 1 { "it" } else { "them" }
        ))
    }
}

/// What uses `group_id` now: other groups' rules that reference it, and interfaces that have it.
pub async fn holders(ec2: &aws_sdk_ec2::Client, group_id: &str) -> Result<Holders> {
    let referencing = |filter: &'static str| async move {
        let groups = ec2
            .describe_security_groups()
            .filters(rules::filter(filter, [group_id]))
            .send()
            .await
            .map_err(Error::aws("finding the groups whose rules reference it (DescribeSecurityGroups)"))?;
        Ok::<_, Error>(groups.security_groups.unwrap_or_default().into_iter().filter_map(|g| g.group_id))
    };
    let interfaces = async {
        let found = ec2
            .describe_network_interfaces()
            .filters(rules::filter("group-id", [group_id]))
            .send()
            .await
            .map_err(Error::aws("finding the network interfaces that use it (DescribeNetworkInterfaces)"))?;
        Ok(found.network_interfaces.unwrap_or_default())
    };
    let (inbound, outbound, interfaces) = tokio::try_join!(
        referencing("ip-permission.group-id"),
        referencing("egress.ip-permission.group-id"),
        interfaces
    )?;
    let others: BTreeSet<String> = inbound.chain(outbound).filter(|id| id != group_id).collect();
    let rules = match others.is_empty() {
        true => Vec::new(),
        false => rules::describe(ec2, vec![rules::filter("group-id", others)]).await?,
    };
    let (releasing, interfaces): (Vec<_>, Vec<_>) = interfaces.into_iter().partition(is_load_balancers);
    let referencing = rules.into_iter().filter(|rule| rule.source_group.as_deref() == Some(group_id));
    // A concurrent build of the same chain can add its database rule after this tear-down
    // read the chain; that build's own clean-up revokes it.
    let (made, rules): (Vec<_>, Vec<_>) = referencing.partition(|rule| rule.tags.contains_key(STACK_ID_TAG));
    Ok(Holders {
        rules,
        interfaces: interfaces.iter().map(describe).collect(),
        releasing: releasing.len() + made.len(),
    })
}

/// A Network Load Balancer's interface: its type, or AWS's description `ELB net/<name>/<id>`.
fn is_load_balancers(eni: &NetworkInterface) -> bool {
    let typed = eni.interface_type.as_ref().is_some_and(|t| t.as_str() == "network_load_balancer");
    typed || eni.description.as_deref().is_some_and(|d| d.starts_with("ELB "))
}

fn describe(eni: &NetworkInterface) -> String {
    let id = eni.network_interface_id.as_deref().unwrap_or("an interface");
    let what = [
        eni.description.clone().filter(|d| !d.is_empty()),
        eni.attachment.as_ref().and_then(|a| a.instance_id.clone()).map(|i| format!("attached to {i}")),
    ];
    let what: Vec<String> = what.into_iter().flatten().collect();
    match what.is_empty() {
        true => id.to_string(),
        false => format!("{id} ({})", what.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, group: &str, egress: bool) -> Rule {
        Rule {
            id: id.into(),
            group_id: group.into(),
            egress,
            protocol: "tcp".into(),
            from_port: 3306,
            to_port: 3306,
            cidr: None,
            source_group: Some("sg-own".into()),
            tags: Default::default(),
        }
    }

    #[test]
    fn the_error_names_each_holder_and_what_to_do() {
        let holders = Holders {
            rules: vec![rule("sgr-1", "sg-colleague", false), rule("sgr-2", "sg-other", true)],
            interfaces: vec!["eni-9 (my instance, attached to i-1)".into()],
            releasing: 2,
        };
        assert!(!holders.only_releasing());
        let message = holders.error("sg-own").to_string();
        for part in [
            "sg-own",
            "rule sgr-1 of sg-colleague (inbound)",
            "rule sgr-2 of sg-other (outbound)",
            "eni-9",
            "remove them yourself",
        ] {
            assert!(message.contains(part), "{message} should name {part}");
        }
        assert!(Holders { releasing: 2, ..Holders::default() }.only_releasing());
    }

    #[test]
    fn load_balancer_interfaces_are_told_apart() {
        let nlb = NetworkInterface::builder().description("ELB net/import-db-0a1b2c3d/50dc6c495c0c9188").build();
        let typed = NetworkInterface::builder()
            .interface_type(aws_sdk_ec2::types::NetworkInterfaceType::NetworkLoadBalancer)
            .build();
        let instance = NetworkInterface::builder().network_interface_id("eni-1").description("bastion").build();
        assert!(is_load_balancers(&nlb) && is_load_balancers(&typed) && !is_load_balancers(&instance));
        assert_eq!(describe(&instance), "eni-1 (bastion)");
    }
}
