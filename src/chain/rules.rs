//! Security group rules as the chain reads them.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, IpPermission, SecurityGroupRule, UserIdGroupPair};

use super::tags;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub group_id: String,
    pub egress: bool,
    /// "tcp", or "-1" for every protocol.
    pub protocol: String,
    pub from_port: i32,
    pub to_port: i32,
    pub cidr: Option<String>,
    pub source_group: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl Rule {
    fn from_sdk(rule: SecurityGroupRule) -> Self {
        Rule {
            tags: tags::ec2_map(rule.tags.as_deref()),
            id: rule.security_group_rule_id.unwrap_or_default(),
            group_id: rule.group_id.unwrap_or_default(),
            egress: rule.is_egress.unwrap_or_default(),
            protocol: rule.ip_protocol.unwrap_or_default(),
            from_port: rule.from_port.unwrap_or(-1),
            to_port: rule.to_port.unwrap_or(-1),
            cidr: rule.cidr_ipv4,
            source_group: rule.referenced_group_info.and_then(|g| g.group_id),
        }
    }

    /// Whether the rule lets TCP on `port` through.
    pub fn admits_tcp(&self, port: u16) -> bool {
        let port = i32::from(port);
        self.protocol == "-1" || (self.protocol == "tcp" && self.from_port <= port && port <= self.to_port)
    }
}

/// The rules matching `filters` (e.g. `group-id`, `tag:…`).
pub async fn describe(ec2: &aws_sdk_ec2::Client, filters: Vec<Filter>) -> Result<Vec<Rule>> {
    let rules: Vec<SecurityGroupRule> = ec2
        .describe_security_group_rules()
        .set_filters(Some(filters))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(Error::aws("reading security group rules (DescribeSecurityGroupRules)"))?;
    Ok(rules.into_iter().map(Rule::from_sdk).collect())
}

pub fn filter(name: &str, values: impl IntoIterator<Item = impl Into<String>>) -> Filter {
    Filter::builder().name(name).set_values(Some(values.into_iter().map(Into::into).collect())).build()
}

/// TCP on `port` from another security group.
pub fn tcp_from_group(port: u16, group_id: &str, description: &str) -> IpPermission {
    IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(i32::from(port))
        .to_port(i32::from(port))
        .user_id_group_pairs(UserIdGroupPair::builder().group_id(group_id).description(description).build())
        .build()
}
