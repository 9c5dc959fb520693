//! Which composition a call is for: the user part of the Request-URI
//! (`sip:ROOM@tutti`) names it, by id or by name, as a room system's
//! address book or a PBX's dial plan would.

use crate::model::ids::CompositionId;

/// A composition a call may be routed to: its id and its name, if it has one.
#[derive(Clone, Copy)]
pub struct Room<'a> {
    pub id: &'a CompositionId,
    pub name: Option<&'a str>,
}

/// The composition `user` names: the one with that id, else the oldest one
/// with that name (names are compared without regard to case, since people
/// dial them by hand). `rooms` are in creation order.
pub fn route<'a>(user: &str, rooms: impl IntoIterator<Item = Room<'a>> + Clone) -> Option<&'a CompositionId> {
    let user = user.trim();
    if user.is_empty() {
        return None;
    }
    rooms
        .clone()
        .into_iter()
        .find(|room| room.id.as_str() == user)
        .or_else(|| rooms.into_iter().find(|room| room.name.is_some_and(|n| n.trim().eq_ignore_ascii_case(user))))
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
        assert_eq!(route("def", rooms(&list)).map(CompositionId::as_str), Some("def"));
    }

    #[test]
    fn a_name_picks_its_composition_whatever_the_case() {
        let list = [(CompositionId::from("abc".to_string()), Some("Board Room")), (CompositionId::from("def".to_string()), Some("standup"))];
        assert_eq!(route("STANDUP", rooms(&list)).map(CompositionId::as_str), Some("def"));
        assert_eq!(route("board room", rooms(&list)).map(CompositionId::as_str), Some("abc"));
    }

    #[test]
    fn an_id_wins_over_a_name_and_the_oldest_name_wins() {
        let list = [
            (CompositionId::from("one".to_string()), Some("two")),
            (CompositionId::from("two".to_string()), None),
            (CompositionId::from("three".to_string()), Some("show")),
            (CompositionId::from("four".to_string()), Some("show")),
        ];
        assert_eq!(route("two", rooms(&list)).map(CompositionId::as_str), Some("two"));
        assert_eq!(route("show", rooms(&list)).map(CompositionId::as_str), Some("three"));
    }

    #[test]
    fn nothing_matches_an_unknown_or_empty_user() {
        let list = [(CompositionId::from("abc".to_string()), Some("board"))];
        assert_eq!(route("lobby", rooms(&list)), None);
        assert_eq!(route("", rooms(&list)), None);
        assert_eq!(route("  ", rooms(&list)), None);
    }
}
