//! The TCP listener that forwards the port to the target group.

use aws_sdk_elasticloadbalancingv2 as elbv2;
use elbv2::types::{Action, ActionTypeEnum, Listener, ProtocolEnum};

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

/// Makes sure a TCP listener on `port` forwards to the target group. Returns its
/// ARN. A load balancer created just now (`fresh`) has none, so it is not read first.
pub async fn ensure(
    elb: &elbv2::Client,
    lb_arn: &str,
    tg_arn: &str,
    port: u16,
    fresh: bool,
    tags: &Tags,
    progress: &Progress,
) -> Result<String> {
    let _step = progress.step("creating the listener");
    let existing = match fresh {
        true => None,
        false => list(elb, lb_arn).await?.into_iter().find(|l| l.port == Some(i32::from(port))),
    };
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
