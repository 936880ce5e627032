//! `Name`: the prefix of the load balancer's and target group's names.

use super::read::{Properties, scalar};
use crate::error::{Error, Result};

/// Hex digits of a generation, the suffix that keeps names of successive chains apart.
pub const GENERATION_LEN: usize = 8;
/// Room left in a 32-character AWS name for the generation suffix ("-" + 8 hex digits).
pub const MAX_NAME_LEN: usize = 32 - 1 - GENERATION_LEN;

pub fn name(props: &Properties, stack_id: &str) -> Result<String> {
    const P: &str = "Name";
    let Some(name) = scalar(props, P)? else {
        return Ok(default_name(stack_id));
    };
    if name.len() > MAX_NAME_LEN {
        return Err(Error::property(
            P,
            format!(
                "{name:?} is {} characters; at most {MAX_NAME_LEN}, as AWS allows 32 and the function adds a 9-character suffix",
                name.len()
            ),
        ));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(Error::property(P, format!("{name:?} may contain only letters, digits and hyphens")));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(Error::property(P, format!("{name:?} must not begin or end with a hyphen")));
    }
    if name.to_ascii_lowercase().starts_with("internal-") {
        return Err(Error::property(P, format!("{name:?} must not begin with \"internal-\" (AWS reserves it)")));
    }
    Ok(name)
}

/// The stack's name (from `arn:aws:cloudformation:<region>:<account>:stack/<name>/<guid>`).
pub fn stack_name(stack_id: &str) -> &str {
    stack_id.split(":stack/").nth(1).and_then(|rest| rest.split('/').next()).unwrap_or(stack_id)
}

/// The stack's name, cut to what AWS names allow.
fn default_name(stack_id: &str) -> String {
    let mut name: String = stack_name(stack_id).chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    if name.to_ascii_lowercase().starts_with("internal-") {
        name.drain(.."internal-".len());
    }
    name.truncate(MAX_NAME_LEN);
    let name = name.trim_matches('-');
    if name.is_empty() { "privatelink".to_string() } else { name.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_fit_aws_rules() {
        assert_eq!(default_name("arn:aws:cloudformation:us-east-1:1:stack/internal-x/guid"), "x");
        assert_eq!(
            default_name("arn:aws:cloudformation:us-east-1:1:stack/StackSet-abc-0123456789-abcdef-0123456789/guid")
                .len(),
            MAX_NAME_LEN
        );
        assert_eq!(default_name("arn:aws:cloudformation:us-east-1:1:stack/a-------------------------b/g"), "a");
        assert_eq!(default_name(""), "privatelink");
    }
}
