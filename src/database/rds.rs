//! What the RDS API says about a DB cluster or instance.

use aws_sdk_rds::types::{DbCluster, DbInstance, Filter};
use tracing::info;

use crate::error::{Error, Result, code_of};

/// One DB instance and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub instance: String,
    /// Host name of its endpoint.
    pub endpoint: String,
    pub zone: Option<String>,
}

/// A DB subnet group: the subnets a database may use, by zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetGroup {
    pub name: String,
    pub vpc_id: String,
    /// (subnet ID, zone name)
    pub subnets: Vec<(String, String)>,
}

/// A database as RDS describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// "the DB cluster orders", "the DB instance solo", "db.example.com"
    pub kind: Kind,
    pub port: Option<u16>,
    /// A cluster's subnet group is only named; an instance's comes whole.
    pub subnet_group_name: Option<String>,
    pub subnet_group: Option<SubnetGroup>,
    /// The database's VPC security groups.
    pub security_groups: Vec<String>,
    /// None while a failover has no writer yet.
    pub writer: Option<Member>,
    /// Every member, the writer included.
    pub members: Vec<Member>,
    /// Every zone an instance of the database is in or can fail over to: each
    /// cluster member's, and a Multi-AZ instance's standby zone.
    pub placements: Vec<Placement>,
    /// The Aurora Global Database the cluster is a secondary (read-only) cluster of.
    pub secondary_of: Option<String>,
}

/// A zone holding an instance of the database.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Placement {
    pub zone: String,
    /// "orders-2", or "solo (its Multi-AZ standby)".
    pub instance: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Cluster(String),
    Instance(String),
    DnsName(String),
}

impl Described {
    /// The identifier RDS gave in its answer (lower case), or the DNS name as given: what
    /// every later filter, tag and comparison uses.
    pub fn canonical<'a>(&'a self, given: &'a str) -> &'a str {
        match &self.kind {
            Kind::Cluster(id) | Kind::Instance(id) if !id.is_empty() => id,
            _ => given,
        }
    }

    /// A database known only by a DNS name: its one "member" is the name itself.
    pub fn dns(name: &str) -> Self {
        let member = Member { instance: String::new(), endpoint: name.to_string(), zone: None };
        Described {
            kind: Kind::DnsName(name.to_string()),
            port: None,
            subnet_group_name: None,
            subnet_group: None,
            security_groups: Vec::new(),
            writer: Some(member.clone()),
            members: vec![member],
            placements: Vec::new(),
            secondary_of: None,
        }
    }

    pub fn is_rds(&self) -> bool {
        !matches!(self.kind, Kind::DnsName(_))
    }

    pub fn what(&self) -> String {
        match &self.kind {
            Kind::Cluster(id) => format!("the DB cluster {id}"),
            Kind::Instance(id) => format!("the DB instance {id}"),
            Kind::DnsName(name) => name.clone(),
        }
    }
}

/// Describes the cluster or instance called `id`. An instance that belongs to an
/// Aurora cluster stands for its cluster: the writer moves between members.
pub async fn describe(rds: &aws_sdk_rds::Client, id: &str) -> Result<Described> {
    // RDS stores identifiers in lower case (RDS API reference, CreateDBCluster and
    // CreateDBInstance: "stored as a lowercase string"), so every call and filter uses that.
    let id = &id.to_ascii_lowercase();
    // One round trip whichever `id` is: the cluster, its members, or the instance.
    let (found_cluster, members, found_instance) =
        tokio::try_join!(cluster(rds, id), cluster_members(rds, id), instance(rds, id))?;
    if let Some(found) = found_cluster {
        return with_global(rds, found, members).await;
    }
    let Some(instance) = found_instance else {
        return Err(Error::property(
            "Database",
            format!("no DB cluster or DB instance named {id:?} in this account and region"),
        ));
    };
    if let Some(cluster_id) = instance.db_cluster_identifier.clone() {
        info!(instance = id, cluster = %cluster_id, "the instance belongs to a cluster; following the cluster's writer");
        let (cluster, members) = tokio::try_join!(cluster(rds, &cluster_id), cluster_members(rds, &cluster_id))?;
        let found = cluster.ok_or_else(|| {
            Error::property("Database", format!("{id} names the DB cluster {cluster_id}, which does not exist"))
        })?;
        return with_global(rds, found, members).await;
    }
    Ok(from_instance(instance))
}

async fn with_global(rds: &aws_sdk_rds::Client, cluster: DbCluster, members: Vec<DbInstance>) -> Result<Described> {
    let secondary_of = secondary_of(rds, &cluster).await?;
    Ok(Described { secondary_of, ..from_cluster(cluster, members) })
}

async fn cluster(rds: &aws_sdk_rds::Client, id: &str) -> Result<Option<DbCluster>> {
    match rds.describe_db_clusters().db_cluster_identifier(id).send().await {
        Ok(answer) => Ok(answer.db_clusters.unwrap_or_default().into_iter().next()),
        Err(err) if code_of(&err) == Some("DBClusterNotFoundFault") => Ok(None),
        Err(err) => Err(Error::aws("reading the DB cluster (DescribeDBClusters)")(err)),
    }
}

async fn cluster_members(rds: &aws_sdk_rds::Client, cluster_id: &str) -> Result<Vec<DbInstance>> {
    let answer = rds
        .describe_db_instances()
        .filters(Filter::builder().name("db-cluster-id").values(cluster_id).build())
        .send()
        .await
        .map_err(Error::aws("reading the DB cluster's instances (DescribeDBInstances)"))?;
    Ok(answer.db_instances.unwrap_or_default())
}

