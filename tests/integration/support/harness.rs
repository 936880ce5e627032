//! The function run in-process against a moto server of its own, with a local
//! listener standing in for CloudFormation's response URL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ec2::types::Tag as Ec2Tag;
use aws_sdk_elasticloadbalancingv2::types::{LoadBalancerTypeEnum, Tag as ElbTag};
use lambda_runtime::{Context, LambdaEvent};
use reverse_privatelink::Function;
use reverse_privatelink::chain::{GENERATION_TAG, LOGICAL_ID_TAG, STACK_ID_TAG, generation};
use reverse_privatelink::database::{DNS_SERVER_ENV, Dns};
use reverse_privatelink::incoming::Incoming;
use reverse_privatelink::sync::STACK_ENV;
use serde_json::{Value, json};

use super::dns::DnsResponder;
use super::http::Server;
use super::moto::{BUILDER_KEY, FOLLOWER_KEY, Moto};
use super::proxy::Proxy;

pub const LOGICAL_ID: &str = "ReversePrivateLink";
pub const CONSUMER: &str = "arn:aws:iam::123456789012:root";
pub const SECOND_CONSUMER: &str = "arn:aws:iam::210987654321:root";
pub const WRITER_IP: &str = "10.0.1.25";

/// The seed's starting state: a VPC with three subnets in three zones, a
/// security group, plus the odd pieces bad-input tests need.
#[derive(Debug, Clone)]
pub struct Seed {
    pub vpc_id: String,
    /// In us-east-1a, b and c.
    pub subnets: Vec<String>,
    /// Zone IDs of `subnets`, same order.
    pub zone_ids: Vec<String>,
    pub security_group: String,
    pub second_security_group: String,
    /// A second subnet in us-east-1a.
    pub same_zone_subnet: String,
    /// A subnet and a security group in another VPC.
    pub other_vpc_subnet: String,
    pub other_vpc_security_group: String,
}

pub async fn seed(ec2: &aws_sdk_ec2::Client) -> Seed {
    let vpc = |cidr: &'static str| async move {
        ec2.create_vpc().cidr_block(cidr).send().await.unwrap().vpc.unwrap().vpc_id.unwrap()
    };
    let subnet = |vpc: String, cidr: &'static str, zone: &'static str| async move {
        let subnet = ec2
            .create_subnet()
            .vpc_id(vpc)
            .cidr_block(cidr)
            .availability_zone(zone)
            .send()
            .await
            .unwrap()
            .subnet
            .unwrap();
        (subnet.subnet_id.unwrap(), subnet.availability_zone_id.unwrap())
    };
    let group = |vpc: String, name: &'static str| async move {
        ec2.create_security_group()
            .group_name(name)
            .description("test")
            .vpc_id(vpc)
            .send()
            .await
            .unwrap()
            .group_id
            .unwrap()
    };
    let vpc_id = vpc("10.0.0.0/16").await;
    let mut subnets = Vec::new();
    let mut zone_ids = Vec::new();
    for (cidr, zone) in [("10.0.1.0/24", "us-east-1a"), ("10.0.2.0/24", "us-east-1b"), ("10.0.3.0/24", "us-east-1c")] {
        let (id, zone_id) = subnet(vpc_id.clone(), cidr, zone).await;
        subnets.push(id);
        zone_ids.push(zone_id);
    }
    let other_vpc = vpc("10.9.0.0/16").await;
    Seed {
        security_group: group(vpc_id.clone(), "nlb").await,
        second_security_group: group(vpc_id.clone(), "nlb-2").await,
        same_zone_subnet: subnet(vpc_id.clone(), "10.0.4.0/24", "us-east-1a").await.0,
        other_vpc_subnet: subnet(other_vpc.clone(), "10.9.1.0/24", "us-east-1b").await.0,
        other_vpc_security_group: group(other_vpc, "elsewhere").await,
        vpc_id,
        subnets,
        zone_ids,
    }
}

static REQUESTS: AtomicUsize = AtomicUsize::new(0);

