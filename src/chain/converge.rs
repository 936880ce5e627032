//! Bringing a chain to what is wanted. A new (or half-built) chain is created in
//! the order of its dependencies, everything independent side by side: target
//! group and security group; load balancer beside the targets; once the load
//! balancer is active, listener, cross-zone and endpoint service; then the
//! principals, the health read and the last question whether the requester still
//! waits. A complete chain is changed in place: every part read and changed side
//! by side, as the parts do not depend on each other.

use std::collections::BTreeSet;

use tokio::time::Instant;
use tracing::info;

use super::{
    Built, Chain, Desired, EndpointService, Group, LoadBalancer, MAX_STATE_WAIT, Progress, TargetHealth,
    endpoint_service, health, ingress, listener, load_balancer, security_group, tags, target_group,
};
use crate::error::{Error, Result};

impl Chain<'_> {
    /// Creates what is missing from `existing` and changes what differs from
    /// `want`. With `WaitForHealthyTarget`, waits until `health_until` for the
    /// writer to pass the load balancer's health checks.
    pub async fn converge(
        &self,
        want: &Desired<'_>,
        existing: Option<&Group>,
        progress: &Progress,
        health_until: Instant,
    ) -> Result<Built> {
        match existing {
            Some(group) if group.is_complete() => Box::pin(self.in_place(want, group, progress, health_until)).await,
            partial => Box::pin(self.build(want, partial, progress, health_until)).await,
        }
    }

    /// The given security groups, else the chain's own; a load balancer created
    /// without any (before this release) keeps none, as AWS cannot add them later.
    fn wants_own_group(want: &Desired<'_>, existing: &Group) -> bool {
        want.spec.security_group_ids.is_empty()
            && existing.load_balancers.first().is_none_or(|lb| !lb.security_groups.is_empty())
    }

    async fn load_balancer_groups(
        &self,
        want: &Desired<'_>,
        existing: &Group,
        tags: &tags::Tags,
        progress: &Progress,
    ) -> Result<BTreeSet<String>> {
        if Self::wants_own_group(want, existing) {
            let id =
                security_group::ensure(&self.aws.ec2, existing.security_groups.first(), want, tags, progress).await?;
            Ok(BTreeSet::from([id]))
        } else {
            Ok(want.spec.security_group_ids.clone())
        }
    }

    async fn build(
        &self,
        want: &Desired<'_>,
        existing: Option<&Group>,
        progress: &Progress,
        health_until: Instant,
    ) -> Result<Built> {
        if want.resolved.keep_targets {
            return Err(Error::property(
                "Database",
                "the database's writer cannot be resolved right now (a failover settling), and a new chain needs its address; try again once the failover has finished",
            ));
        }
        let (elb, ec2) = (&self.aws.elb, &self.aws.ec2);
        let tags = tags::Tags::new(&self.owner, &want.generation, &want.spec.tags, &want.dropped_tag_keys);
        let target_group_tags = tags.for_target_group(want.resolved.follows.as_deref(), want.report_to());
        let service_tags = tags.for_service(&want.spec.allowed_principals);
        let load_balancer_tags = tags.for_load_balancer(&want.spec.consumer_zone_ids);
        let mut existing = existing.cloned().unwrap_or_default();

        // The target group first: a load balancer of this generation exists only if its
        // target group does, so a target group found already made means an earlier
        // attempt of this very request. join, not try_join: one failing create must
        // not cancel the other mid-call, or the clean-up could miss what it made.
        let (groups, target_group) = tokio::join!(
            self.load_balancer_groups(want, &existing, &tags, progress),
            target_group::ensure(elb, existing.target_groups.first(), want, &target_group_tags, progress),
        );
        let (groups, (tg_arn, fresh_tg)) = (groups?, target_group?);
        if !fresh_tg && existing.load_balancers.is_empty() {
            info!(generation = %want.generation, "an earlier attempt of this request made the target group; looking for the rest");
            if let Some(found) = self.own(&want.resource_name(), &want.generation).await? {
                existing.merge(found);
            }
        }

        let load_balancer_side = async {
            let (lb_arn, fresh_lb, served) = Box::pin(load_balancer::ensure(
                elb,
                existing.load_balancers.first(),
                want,
                &groups,
                &load_balancer_tags,
                progress,
            ))
            .await?;
            let (lb, ()) = tokio::try_join!(
                load_balancer::wait_active(elb, &lb_arn, fresh_lb, MAX_STATE_WAIT, progress),
                async {
                    match fresh_lb {
                        true => load_balancer::ensure_new_enforcement(elb, &lb_arn, &groups, want, progress).await,
                        false => Ok(()),
                    }
                },
            )?;
            // A listener or service cancelled mid-create goes with its load balancer: failing fast is safe here.
            let known = match fresh_lb {
                true => listener::Known::Nothing,
                false => listener::Known::Tags(existing.listener_tags.values().next()),
            };
            let (listener_arn, (), (service, fresh_service)) = tokio::try_join!(
                listener::ensure(elb, &lb_arn, &tg_arn, want, known, &tags, progress),
                load_balancer::ensure_cross_zone(elb, &lb_arn, want.spec.cross_zone, fresh_lb, progress),
                endpoint_service::ensure(ec2, existing.services.first(), &lb.arn, want, &service_tags, progress),
            )?;
            Ok((lb, listener_arn, service, fresh_service, served))
        };
        let target_side = async {
            tokio::try_join!(
                target_group::ensure_failover_attributes(elb, &tg_arn, fresh_tg, want, progress),
                target_group::ensure_targets(elb, &tg_arn, fresh_tg, want, progress),
                self.database_ingress(want, &existing, &groups, &tags, progress),
            )
        };
        let (load_balancer_side, target_side) = tokio::join!(load_balancer_side, target_side);
        target_side?;
        let (lb, listener_arn, service, fresh_service, served) = load_balancer_side?;

        let ((), health, ()) = tokio::try_join!(
            endpoint_service::ensure_principals(
                ec2,
                &service.id,
                &want.spec.allowed_principals,
                fresh_service,
                progress
            ),
            health::read(elb, &tg_arn, fresh_tg),
            // The last question before answering: a cancelled request removes what it built.
            progress.checkpoint(),
        )?;
        self.drop_own_group_if_unused(want, &existing, progress).await?;
        let health = self.health(want, &tg_arn, &groups, health, health_until, progress).await?;
        info!(service_id = %service.id, generation = %want.generation, "chain complete");
        Ok(built(want, service, &lb, &served, tg_arn, listener_arn, groups, health))
    }

    /// Changes a complete chain in place. `group` carries the load balancer and
    /// target group as AWS describes them now and its service as read by ID.
    async fn in_place(
        &self,
        want: &Desired<'_>,
        group: &Group,
        progress: &Progress,
        health_until: Instant,
    ) -> Result<Built> {
        let (elb, ec2) = (&self.aws.elb, &self.aws.ec2);
        let tags = tags::Tags::new(&self.owner, &want.generation, &want.spec.tags, &want.dropped_tag_keys);
        let target_group_tags = tags.for_target_group(want.resolved.follows.as_deref(), want.report_to());
        let service_tags = tags.for_service(&want.spec.allowed_principals);
        let load_balancer_tags = tags.for_load_balancer(&want.spec.consumer_zone_ids);
        let (lb, tg, service) = (&group.load_balancers[0], &group.target_groups[0], &group.services[0]);

        let load_balancer_side = async {
            let groups = self.load_balancer_groups(want, group, &tags, progress).await?;
            let (_, _, served) =
                load_balancer::ensure(elb, Some(lb), want, &groups, &load_balancer_tags, progress).await?;
            // A load balancer that is not active yet (a Create moments ago) is waited for.
            if !lb.active {
                load_balancer::wait_active(elb, &lb.arn, false, MAX_STATE_WAIT, progress).await?;
            }
            let ((), ()) = tokio::try_join!(
                self.drop_own_group_if_unused(want, group, progress),
                self.database_ingress(want, group, &groups, &tags, progress),
            )?;
            Ok((groups, served))
        };
        let target_side = async {
            let ((), (), changed) = tokio::try_join!(
                async { target_group::ensure(elb, Some(tg), want, &target_group_tags, progress).await.map(|_| ()) },
                target_group::ensure_failover_attributes(elb, &tg.arn, false, want, progress),
                target_group::converge_targets(elb, &tg.arn, want, progress),
            )?;
            // The read made to decide the change, or, if targets changed, a read after it.
            match changed {
                Some(read) => Ok(read),
                None => health::read(elb, &tg.arn, false).await,
            }
        };
        let known = listener::Known::Tags(group.listener_tags.values().next());
        let ((groups, served), health, listener_arn, (), (service, _), (), ()) = tokio::try_join!(
            load_balancer_side,
            target_side,
            listener::ensure(elb, &lb.arn, &tg.arn, want, known, &tags, progress),
            load_balancer::ensure_cross_zone(elb, &lb.arn, want.spec.cross_zone, false, progress),
            endpoint_service::ensure(ec2, Some(service), &lb.arn, want, &service_tags, progress),
            endpoint_service::ensure_principals(ec2, &service.id, &want.spec.allowed_principals, false, progress),
            // Before answering: whether the requester still waits.
            progress.checkpoint(),
        )?;
        let health = self.health(want, &tg.arn, &groups, health, health_until, progress).await?;
        info!(service_id = %service.id, generation = %want.generation, "chain changed in place");
        Ok(built(want, service, lb, &served, tg.arn.clone(), listener_arn, groups, health))
    }

    async fn database_ingress(
        &self,
        want: &Desired<'_>,
        existing: &Group,
        groups: &BTreeSet<String>,
        tags: &tags::Tags,
        progress: &Progress,
    ) -> Result<()> {
        let databases = match want.spec.allow_database_ingress {
            true => want.resolved.database_security_groups.clone(),
            false => BTreeSet::new(),
        };
        ingress::ensure(&self.aws.ec2, &databases, groups, want.resolved.port, &existing.ingress_rules, tags, progress)
            .await
    }

    /// Switched to given groups: the chain's own is no longer attached.
    async fn drop_own_group_if_unused(&self, want: &Desired<'_>, existing: &Group, progress: &Progress) -> Result<()> {
        if Self::wants_own_group(want, existing) {
            return Ok(());
        }
        for group in &existing.security_groups {
            progress.gate().await?;
            security_group::delete(&self.aws.ec2, &group.id, progress).await.map_err(|error| match error {
                Error::GroupInUse(held) => Error::GroupInUse(format!(
                    "{held} (update the stack again); the load balancer already uses the groups given"
                )),
                other => other,
            })?;
        }
        Ok(())
    }

    async fn health(
        &self,
        want: &Desired<'_>,
        tg_arn: &str,
        groups: &BTreeSet<String>,
        read: Vec<TargetHealth>,
        until: Instant,
        progress: &Progress,
    ) -> Result<Vec<TargetHealth>> {
        match want.spec.wait_for_healthy_target {
            true => health::wait_healthy(&self.aws.elb, tg_arn, want, groups, until, progress).await,
            false => Ok(read),
        }
    }
}

/// What a finished chain reports: the zones are those its load balancer's subnets serve.
#[allow(clippy::too_many_arguments)]
fn built(
    want: &Desired<'_>,
    service: EndpointService,
    lb: &LoadBalancer,
    subnets: &BTreeSet<String>,
    target_group_arn: String,
    listener_arn: String,
    groups: BTreeSet<String>,
    target_health: Vec<TargetHealth>,
) -> Built {
    Built {
        service_id: service.id,
        service_name: service.name,
        load_balancer_arn: lb.arn.clone(),
        load_balancer_dns_name: lb.dns_name.clone(),
        target_group_arn,
        listener_arn,
        zones: want.resolved.network.zones_of(subnets),
        // Kept while the writer settles: what is registered now.
        target_ips: match want.resolved.keep_targets {
            true => target_health.iter().filter_map(|t| t.id.parse().ok()).collect(),
            false => want.resolved.target_ips.iter().copied().collect(),
        },
        enforce_inbound_on_private_link: !groups.is_empty() && want.spec.enforce_inbound_on_private_link,
        security_groups: groups.into_iter().collect(),
        supported_regions: service.supported_regions.into_iter().collect(),
        target_health,
    }
}