async fn instance(rds: &aws_sdk_rds::Client, id: &str) -> Result<Option<DbInstance>> {
    match rds.describe_db_instances().db_instance_identifier(id).send().await {
        Ok(answer) => Ok(answer.db_instances.unwrap_or_default().into_iter().next()),
        Err(err) if matches!(code_of(&err), Some("DBInstanceNotFound" | "DBInstanceNotFoundFault")) => Ok(None),
        Err(err) => Err(Error::aws("reading the DB instance (DescribeDBInstances)")(err)),
    }
}

fn member(instance: &DbInstance) -> Option<Member> {
    Some(Member {
        instance: instance.db_instance_identifier.clone()?,
        endpoint: instance.endpoint.as_ref()?.address.clone()?,
        zone: instance.availability_zone.clone(),
    })
}

fn from_cluster(cluster: DbCluster, instances: Vec<DbInstance>) -> Described {
    let members: Vec<Member> = instances.iter().filter_map(member).collect();
    let placements = instances.iter().flat_map(placements).collect();
    let writer_id = cluster
        .db_cluster_members
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.is_cluster_writer == Some(true))
        .and_then(|m| m.db_instance_identifier);
    Described {
        kind: Kind::Cluster(cluster.db_cluster_identifier.unwrap_or_default()),
        port: cluster.port.and_then(|p| u16::try_from(p).ok()),
        subnet_group_name: cluster.db_subnet_group,
        subnet_group: None,
        security_groups: cluster
            .vpc_security_groups
            .unwrap_or_default()
            .into_iter()
            .filter_map(|g| g.vpc_security_group_id)
            .collect(),
        writer: writer_id.and_then(|id| members.iter().find(|m| m.instance == id).cloned()),
        members,
        placements,
        secondary_of: None,
    }
}

/// The Aurora Global Database `cluster` is a secondary of: a global database has one
/// writer cluster, and the others have no writer in their region (RDS API reference,
/// DescribeGlobalClusters, `GlobalClusterMembers[].IsWriter`).
async fn secondary_of(rds: &aws_sdk_rds::Client, cluster: &DbCluster) -> Result<Option<String>> {
    let Some(global) = cluster.global_cluster_identifier.as_deref().filter(|id| !id.is_empty()) else {
        return Ok(None);
    };
    let answer = rds
        .describe_global_clusters()
        .global_cluster_identifier(global)
        .send()
        .await
        .map_err(Error::aws("reading the cluster's Aurora Global Database (DescribeGlobalClusters)"))?;
    let writer = answer
        .global_clusters
        .unwrap_or_default()
        .into_iter()
        .flat_map(|g| g.global_cluster_members.unwrap_or_default())
        .find(|member| member.db_cluster_arn.is_some() && member.db_cluster_arn == cluster.db_cluster_arn)
        .and_then(|member| member.is_writer);
    Ok((writer == Some(false)).then(|| global.to_string()))
}

/// Where an instance is, and where its Multi-AZ standby is.
fn placements(instance: &DbInstance) -> Vec<Placement> {
    let id = instance.db_instance_identifier.clone().unwrap_or_default();
    let standby = instance
        .secondary_availability_zone
        .clone()
        .map(|zone| Placement { zone, instance: format!("{id} (its Multi-AZ standby)") });
    let primary = instance.availability_zone.clone().map(|zone| Placement { zone, instance: id.clone() });
    primary.into_iter().chain(standby).collect()
}

fn from_instance(instance: DbInstance) -> Described {
    let member = member(&instance);
    let placements = placements(&instance);
    let subnet_group = instance.db_subnet_group.as_ref().map(|group| SubnetGroup {
        name: group.db_subnet_group_name.clone().unwrap_or_default(),
        vpc_id: group.vpc_id.clone().unwrap_or_default(),
        subnets: subnets(group.subnets.as_deref()),
    });
    Described {
        kind: Kind::Instance(instance.db_instance_identifier.clone().unwrap_or_default()),
        port: instance
            .endpoint
            .as_ref()
            .and_then(|e| e.port)
            .or(instance.db_instance_port)
            .and_then(|p| u16::try_from(p).ok()),
        subnet_group_name: subnet_group.as_ref().map(|g| g.name.clone()),
        subnet_group,
        security_groups: instance
            .vpc_security_groups
            .unwrap_or_default()
            .into_iter()
            .filter_map(|g| g.vpc_security_group_id)
            .collect(),
        writer: member.clone(),
        members: member.into_iter().collect(),
        placements,
        secondary_of: None,
    }
}

fn subnets(subnets: Option<&[aws_sdk_rds::types::Subnet]>) -> Vec<(String, String)> {
    subnets
        .unwrap_or_default()
        .iter()
        .filter_map(|s| Some((s.subnet_identifier.clone()?, s.subnet_availability_zone.as_ref()?.name.clone()?)))
        .collect()
}

pub async fn subnet_group(rds: &aws_sdk_rds::Client, name: &str) -> Result<SubnetGroup> {
    let answer = rds
        .describe_db_subnet_groups()
        .db_subnet_group_name(name)
        .send()
        .await
        .map_err(Error::aws("reading the database's DB subnet group (DescribeDBSubnetGroups)"))?;
    let group = answer.db_subnet_groups.unwrap_or_default().into_iter().next().ok_or_else(|| Error::Unexpected {
        step: "reading the database's DB subnet group",
        message: format!("DescribeDBSubnetGroups returned no group named {name}"),
    })?;
    Ok(SubnetGroup {
        name: name.to_string(),
        vpc_id: group.vpc_id.clone().unwrap_or_default(),
        subnets: subnets(group.subnets.as_deref()),
    })
}
