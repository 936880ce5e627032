//! The TCP listener that forwards the port to the target group.

use aws_sdk_elasticloadbalancingv2 as elbv2;
use elbv2::types::{Action, ActionTypeEnum, Listener, ProtocolEnum};

use tracing::warn;

use super::Progress;
use super::tags::{self, Tags};
use crate::error::{Error, Result, code_of};

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

/// Makes sure a TCP listener on `port` forwards to the target group. Returns its ARN.
pub async fn ensure(
    elb: &elbv2::Client,
    lb_arn: &str,
    tg_arn: &str,
    port: u16,
    tags: &Tags,
    progress: &Progress,
) -> Result<String> {
    let _step = progress.step("creating the listener");
    let existing = list(elb, lb_arn).await?.into_iter().find(|l| l.port == Some(i32::from(port)));
    let Some(listener) = existing else {
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
        return created.listeners.and_then(|ls| ls.into_iter().next()).and_then(|l| l.listener_arn).ok_or_else(|| {
            Error::Unexpected { step: "creating the listener", message: "CreateListener returned no ARN".into() }
        });
    };
    let arn = listener.listener_arn.clone().unwrap_or_default();
    if !forwards_to(&listener, tg_arn) || listener.protocol != Some(ProtocolEnum::Tcp) {
        elb.modify_listener()
            .listener_arn(&arn)
            .protocol(ProtocolEnum::Tcp)
            .default_actions(forward(tg_arn))
            .send()
            .await
            .map_err(Error::aws("pointing the listener at the target group (ModifyListener)"))?;
    }
    let current = tags::describe_elb(elb, vec![arn.clone()]).await?.remove(&arn).unwrap_or_default();
    tags::sync_elb(elb, &arn, &current, tags, progress).await?;
    Ok(arn)
}

/// Deletes every listener of the load balancer, so its target group is free.
/// Deleting the load balancer removes its listeners too, so a listing that fails
/// is logged rather than allowed to stop the tear-down.
pub async fn delete_all(elb: &elbv2::Client, lb_arn: &str, progress: &Progress) -> Result<()> {
    let _step = progress.step("deleting the listener");
    let listeners = match list(elb, lb_arn).await {
        Ok(listeners) => listeners,
        Err(error) => {
            warn!(%error, "could not list the listeners; deleting the load balancer removes them");
            return Ok(());
        }
    };
    for listener in listeners {
        let Some(arn) = listener.listener_arn else { continue };
        match elb.delete_listener().listener_arn(arn).send().await {
            Ok(_) => {}
            Err(err) if code_of(&err) == Some("ListenerNotFound") => {}
            Err(err) => return Err(Error::aws("deleting the listener (DeleteListener)")(err)),
        }
    }
    Ok(())
}
