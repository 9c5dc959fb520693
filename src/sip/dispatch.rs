//! Which composition a call is for: the user part of the Request-URI
//! (`sip:ROOM@tutti`) names it, by id or by name, as a room system's
//! address book or a PBX's dial plan would; else the first configured rule
//! that matches the number sends it to a composition, or makes an ad-hoc
//! room from a template (the FreeSWITCH dial plan and LiveKit dispatch
//! rules do the same).

use std::collections::HashMap;

use serde::Deserialize;

use crate::model::composition::CompositionConfig;
use crate::model::ids::CompositionId;

/// How a rule matches the dialled user part.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    Exact,
    Prefix,
    /// Unanchored, as the `regex` crate reads it: write `^…$` for a whole match.
    Regex,
}

/// A `[[sip_routes]]` entry of the configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    #[serde(rename = "match")]
    pub kind: Match,
    pub pattern: String,
    /// Join this composition (id or name).
    #[serde(default)]
    pub composition: Option<String>,
    /// Or: join the composition named after the dialled user, made from this
    /// `[sip_templates.NAME]` when none exists (an ad-hoc room).
    #[serde(default)]
    pub template: Option<String>,
}

/// The configured rules, checked: patterns compiled, templates known.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    rules: Vec<(Matcher, Target)>,
}

#[derive(Clone, Debug)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Regex(regex::Regex),
}

#[derive(Clone, Debug)]
enum Target {
    Composition(String),
    Template(String),
}

impl Rules {
    pub fn new(rules: &[RouteRule], templates: &HashMap<String, CompositionConfig>) -> Result<Rules, String> {
        let checked = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let at = format!("sip_routes[{i}]");
                let matcher = match rule.kind {
                    Match::Exact => Matcher::Exact(rule.pattern.clone()),
                    Match::Prefix => Matcher::Prefix(rule.pattern.clone()),
                    Match::Regex => Matcher::Regex(regex::Regex::new(&rule.pattern).map_err(|e| format!("{at}: pattern: {e}"))?),
                };
                let target = match (&rule.composition, &rule.template) {
                    (Some(composition), None) => Target::Composition(composition.clone()),
                    (None, Some(template)) if templates.contains_key(template) => Target::Template(template.clone()),
                    (None, Some(template)) => return Err(format!("{at}: no [sip_templates.{template}]")),
                    _ => return Err(format!("{at}: give either `composition` or `template`")),
                };
                Ok((matcher, target))
            })
            .collect::<Result<_, String>>()?;
        Ok(Rules { rules: checked })
    }

    fn first_match(&self, user: &str) -> Option<&Target> {
        self.rules
            .iter()
            .find(|(matcher, _)| match matcher {
                Matcher::Exact(pattern) => user == pattern,
                Matcher::Prefix(pattern) => user.starts_with(pattern.as_str()),
                Matcher::Regex(pattern) => pattern.is_match(user),
            })
            .map(|(_, target)| target)
    }
}

/// Where a call goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Destination<'a> {
    Join(&'a CompositionId),
    /// Make a composition named after the dialled user from this template.
    Create { template: &'a str },
    Nowhere,
}

/// A composition a call may be routed to: its id and its name, if it has one.
#[derive(Clone, Copy)]
pub struct Room<'a> {
    pub id: &'a CompositionId,
    pub name: Option<&'a str>,
}

/// Where a call for `user` goes: the composition with that id, else the
/// oldest one with that name (names are compared without regard to case,
/// since people dial them by hand), else what the first matching rule says.
/// `rooms` are in creation order.
pub fn route<'a, 'r>(user: &str, rooms: impl IntoIterator<Item = Room<'a>> + Clone, rules: &'r Rules) -> Destination<'a>
where
    'r: 'a,
{
    let user = user.trim();
    if user.is_empty() {
        return Destination::Nowhere;
    }
    if let Some(id) = named(user, rooms.clone()) {
        return Destination::Join(id);
    }
    match rules.first_match(user) {
        Some(Target::Composition(target)) => named(target, rooms).map_or(Destination::Nowhere, Destination::Join),
        Some(Target::Template(template)) => Destination::Create { template },
        None => Destination::Nowhere,
    }
}