/// One test's world: moto, the seed, a DNS responder, the builder and the follower, and
/// CloudFormation's listener.
pub struct Harness {
    pub moto: Moto,
    pub ec2: aws_sdk_ec2::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub rds: aws_sdk_rds::Client,
    pub seed: Seed,
    pub dns: DnsResponder,
    pub cloudformation: Server,
    /// The builder, as CloudFormation invokes it, signing as the template's `FunctionRole`.
    pub function: Function,
    /// The follower, as the schedule and RDS events invoke it, signing as `FollowerRole`.
    pub follower: Function,
    /// The builder serving the stack's `Custom::DatabaseSecurityGroups`, straight to moto, and
    /// where its answers go: apart from the function under test, so no fault, count or
    /// recorded answer of a test sees it.
    lookup: Function,
    lookup_answers: Server,
    /// Whether the stack's policies have had the lookup's answer once.
    looked_up: AtomicBool,
    pub stack_id: String,
}

impl Harness {
    pub async fn new() -> Harness {
        let moto = Moto::start().await;
        let endpoint = moto.endpoint.clone();
        Self::reaching(moto, &endpoint, None).await
    }

    /// The functions reaching AWS at `endpoint` (a proxy, say), with the SDK's retries as the
    /// function ships them, or only `attempts` quick tries (for persistent failures, which the
    /// SDK would otherwise retry for a minute); the test's own clients reach moto directly.
    pub async fn reaching(moto: Moto, endpoint: &str, attempts: Option<u32>) -> Harness {
        let config = |key: &'static str| {
            let moto = &moto;
            async move {
                match attempts {
                    Some(attempts) => moto.sdk_config_impatient(key, endpoint, attempts).await,
                    None => moto.sdk_config_as(key, endpoint).await,
                }
            }
        };
        let dns = DnsResponder::start().await;
        let function = Function::new(&config(BUILDER_KEY).await, Dns::server(dns.addr)).unwrap();
        let follower = Function::new(&config(FOLLOWER_KEY).await, Dns::server(dns.addr)).unwrap();
        let lookup = moto.sdk_config_as(BUILDER_KEY, &moto.endpoint).await;
        let lookup = Function::new(&lookup, Dns::server(dns.addr)).unwrap();
        let seed_config = moto.sdk_config().await;
        let ec2 = aws_sdk_ec2::Client::new(&seed_config);
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&seed_config);
        let rds = aws_sdk_rds::Client::new(&seed_config);
        let seed = seed(&ec2).await;
        let n = REQUESTS.fetch_add(1, Ordering::SeqCst);
        let stack_id =
            format!("arn:aws:cloudformation:us-east-1:123456789012:stack/import-db/00000000-0000-0000-0000-{n:012}");
        moto.deploy_stack(&stack_id, &json!({}), Some((BUILDER_KEY, FOLLOWER_KEY))).await;
        Harness {
            moto,
            ec2,
            elb,
            rds,
            seed,
            dns,
            cloudformation: Server::http().await,
            function,
            follower,
            lookup,
            lookup_answers: Server::http().await,
            looked_up: AtomicBool::new(false),
            stack_id,
        }
    }

    /// A harness whose functions reach moto through a fault proxy (see [`Harness::reaching`]).
    pub async fn behind_proxy(attempts: Option<u32>) -> (Harness, Proxy) {
        let moto = Moto::start().await;
        let proxy = Proxy::start(&moto.endpoint).await;
        (Harness::reaching(moto, &proxy.endpoint, attempts).await, proxy)
    }

    /// What the built binary needs besides the Runtime API: where AWS and DNS are, and the
    /// builder's key (the follower's: [`Harness::follower_env`]).
    pub fn binary_env(&self, aws_endpoint: &str) -> Vec<(String, String)> {
        self.signing_as(BUILDER_KEY, aws_endpoint)
    }

    /// The follower's, as the template deploys it: its own key, and the stack it follows.
    pub fn follower_env(&self, aws_endpoint: &str) -> Vec<(String, String)> {
        let mut env = self.signing_as(FOLLOWER_KEY, aws_endpoint);
        env.push((STACK_ENV.to_string(), self.stack_id.clone()));
        env
    }

    pub fn signing_as(&self, key: &str, aws_endpoint: &str) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".to_string(), aws_endpoint.to_string()),
            ("AWS_ACCESS_KEY_ID".to_string(), key.to_string()),
            (DNS_SERVER_ENV.to_string(), self.dns.addr.to_string()),
        ]
    }

    /// What CloudFormation does before the main resource's request `event`: the stack's
    /// `Custom::DatabaseSecurityGroups` gets the same properties first (on every Create and
    /// Update; once the stack exists, a Delete finds its answer in place), and the policy
    /// that grants what it answered is attached to the builder's role.
    pub async fn as_cloudformation_would(&self, event: &Value) {
        if event["ResourceType"] != "Custom::ReversePrivateLink" {
            return;
        }
        let first = !self.looked_up.swap(true, Ordering::SeqCst);
        if matches!(event["RequestType"].as_str(), Some("Create" | "Update")) || first {
            self.look_up(&event["ResourceProperties"]).await;
        }
    }

    /// The lookup's answer for `properties`, given to the emulator's rendering of the policies.
    async fn look_up(&self, properties: &Value) {
        self.look_up_for(&self.lookup, &self.stack_id, properties).await;
    }

    /// The same for another stack of the account, whose builder is `lookup`.
    pub async fn look_up_for(&self, lookup: &Function, stack_id: &str, properties: &Value) {
        let request_id = new_request_id();
        let event = json!({
            "RequestType": "Create",
            "ResponseURL": self.lookup_answers.url(&format!("responses/{request_id}")),
            "StackId": stack_id,
            "RequestId": request_id,
            "ResourceType": "Custom::DatabaseSecurityGroups",
            "LogicalResourceId": "DatabaseSecurityGroups",
            "ResourceProperties": properties,
        });
        invoke(lookup, event, Duration::from_secs(60)).await.unwrap();
        let answers = self.lookup_answers.recorded();
        let Some(answer) = answers.iter().map(|r| r.json()).find(|a| a["RequestId"] == request_id.as_str()) else {
            return;
        };
        // A failed lookup fails the stack before the main resource; the tests send that anyway.
        if answer["Status"] == "SUCCESS" {
            let attributes = json!({
                "DatabaseSecurityGroups.Arns": answer["Data"]["Arns"],
                "DatabaseSecurityGroups.VpcArn": answer["Data"]["VpcArn"],
            });
            self.moto.deploy_stack(stack_id, &attributes, None).await;
        }
    }

    /// The seed's properties: three subnets, a security group, the writer, one consumer, a tag.
    pub fn properties(&self) -> Value {
        json!({
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:reverse-privatelink",
            "ServiceTimeout": "900",
            "SubnetIds": self.seed.subnets,
            "SecurityGroupIds": [self.seed.security_group],
            "TargetIps": [WRITER_IP],
            "AllowedPrincipals": [CONSUMER],
            "Tags": [{"Key": "team", "Value": "data"}],
        })
    }

    fn event(&self, request_type: &str, request_id: &str, properties: &Value) -> Value {
        json!({
            "RequestType": request_type,
            "ResponseURL": self.cloudformation.url(&format!("responses/{request_id}")),
            "StackId": self.stack_id,
            "RequestId": request_id,
            "ResourceType": "Custom::ReversePrivateLink",
            "LogicalResourceId": LOGICAL_ID,
            "ResourceProperties": properties,
        })
    }

    pub fn create_event(&self, properties: &Value) -> Value {
        self.event("Create", &new_request_id(), properties)
    }

    pub fn update_event(&self, physical_id: &str, old: &Value, new: &Value) -> Value {
        let mut event = self.event("Update", &new_request_id(), new);
        event["PhysicalResourceId"] = json!(physical_id);
        event["OldResourceProperties"] = old.clone();
        event
    }

    pub fn delete_event(&self, physical_id: &str, properties: &Value) -> Value {
        let mut event = self.event("Delete", &new_request_id(), properties);
        event["PhysicalResourceId"] = json!(physical_id);
        event
    }

    /// Invokes the function with `event` and returns CloudFormation's answer to it.
    pub async fn send(&self, event: &Value) -> Value {
        self.send_with_deadline(event, Duration::from_secs(120)).await
    }

    pub async fn send_with_deadline(&self, event: &Value, deadline: Duration) -> Value {
        self.as_cloudformation_would(event).await;
        invoke(&self.function, event.clone(), deadline).await.unwrap();
        self.answer_to(event)
    }

    /// The one answer CloudFormation received for `event`'s request.
    pub fn answer_to(&self, event: &Value) -> Value {
        let answers: Vec<Value> = self
            .cloudformation
            .recorded()
            .iter()
            .map(|r| r.json())
            .filter(|answer| answer["RequestId"] == event["RequestId"])
            .collect();
        assert_eq!(answers.len(), 1, "expected exactly one answer to {}, got {answers:?}", event["RequestId"]);
        answers[0].clone()
    }

    pub async fn create(&self, properties: &Value) -> Value {
        let answer = self.send(&self.create_event(properties)).await;
        assert_eq!(answer["Status"], "SUCCESS", "{answer}");
        answer
    }

    pub async fn inventory(&self) -> Inventory {
        inventory(&self.ec2, &self.elb).await
    }

    pub async fn chain(&self, answer: &Value) -> ChainView {
        chain_view(&self.ec2, &self.elb, answer["Data"]["ServiceId"].as_str().unwrap()).await
    }

    /// Builds part of a chain the way a crashed request `request_id` would have left it.
    pub async fn leave_debris(&self, request_id: &str, with_target_group: bool) -> String {
        let generation = generation(request_id);
        let tags = [
            (STACK_ID_TAG, self.stack_id.as_str()),
            (LOGICAL_ID_TAG, LOGICAL_ID),
            (GENERATION_TAG, generation.as_str()),
        ]
        .map(|(k, v)| ElbTag::builder().key(k).value(v).build());
        let name = format!("import-db-{generation}");
        let lb = self
            .elb
            .create_load_balancer()
            .name(&name)
            .r#type(LoadBalancerTypeEnum::Network)
            .scheme(aws_sdk_elasticloadbalancingv2::types::LoadBalancerSchemeEnum::Internal)
            .set_subnets(Some(self.seed.subnets.clone()))
            .security_groups(&self.seed.security_group)
            .set_tags(Some(tags.to_vec()))
            .send()
            .await
            .unwrap();
        if with_target_group {
            self.elb
                .create_target_group()
                .name(&name)
                .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Tcp)
                .port(3306)
                .vpc_id(&self.seed.vpc_id)
                .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Ip)
                .set_tags(Some(tags.to_vec()))
                .send()
                .await
                .unwrap();
        }
        lb.load_balancers.unwrap()[0].load_balancer_arn.clone().unwrap()
    }
}

