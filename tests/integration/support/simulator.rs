//! CloudFormation's real sequences, played against the built binary through a
//! Runtime API: the stand-in CloudFormation answers `DescribeStackResource` and
//! `DescribeStacks` from the stack's state as it evolves and ignores answers it no
//! longer waits for. After every sequence one invariant holds: the account has
//! exactly the chain the stack references, or nothing after a stack deletion or a
//! failed creation. Eventual consistency is played at the proxy.

use std::time::Duration;

use serde_json::{Value, json};

use super::cloudformation::CloudFormation;
use super::harness::{Harness, LOGICAL_ID, chain_view, new_request_id};
use super::proxy::Proxy;
use super::runtime::{Ended, Process, RuntimeApi};

pub const TIMEOUT: Duration = Duration::from_secs(120);

pub struct Simulator {
    pub h: Harness,
    pub proxy: Proxy,
    pub cfn: CloudFormation,
    pub runtime: RuntimeApi,
    /// Two function instances, so a Delete can run while a Create is still building.
    processes: Vec<Process>,
}

impl Simulator {
    pub async fn start() -> Simulator {
        let (h, proxy) = Harness::behind_proxy(None).await;
        let cfn = CloudFormation::start(&h.stack_id, LOGICAL_ID, &h.moto.endpoint).await;
        let runtime = RuntimeApi::start().await;
        let mut simulator = Simulator { h, proxy, cfn, runtime, processes: Vec::new() };
        simulator.restart().await;
        simulator
    }

    /// Kills the function instances (a crash) and starts fresh ones.
    pub async fn restart(&mut self) {
        for process in self.processes.drain(..) {
            process.stop().await;
        }
        for _ in 0..2 {
            let mut env = self.h.binary_env(&self.proxy.endpoint);
            env.push(("AWS_ENDPOINT_URL_CLOUDFORMATION".into(), self.cfn.endpoint.clone()));
            self.processes.push(Process::start(&self.runtime, env));
        }
    }

    /// The follower, as the template deploys it: the same binary behind a Runtime API of its own.
    pub fn follower(&self, runtime: &RuntimeApi) -> Process {
        let mut env = self.h.follower_env(&self.proxy.endpoint);
        env.push(("AWS_ENDPOINT_URL_CLOUDFORMATION".into(), self.cfn.endpoint.clone()));
        Process::start(runtime, env)
    }

    pub fn event(&self, kind: &str, properties: &Value, physical: Option<&str>, old: Option<&Value>) -> Value {
        let request_id = new_request_id();
        let mut event = json!({
            "RequestType": kind,
            "ResponseURL": self.cfn.response_url(&request_id),
            "StackId": self.h.stack_id,
            "RequestId": request_id,
            "ResourceType": "Custom::ReversePrivateLink",
            "LogicalResourceId": LOGICAL_ID,
            "ResourceProperties": properties,
        });
        if let Some(physical) = physical {
            event["PhysicalResourceId"] = json!(physical);
        }
        if let Some(old) = old {
            event["OldResourceProperties"] = old.clone();
        }
        event
    }

    /// CloudFormation sends `event` (after what it does first, see
    /// [`Harness::as_cloudformation_would`]) and waits for it; returns the invocation's ID.
    pub async fn send(&self, event: &Value) -> String {
        self.h.as_cloudformation_would(event).await;
        self.cfn.awaits(event["RequestType"].as_str().unwrap(), event["RequestId"].as_str().unwrap());
        self.runtime.submit(serde_json::to_vec(event).unwrap(), TIMEOUT)
    }

    /// The function's last answer to `event`, once its invocation ended.
    pub async fn answer(&self, invocation: &str, event: &Value) -> Value {
        assert_eq!(self.runtime.ended(invocation, TIMEOUT).await, Ended::Response("null".into()));
        let answers = self.cfn.answers_to(event["RequestId"].as_str().unwrap());
        answers.last().cloned().unwrap_or_else(|| panic!("no answer to {event}"))
    }

    pub async fn request(&self, event: &Value) -> Value {
        let invocation = self.send(event).await;
        self.answer(&invocation, event).await
    }

    pub async fn create(&self, properties: &Value) -> String {
        let answer = self.request(&self.event("Create", properties, None, None)).await;
        assert_eq!(answer["Status"], "SUCCESS", "{answer}");
        id(&answer)
    }

    pub async fn update(&self, physical: &str, old: &Value, new: &Value) -> Value {
        self.request(&self.event("Update", new, Some(physical), Some(old))).await
    }

    pub async fn delete(&self, physical: &str, properties: &Value) {
        let answer = self.request(&self.event("Delete", properties, Some(physical), None)).await;
        assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    }

    /// The invariant: exactly the chain `physical` names is left, or nothing.
    pub async fn holds_exactly(&self, physical: Option<&str>, after: &str) {
        let inventory = self.h.inventory().await;
        let Some(service_id) = physical else {
            assert!(inventory.is_empty(), "after {after}, something was left: {inventory:?}");
            return;
        };
        let view = chain_view(&self.h.ec2, &self.h.elb, service_id).await;
        assert_eq!(inventory.services, [service_id.to_string()].into(), "after {after}: {inventory:?}");
        assert_eq!(inventory.load_balancers, [view.load_balancer_arn.clone()].into(), "after {after}: {inventory:?}");
        assert_eq!(inventory.target_groups, [view.target_group_arn.clone()].into(), "after {after}: {inventory:?}");
        assert_eq!(inventory.listeners, [view.listener_arn.clone()].into(), "after {after}: {inventory:?}");
        assert!(inventory.security_groups.is_subset(&view.security_groups), "after {after}: {inventory:?}");
    }
}

pub fn id(answer: &Value) -> String {
    answer["PhysicalResourceId"].as_str().unwrap().to_string()
}
