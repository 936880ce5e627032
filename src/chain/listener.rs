//! The TCP listener that forwards the port to the target group.

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancingv2 as elbv2;
use elbv2::types::{Action, ActionTypeEnum, Listener, ProtocolEnum};

use super::tags::{self, Tags};
use super::{Desired, Progress};
use crate::error::{Error, Result, code_of};
use elbv2::types::ListenerAttribute;

async fn list(elb: &elbv2::Client, lb_arn: &str) -> Result<Vec<Listener>> {
    match elb.describe_listeners().load_balancer_arn(lb_arn).send().await {
        Ok(answer) => Ok(answer.listeners.unwrap_or_default()),
        Err(err) if code_of(&err) == Some("LoadBalancerNotFound") => Ok(Vec::new()),
        Err(err) => Err(Error::aws("listing listeners (DescribeListeners)")(err)),
    }
}

fn forward(tg_arn: &str) -> Action {
    Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(tg_arn).build()
}

fn forwards_to(listener: &Listener, tg_arn: &str) -> bool {
    matches!(listener.default_actions(), [action] if action.r#type == Some(ActionTypeEnum::Forward) && action.target_group_arn.as_deref() == Some(tg_arn))
}

/// The listener attribute for how long an idle TCP flow is kept, and AWS's default (ELB
/// user guide, "Listeners for your Network Load Balancers", "TCP idle timeout").
const IDLE_TIMEOUT: &str = "tcp.idle_timeout.seconds";
const DEFAULT_IDLE_TIMEOUT: u16 = 350;

/// What is known of a load balancer's listeners before asking.
pub enum Known<'a> {
    /// The load balancer was created just now: it has none.
    Nothing,
    /// It may have one; its tags as a tag index listed them, if it did.
    Tags(Option<&'a BTreeMap<String, String>>),
}

/// Makes sure a TCP listener on the port forwards to the target group and keeps idle
/// flows as long as wanted (AWS's default unless `IdleTimeoutSeconds`). Returns its ARN.
pub async fn ensure(
    elb: &elbv2::Client,
    lb_arn: &str,
    tg_arn: &str,
    want: &Desired<'_>,
    known: Known<'_>,
    tags: &Tags,
    progress: &Progress,
) -> Result<String> {
    let port = want.resolved.port;
    let idle_timeout = want.spec.idle_timeout_seconds.unwrap_or(DEFAULT_IDLE_TIMEOUT);
    let _step = progress.step("creating the listener");
    let (existing, known_tags) = match known {
        Known::Nothing => (None, None),
        Known::Tags(tags) => (list(elb, lb_arn).await?.into_iter().find(|l| l.port == Some(i32::from(port))), tags),
    };
    let Some(listener) = existing else {
        progress.gate().await?;
        let created = elb
            .create_listener()
            .load_balancer_arn(lb_arn)
            .protocol(ProtocolEnum::Tcp)
            .port(i32::from(port))
            .default_actions(forward(tg_arn))
            .set_tags(Some(tags.elb()))
            .send()
            .await
            .map_err(Error::aws("creating the listener (CreateListener)"))?;
        let arn =
            created.listeners.and_then(|ls| ls.into_iter().next()).and_then(|l| l.listener_arn).ok_or_else(|| {
                Error::Unexpected { step: "creating the listener", message: "CreateListener returned no ARN".into() }
            })?;
        // A new listener has AWS's default.
        if idle_timeout != DEFAULT_IDLE_TIMEOUT {
            set_idle_timeout(elb, &arn, idle_timeout, progress).await?;
        }
        return Ok(arn);
    };
    let arn = listener.listener_arn.clone().unwrap_or_default();
    let point = async {
        if forwards_to(&listener, tg_arn) && listener.protocol == Some(ProtocolEnum::Tcp) {
            return Ok(());
        }
        progress.gate().await?;
        elb.modify_listener()
            .listener_arn(&arn)
            .protocol(ProtocolEnum::Tcp)
            .default_actions(forward(tg_arn))
            .send()
            .await
            .map(|_| ())
            .map_err(Error::aws("pointing the listener at the target group (ModifyListener)"))
    };
    let tag = async {
        let current = match known_tags {
            Some(known) => known.clone(),
            None => tags::describe_elb(elb, vec![arn.clone()]).await?.remove(&arn).unwrap_or_default(),
        };
        tags::sync_elb(elb, &arn, &current, tags, progress).await
    };
    let idle = async {
        let attributes = elb
            .describe_listener_attributes()
            .listener_arn(&arn)
            .send()
            .await
            .map_err(Error::aws("reading the listener's attributes (DescribeListenerAttributes)"))?;
        let current = attributes
            .attributes()
            .iter()
            .find(|a| a.key() == Some(IDLE_TIMEOUT))
            .and_then(|a| a.value()?.parse::<u16>().ok())
            .unwrap_or(DEFAULT_IDLE_TIMEOUT);
        match current == idle_timeout {
            true => Ok(()),
            false => set_idle_timeout(elb, &arn, idle_timeout, progress).await,
        }
    };
    tokio::try_join!(point, tag, idle)?;
    Ok(arn)
}

async fn set_idle_timeout(elb: &elbv2::Client, arn: &str, seconds: u16, progress: &Progress) -> Result<()> {
    progress.gate().await?;
    elb.modify_listener_attributes()
        .listener_arn(arn)
        .attributes(ListenerAttribute::builder().key(IDLE_TIMEOUT).value(seconds.to_string()).build())
        .send()
        .await
        .map(|_| ())
        .map_err(Error::aws("setting the listener's idle timeout (ModifyListenerAttributes)"))
}