pub fn new_request_id() -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), REQUESTS.fetch_add(1, Ordering::SeqCst))
}

/// Calls the function as the runtime would, with a deadline `deadline` from now; returns what the invoker reads.
pub async fn invoke(function: &Function, event: Value, deadline: Duration) -> Result<Value, lambda_runtime::Error> {
    let mut context = Context::default();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    context.deadline = (now + deadline).as_millis() as u64;
    context.request_id = new_request_id();
    function.handle(LambdaEvent::new(Incoming::classify(event), context)).await
}

/// Everything in the emulator that this project could have made.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    pub load_balancers: BTreeSet<String>,
    pub target_groups: BTreeSet<String>,
    pub listeners: BTreeSet<String>,
    pub services: BTreeSet<String>,
    /// Security groups and security group rules carrying the function's ownership tag.
    pub security_groups: BTreeSet<String>,
    pub security_group_rules: BTreeSet<String>,
}

impl Inventory {
    pub fn is_empty(&self) -> bool {
        self == &Inventory::default()
    }

    /// How many load balancers, target groups, listeners and endpoint services there are.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (self.load_balancers.len(), self.target_groups.len(), self.listeners.len(), self.services.len())
    }
}

pub async fn inventory(ec2: &aws_sdk_ec2::Client, elb: &aws_sdk_elasticloadbalancingv2::Client) -> Inventory {
    let lbs = elb.describe_load_balancers().send().await.unwrap().load_balancers.unwrap_or_default();
    let mut listeners = BTreeSet::new();
    for lb in &lbs {
        let found =
            elb.describe_listeners().load_balancer_arn(lb.load_balancer_arn.clone().unwrap()).send().await.unwrap();
        listeners.extend(found.listeners.unwrap_or_default().into_iter().filter_map(|l| l.listener_arn));
    }
    let tgs = elb.describe_target_groups().send().await.unwrap().target_groups.unwrap_or_default();
    let services = ec2
        .describe_vpc_endpoint_service_configurations()
        .send()
        .await
        .unwrap()
        .service_configurations
        .unwrap_or_default();
    let owned = aws_sdk_ec2::types::Filter::builder().name("tag-key").values(STACK_ID_TAG).build();
    let groups = ec2.describe_security_groups().filters(owned.clone()).send().await.unwrap();
    let rules = ec2.describe_security_group_rules().filters(owned).send().await.unwrap();
    Inventory {
        load_balancers: lbs.into_iter().filter_map(|lb| lb.load_balancer_arn).collect(),
        target_groups: tgs.into_iter().filter_map(|tg| tg.target_group_arn).collect(),
        listeners,
        services: services.into_iter().filter_map(|s| s.service_id).collect(),
        security_groups: groups.security_groups.unwrap_or_default().into_iter().filter_map(|g| g.group_id).collect(),
        security_group_rules: rules
            .security_group_rules
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| r.security_group_rule_id)
            .collect(),
    }
}

