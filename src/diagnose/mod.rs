//! "Is the path working, and if not, why?": invoked directly with `{"Diagnose": {}}`,
//! the builder walks each chain of its stack with read calls only and reports a
//! check per link, from the endpoint service to the database's security groups. A
//! check that could not be read is reported not `Ok`, with why.

mod checks;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;
use tracing::info;

use crate::aws::Aws;
use crate::chain::{self, ANSWERED_TAG, STACK_ID_TAG};
use crate::database::Databases;
use crate::error::{Error, Result};

/// The report, as the invoker reads it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Report {
    pub ok: bool,
    pub chains: Vec<ChainReport>,
    /// Set when no chain could be examined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ChainReport {
    pub service_id: String,
    pub service_name: String,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Check {
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    fn new(check: &'static str, ok: bool, detail: impl Into<String>) -> Check {
        Check { check, ok, detail: detail.into() }
    }

    /// A check whose facts could not be read.
    fn unread(check: &'static str, error: &Error) -> Check {
        Check::new(check, false, format!("could not be checked: {error}"))
    }
}

/// Diagnoses the chains of `stack_id`.
pub async fn diagnose(aws: &Aws, databases: &Databases, stack_id: Option<&str>) -> Report {
    let Some(stack_id) = stack_id else {
        return Report::nothing("the function does not know its stack (REVERSE_PRIVATELINK_STACK_ID is not set)");
    };
    let services = match answered_services(aws, stack_id).await {
        Ok(services) if services.is_empty() => {
            return Report::nothing(format!("no chain of the stack {stack_id} was found (is it created?)"));
        }
        Ok(services) => services,
        Err(error) => return Report::nothing(format!("the stack's chains could not be listed: {error}")),
    };
    let chains = futures::future::join_all(services.iter().map(|id| checks::chain(aws, databases, id))).await;
    let ok = chains.iter().all(|chain| chain.checks.iter().all(|check| check.ok));
    info!(ok, chains = chains.len(), "diagnosed");
    Report { ok, chains, detail: None }
}

impl Report {
    fn nothing(detail: impl Into<String>) -> Report {
        Report { ok: false, chains: Vec::new(), detail: Some(detail.into()) }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The service IDs CloudFormation received for the stack's chains, from the answered
/// marks on their target groups (read from the target groups themselves).
async fn answered_services(aws: &Aws, stack_id: &str) -> Result<BTreeSet<String>> {
    let filters = [(STACK_ID_TAG, Some(stack_id))];
    let indexed = chain::tagged(&aws.tagging, &filters, &["elasticloadbalancing:targetgroup"])
        .await
        .map_err(Error::aws("finding the stack's chains (tag:GetResources)"))?;
    let tags: BTreeMap<String, BTreeMap<String, String>> =
        chain::describe_elb_tags(&aws.elb, indexed.into_iter().map(|(arn, _)| arn).collect()).await?;
    Ok(tags.values().filter_map(|tags| tags.get(ANSWERED_TAG).cloned()).collect())
}
