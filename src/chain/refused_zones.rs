//! Zones where AWS refuses a load balancer. Constrained zones answer `CreateLoadBalancer`
//! and `SetSubnets` with a `ValidationError` naming them ("The following Availability
//! Zones us-west-1a cannot be associated with a load balancer", widdix/mastodon-on-aws#13,
//! aws/copilot-cli#1298; older: "The requested Availability Zone us-east-1b is constrained
//! and cannot be used together with us-east-1c", kubernetes/kops#382), so the zones are
//! read from the message by matching the request's own zones, not one wording. The NLB
//! guide ("Update the Availability Zones for your Network Load Balancer") says a load
//! balancer in other zones reaches targets in a constrained zone with cross-zone load
//! balancing, so a derived zone AWS refuses is left out, and remembered on the load
//! balancer (a tag of zone IDs) so that later requests do not try it again.

use std::collections::{BTreeMap, BTreeSet};

use super::Desired;
use super::network::Zone;
use crate::error::Error;
use crate::spec::CONSUMER_ZONES;

/// The load balancer's tag listing the zone IDs AWS refused it.
pub const REFUSED_ZONES_TAG: &str = "reverse-privatelink:refused-zones";

/// The zone IDs a load balancer's tags record as refused.
pub fn recorded(tags: &BTreeMap<String, String>) -> BTreeSet<String> {
    tags.get(REFUSED_ZONES_TAG)
        .map(|v| v.split(',').filter(|id| !id.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The tag value for `refused`, None when there is none.
pub fn tag_value(refused: &BTreeSet<String>) -> Option<String> {
    (!refused.is_empty()).then(|| refused.iter().cloned().collect::<Vec<_>>().join(","))
}

/// The subnets wanted, less those in zones AWS refused.
pub fn usable(want: &Desired<'_>, refused: &BTreeSet<String>) -> BTreeSet<String> {
    let zones = &want.resolved.network.subnets;
    want.resolved
        .subnet_ids
        .iter()
        .filter(|id| zones.get(*id).is_none_or(|zone| !refused.contains(&zone.id)))
        .cloned()
        .collect()
}

/// The zones of `subnets` that AWS's `code`/`message` names as refusing a load balancer.
pub fn named(code: Option<&str>, message: &str, want: &Desired<'_>, subnets: &BTreeSet<String>) -> Vec<Zone> {
    if !matches!(code, Some("ValidationError" | "InvalidConfigurationRequest")) {
        return Vec::new();
    }
    let zones: BTreeSet<&Zone> = subnets.iter().filter_map(|id| want.resolved.network.subnets.get(id)).collect();
    zones.into_iter().filter(|zone| mentions(message, &zone.name) || mentions(message, &zone.id)).cloned().collect()
}

/// Whether `text` holds `word` not as part of a longer name (us-east-1a in us-east-1a-bos-1).
fn mentions(text: &str, word: &str) -> bool {
    let part_of_name = |c: char| c.is_ascii_alphanumeric() || c == '-';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(part_of_name) && !after.is_some_and(part_of_name)
    })
}

/// Why `zone` cannot be left out, as an error naming what to change; None when it can.
pub fn must_serve(zone: &Zone, want: &Desired<'_>, aws_said: &str) -> Option<Error> {
    let refused = format!("AWS refuses load balancers in {} ({}): \"{aws_said}\"", zone.name, zone.id);
    if want.spec.consumer_zone_ids.contains(&zone.id) {
        return Some(Error::property(
            CONSUMER_ZONES,
            format!(
                "{refused}; the consumer's endpoint cannot be served there: leave {} out, and have the consumer place its endpoint in another zone",
                zone.id
            ),
        ));
    }
    if !want.spec.subnet_ids.is_empty() {
        let subnets: Vec<&str> =
            want.resolved.network.subnets.iter().filter(|(_, z)| *z == zone).map(|(id, _)| id.as_str()).collect();
        return Some(Error::property(
            "SubnetIds",
            format!(
                "{refused}; leave {} out (the load balancer reaches the database there with cross-zone load balancing)",
                subnets.join(", ")
            ),
        ));
    }
    if !want.spec.cross_zone {
        return Some(Error::property(
            "CrossZoneLoadBalancing",
            format!(
                "{refused}; without cross-zone load balancing the load balancer's other zones would not reach a database there: turn it on"
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_found_in_any_wording_and_only_as_whole_names() {
        assert!(mentions("The following Availability Zones us-west-1a cannot be associated", "us-west-1a"));
        assert!(mentions("The following Availability Zones ['us-east-1e'] cannot", "us-east-1e"));
        assert!(mentions(
            "Availability Zone us-east-1b is constrained and cannot be used together with us-east-1c.",
            "us-east-1c"
        ));
        assert!(mentions("zone use1-az3 cannot host", "use1-az3"));
        assert!(!mentions("us-east-1a-bos-1a cannot", "us-east-1a"));
        assert!(!mentions("use1-az31 cannot", "use1-az3"));
    }

    #[test]
    fn the_tag_round_trips() {
        let refused = BTreeSet::from(["use1-az3".to_string(), "use1-az5".to_string()]);
        let tags = BTreeMap::from([(REFUSED_ZONES_TAG.to_string(), tag_value(&refused).unwrap())]);
        assert_eq!(recorded(&tags), refused);
        assert_eq!(tag_value(&BTreeSet::new()), None);
    }
}