fn named<'a>(wanted: &str, rooms: impl IntoIterator<Item = Room<'a>> + Clone) -> Option<&'a CompositionId> {
    rooms
        .clone()
        .into_iter()
        .find(|room| room.id.as_str() == wanted)
        .or_else(|| rooms.into_iter().find(|room| room.name.is_some_and(|n| n.trim().eq_ignore_ascii_case(wanted))))
        .map(|room| room.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms<'a>(list: &'a [(CompositionId, Option<&'a str>)]) -> Vec<Room<'a>> {
        list.iter().map(|(id, name)| Room { id, name: *name }).collect()
    }

    #[test]
    fn an_id_picks_its_composition() {
        let list = [(CompositionId::from("abc".to_string()), Some("board")), (CompositionId::from("def".to_string()), None)];
        assert_eq!(route("def", rooms(&list), &Rules::default()), Destination::Join(&list[1].0));
    }

    #[test]
    fn a_name_picks_its_composition_whatever_the_case() {
        let list = [(CompositionId::from("abc".to_string()), Some("Board Room")), (CompositionId::from("def".to_string()), Some("standup"))];
        assert_eq!(route("STANDUP", rooms(&list), &Rules::default()), Destination::Join(&list[1].0));
        assert_eq!(route("board room", rooms(&list), &Rules::default()), Destination::Join(&list[0].0));
    }

    #[test]
    fn an_id_wins_over_a_name_and_the_oldest_name_wins() {
        let list = [
            (CompositionId::from("one".to_string()), Some("two")),
            (CompositionId::from("two".to_string()), None),
            (CompositionId::from("three".to_string()), Some("show")),
            (CompositionId::from("four".to_string()), Some("show")),
        ];
        assert_eq!(route("two", rooms(&list), &Rules::default()), Destination::Join(&list[1].0));
        assert_eq!(route("show", rooms(&list), &Rules::default()), Destination::Join(&list[2].0));
    }

    #[test]
    fn nothing_matches_an_unknown_or_empty_user() {
        let list = [(CompositionId::from("abc".to_string()), Some("board"))];
        for user in ["lobby", "", "  "] {
            assert_eq!(route(user, rooms(&list), &Rules::default()), Destination::Nowhere);
        }
    }

    fn rules(toml_text: &str) -> Result<Rules, String> {
        #[derive(Deserialize)]
        struct File {
            sip_routes: Vec<RouteRule>,
        }
        let file: File = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        let templates = HashMap::from([("huddle".to_string(), CompositionConfig::default())]);
        Rules::new(&file.sip_routes, &templates)
    }

    #[test]
    fn rules_route_numbers_a_dial_plan_knows() {
        let rules = rules(
            r#"
            sip_routes = [
              { match = "exact", pattern = "100", composition = "board" },
              { match = "prefix", pattern = "7", composition = "abc" },
              { match = "regex", pattern = "^huddle-[a-z]+$", template = "huddle" },
            ]"#,
        )
        .unwrap();
        let list = [(CompositionId::from("abc".to_string()), Some("board")), (CompositionId::from("def".to_string()), Some("huddle-red"))];
        assert_eq!(route("100", rooms(&list), &rules), Destination::Join(&list[0].0));
        assert_eq!(route("7001", rooms(&list), &rules), Destination::Join(&list[0].0));
        // An ad-hoc room that exists is joined by its name; a new one is made.
        assert_eq!(route("huddle-red", rooms(&list), &rules), Destination::Join(&list[1].0));
        assert_eq!(route("huddle-blue", rooms(&list), &rules), Destination::Create { template: "huddle" });
        assert_eq!(route("huddle-42", rooms(&list), &rules), Destination::Nowhere);
        // A rule whose composition does not exist routes nowhere.
        assert_eq!(route("100", rooms(&list[1..]), &rules), Destination::Nowhere);
    }

    #[test]
    fn a_rule_that_cannot_work_is_refused_at_start_up() {
        assert!(rules(r#"sip_routes = [{ match = "regex", pattern = "(", composition = "x" }]"#).unwrap_err().contains("sip_routes[0]"));
        assert!(rules(r#"sip_routes = [{ match = "exact", pattern = "1", template = "nope" }]"#).unwrap_err().contains("no [sip_templates.nope]"));
        assert!(rules(r#"sip_routes = [{ match = "exact", pattern = "1" }]"#).is_err());
        assert!(rules(r#"sip_routes = [{ match = "exact", pattern = "1", composition = "a", template = "huddle" }]"#).is_err());
        assert!(rules(r#"sip_routes = [{ match = "glob", pattern = "1", composition = "a" }]"#).is_err());
    }
}