/// A chain as AWS describes it, read back resource by resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainView {
    pub service_id: String,
    pub acceptance_required: bool,
    pub service_load_balancers: Vec<String>,
    pub principals: BTreeSet<String>,
    pub service_tags: BTreeMap<String, String>,
    pub load_balancer_arn: String,
    pub load_balancer_name: String,
    pub scheme: String,
    pub load_balancer_type: String,
    pub subnets: BTreeSet<String>,
    pub security_groups: BTreeSet<String>,
    pub cross_zone: String,
    pub load_balancer_tags: BTreeMap<String, String>,
    pub target_group_arn: String,
    pub target_group_protocol: String,
    pub target_group_port: i32,
    pub target_type: String,
    pub targets: BTreeSet<(String, i32)>,
    pub target_group_tags: BTreeMap<String, String>,
    pub listener_arn: String,
    pub listener_protocol: String,
    pub listener_port: i32,
    pub listener_forwards_to: Vec<String>,
    pub listener_tags: BTreeMap<String, String>,
}

async fn elb_tags(elb: &aws_sdk_elasticloadbalancingv2::Client, arn: &str) -> BTreeMap<String, String> {
    let described = elb.describe_tags().resource_arns(arn).send().await.unwrap();
    described.tag_descriptions.unwrap()[0]
        .tags
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key.unwrap(), t.value.unwrap_or_default()))
        .collect()
}

pub async fn chain_view(
    ec2: &aws_sdk_ec2::Client,
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    service_id: &str,
) -> ChainView {
    let service = ec2
        .describe_vpc_endpoint_service_configurations()
        .service_ids(service_id)
        .send()
        .await
        .unwrap()
        .service_configurations
        .unwrap()[0]
        .clone();
    let principals = ec2
        .describe_vpc_endpoint_service_permissions()
        .service_id(service_id)
        .send()
        .await
        .unwrap()
        .allowed_principals
        .unwrap_or_default();
    let lb_arn = service.network_load_balancer_arns.clone().unwrap()[0].clone();
    let lb = elb.describe_load_balancers().load_balancer_arns(&lb_arn).send().await.unwrap().load_balancers.unwrap()[0]
        .clone();
    let attributes =
        elb.describe_load_balancer_attributes().load_balancer_arn(&lb_arn).send().await.unwrap().attributes.unwrap();
    let listener = elb.describe_listeners().load_balancer_arn(&lb_arn).send().await.unwrap().listeners.unwrap();
    assert_eq!(listener.len(), 1, "one listener expected: {listener:?}");
    let listener = listener[0].clone();
    let actions = listener.default_actions.clone().unwrap();
    let tg_arn = actions[0].target_group_arn.clone().unwrap();
    let tg =
        elb.describe_target_groups().target_group_arns(&tg_arn).send().await.unwrap().target_groups.unwrap()[0].clone();
    let health = elb
        .describe_target_health()
        .target_group_arn(&tg_arn)
        .send()
        .await
        .unwrap()
        .target_health_descriptions
        .unwrap_or_default();
    ChainView {
        service_id: service_id.to_string(),
        acceptance_required: service.acceptance_required.unwrap(),
        service_load_balancers: service.network_load_balancer_arns.clone().unwrap(),
        principals: principals.into_iter().filter_map(|p| p.principal).collect(),
        service_tags: service
            .tags
            .unwrap_or_default()
            .into_iter()
            .map(|t: Ec2Tag| (t.key.unwrap(), t.value.unwrap_or_default()))
            .collect(),
        load_balancer_name: lb.load_balancer_name.clone().unwrap(),
        scheme: lb.scheme.clone().unwrap().as_str().to_string(),
        load_balancer_type: lb.r#type.clone().unwrap().as_str().to_string(),
        subnets: lb.availability_zones.clone().unwrap().into_iter().filter_map(|z| z.subnet_id).collect(),
        security_groups: lb.security_groups.clone().unwrap_or_default().into_iter().collect(),
        cross_zone: attributes
            .iter()
            .find(|a| a.key.as_deref() == Some("load_balancing.cross_zone.enabled"))
            .unwrap()
            .value
            .clone()
            .unwrap(),
        load_balancer_tags: elb_tags(elb, &lb_arn).await,
        load_balancer_arn: lb_arn,
        target_group_protocol: tg.protocol.clone().unwrap().as_str().to_string(),
        target_group_port: tg.port.unwrap(),
        target_type: tg.target_type.clone().unwrap().as_str().to_string(),
        targets: health.into_iter().map(|h| h.target.unwrap()).map(|t| (t.id.unwrap(), t.port.unwrap())).collect(),
        target_group_tags: elb_tags(elb, &tg_arn).await,
        target_group_arn: tg_arn,
        listener_protocol: listener.protocol.clone().unwrap().as_str().to_string(),
        listener_port: listener.port.unwrap(),
        listener_forwards_to: actions.iter().filter_map(|a| a.target_group_arn.clone()).collect(),
        listener_tags: elb_tags(elb, listener.listener_arn.as_deref().unwrap()).await,
        listener_arn: listener.listener_arn.unwrap(),
    }
}

/// An Aurora cluster of two instances and a Multi-AZ instance over the seed's
/// subnets, with DNS answering their endpoint names as AWS's public DNS would.
#[derive(Debug, Clone)]
pub struct DbSeed {
    pub cluster: String,
    pub cluster_endpoint: String,
    /// The first writer, in us-east-1a, and the reader, in us-east-1b.
    pub writer: DbInstance,
    pub reader: DbInstance,
    /// A Multi-AZ MySQL instance outside any cluster.
    pub solo: DbInstance,
    /// The databases' VPC security group.
    pub security_group: String,
}

#[derive(Debug, Clone)]
pub struct DbInstance {
    pub id: String,
    pub endpoint: String,
    pub address: std::net::Ipv4Addr,
}

/// Not MySQL's default, so a test can tell a port taken from the database from the default.
pub const DB_PORT: u16 = 3307;

impl Harness {
    pub async fn seed_database(&self) -> DbSeed {
        let security_group = self
            .ec2
            .create_security_group()
            .group_name("database")
            .description("the database")
            .vpc_id(&self.seed.vpc_id)
            .send()
            .await
            .unwrap()
            .group_id
            .unwrap();
        self.rds
            .create_db_subnet_group()
            .db_subnet_group_name("database-subnets")
            .db_subnet_group_description("the database's subnets")
            .set_subnet_ids(Some(self.seed.subnets.clone()))
            .send()
            .await
            .unwrap();
        let cluster = self
            .rds
            .create_db_cluster()
            .db_cluster_identifier("orders")
            .engine("aurora-mysql")
            .master_username("admin")
            .master_user_password("correct-horse-battery")
            .db_subnet_group_name("database-subnets")
            .vpc_security_group_ids(&security_group)
            .port(i32::from(DB_PORT))
            .send()
            .await
            .unwrap()
            .db_cluster
            .unwrap();
        let mut members = Vec::new();
        for (id, zone, address) in [("orders-1", "us-east-1a", "10.0.1.50"), ("orders-2", "us-east-1b", "10.0.2.50")] {
            members.push(self.cluster_member(id, zone, address).await);
        }
        let solo = self
            .rds
            .create_db_instance()
            .db_instance_identifier("solo")
            .engine("mysql")
            .db_instance_class("db.t3.micro")
            .allocated_storage(20)
            .multi_az(true)
            .master_username("admin")
            .master_user_password("correct-horse-battery")
            .db_subnet_group_name("database-subnets")
            .vpc_security_group_ids(&security_group)
            .port(i32::from(DB_PORT))
            .availability_zone("us-east-1c")
            .send()
            .await
            .unwrap()
            .db_instance
            .unwrap();
        let solo = self.known("solo", solo.endpoint.unwrap().address.unwrap(), "10.0.3.60");
        let cluster_endpoint = cluster.endpoint.unwrap();
        self.dns.set(&cluster_endpoint, &[members[0].address]);
        let reader = members.pop().unwrap();
        let writer = members.pop().unwrap();
        DbSeed { cluster: "orders".into(), cluster_endpoint, writer, reader, solo, security_group }
    }

    /// An instance of the orders cluster in `zone`, its endpoint answering `address`.
    pub async fn cluster_member(&self, id: &str, zone: &str, address: &str) -> DbInstance {
        let instance = self
            .rds
            .create_db_instance()
            .db_instance_identifier(id)
            .db_cluster_identifier("orders")
            .engine("aurora-mysql")
            .db_instance_class("db.r6g.large")
            .availability_zone(zone)
            .send()
            .await
            .unwrap()
            .db_instance
            .unwrap();
        self.known(id, instance.endpoint.unwrap().address.unwrap(), address)
    }

    fn known(&self, id: &str, endpoint: String, address: &str) -> DbInstance {
        let address = address.parse().unwrap();
        self.dns.set(&endpoint, &[address]);
        DbInstance { id: id.to_string(), endpoint, address }
    }

    /// Properties that follow `database` and name nothing else but the consumer.
    pub fn following(&self, database: &str) -> Value {
        json!({
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:reverse-privatelink",
            "ServiceTimeout": "900",
            "Database": database,
            "AllowedPrincipals": [CONSUMER],
        })
    }

    /// An EventBridge scheduled event, as the schedule rule delivers it.
    pub fn scheduled_event(&self) -> Value {
        json!({
            "version": "0",
            "id": new_request_id(),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": "2026-11-25T06:00:00Z",
            "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/import-db-follow-writer"],
            "detail": {}
        })
    }

    /// An RDS event through EventBridge, e.g. RDS-EVENT-0071 (cluster failover completed), in
    /// the form AWS publishes (RDS user guide, "Amazon RDS event examples"): the identifier
    /// prefixed `rds:`, the ARN naming the database.
    pub fn rds_event(&self, source_type: &str, source: &str, event_id: &str) -> Value {
        let (detail_type, arn_kind) = match source_type {
            "CLUSTER" => ("RDS DB Cluster Event", "cluster"),
            _ => ("RDS DB Instance Event", "db"),
        };
        json!({
            "version": "0",
            "id": new_request_id(),
            "detail-type": detail_type,
            "source": "aws.rds",
            "account": "123456789012",
            "time": "2026-11-25T06:00:00Z",
            "region": "us-east-1",
            "resources": [format!("arn:aws:rds:us-east-1:123456789012:{arn_kind}:{source}")],
            "detail": {
                "EventCategories": ["failover"],
                "SourceType": source_type,
                "SourceArn": format!("arn:aws:rds:us-east-1:123456789012:{arn_kind}:{source}"),
                "Date": "2026-11-25T06:00:00.000Z",
                "Message": "Completed failover to DB instance: orders-2",
                "SourceIdentifier": format!("rds:{source}"),
                "EventID": event_id
            }
        })
    }

    /// Delivers an EventBridge event to the follower, which never fails it.
    pub async fn deliver(&self, event: &Value) {
        invoke(&self.follower, event.clone(), Duration::from_secs(300))
            .await
            .expect("a sync never fails the invocation");
    }

    /// The addresses registered in a target group, draining ones included.
    pub async fn targets(&self, target_group_arn: &str) -> BTreeSet<String> {
        let health = self.elb.describe_target_health().target_group_arn(target_group_arn).send().await.unwrap();
        health.target_health_descriptions.unwrap_or_default().into_iter().filter_map(|d| d.target?.id).collect()
    }
}

/// A security group rule as the tests compare them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleView {
    pub egress: bool,
    pub protocol: String,
    pub from: i32,
    pub to: i32,
    pub cidr: Option<String>,
    pub source_group: Option<String>,
    pub owned: bool,
}

impl Harness {
    /// Every rule of a security group.
    pub async fn rules(&self, group_id: &str) -> BTreeSet<RuleView> {
        let rules = self
            .ec2
            .describe_security_group_rules()
            .filters(aws_sdk_ec2::types::Filter::builder().name("group-id").values(group_id).build())
            .send()
            .await
            .unwrap()
            .security_group_rules
            .unwrap_or_default();
        rules
            .into_iter()
            .map(|r| RuleView {
                egress: r.is_egress.unwrap(),
                protocol: r.ip_protocol.unwrap_or_default(),
                from: r.from_port.unwrap_or(-1),
                to: r.to_port.unwrap_or(-1),
                cidr: r.cidr_ipv4,
                source_group: r.referenced_group_info.and_then(|g| g.group_id),
                owned: r.tags.unwrap_or_default().iter().any(|t| t.key.as_deref() == Some(STACK_ID_TAG)),
            })
            .collect()
    }
}
