//! Room names and who may join them.
//!
//! Everything here is a pure function of a room name and a user's [`Claims`]:
//! no I/O, no state. The socket handlers, the HTTP routes and the hub all ask
//! this module, so the grammar and the access policy live in exactly one place.
//!
//! Grammar: at most [`MAX_ROOM_BYTES`] bytes of `[A-Za-z0-9:_.@-]`, made of a known
//! prefix and colon-separated ids, each id a non-empty run of `[A-Za-z0-9_.@-]`:
//!
//! | room | who may join |
//! |---|---|
//! | `user:{id}` | only that user |
//! | `branch:{id}` | users of that branch; the `admin` role any branch |
//! | `role:{role}` / `role:{role}:{branch}` | users with that role (and branch) |
//! | `order:` `shipment:` `quote:` `support:` `equipment:` `warehouse:` `{id}` | any user, unless the token's `rooms` claim is present: then it must match |
//! | `dm:{a}:{b}` with `a < b` | users `a` and `b` |
//! | `channel:{name}` | any user |

use crate::auth::Claims;
use crate::error::Rejection;

/// The longest room name accepted, in bytes.
pub const MAX_ROOM_BYTES: usize = 200;

/// The internal room every socket is in once its automatic rooms are joined.
/// Events for "everyone" target it; its name is outside the grammar, so no client
/// can ask for it by name.
pub const EVERYONE: &str = "*";

/// The role that may join any branch room.
pub const ADMIN_ROLE: &str = "admin";

/// A kind of business entity that has one room per id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    /// `order:{id}`
    Order,
    /// `shipment:{id}`
    Shipment,
    /// `quote:{id}`
    Quote,
    /// `support:{id}`
    Support,
    /// `equipment:{id}`
    Equipment,
    /// `warehouse:{id}`
    Warehouse,
}

impl EntityKind {
    /// Every entity kind, in the contract's order.
    pub const ALL: [EntityKind; 6] = [
        EntityKind::Order,
        EntityKind::Shipment,
        EntityKind::Quote,
        EntityKind::Support,
        EntityKind::Equipment,
        EntityKind::Warehouse,
    ];

    /// The room prefix, e.g. `shipment`.
    pub fn prefix(self) -> &'static str {
        match self {
            EntityKind::Order => "order",
            EntityKind::Shipment => "shipment",
            EntityKind::Quote => "quote",
            EntityKind::Support => "support",
            EntityKind::Equipment => "equipment",
            EntityKind::Warehouse => "warehouse",
        }
    }

    fn from_prefix(prefix: &str) -> Option<Self> {
        EntityKind::ALL.into_iter().find(|k| k.prefix() == prefix)
    }
}

/// A parsed, well-formed room name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room<'a> {
    /// `user:{id}`
    User(&'a str),
    /// `branch:{id}`
    Branch(&'a str),
    /// `role:{role}` or `role:{role}:{branch}`
    Role {
        /// The role name.
        role: &'a str,
        /// The branch, when the room is per branch.
        branch: Option<&'a str>,
    },
    /// `order:{id}`, `shipment:{id}`, …
    Entity(EntityKind, &'a str),
    /// `dm:{a}:{b}` with `a < b`
    Dm(&'a str, &'a str),
    /// `channel:{name}`
    Channel(&'a str),
}

fn is_room_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'@' | b'-')
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b != b':' && is_room_byte(b))
}

/// Parses a room name a client or controller supplied.
///
/// Malformed names are a `bad_request`; whether the caller may join is
/// [`check_access`]'s question.
pub fn parse(name: &str) -> Result<Room<'_>, Rejection> {
    if name.is_empty() {
        return Err(Rejection::bad_request("room name is empty"));
    }
    if name.len() > MAX_ROOM_BYTES {
        return Err(Rejection::bad_request(format!(
            "room name is longer than {MAX_ROOM_BYTES} bytes"
        )));
    }
    if !name.bytes().all(is_room_byte) {
        return Err(Rejection::bad_request(
            "room name may only contain A-Z a-z 0-9 and : _ . @ -",
        ));
    }
    let mut parts = name.split(':');
    let prefix = parts.next().unwrap_or_default();
    let ids: Vec<&str> = parts.collect();
    if ids.iter().any(|id| !is_id(id)) {
        return Err(Rejection::bad_request(format!(
            "room `{name}` has an empty id segment"
        )));
    }
    let malformed = |shape: &str| {
        Rejection::bad_request(format!("room `{name}` is malformed: expected `{shape}`"))
    };
    match (prefix, ids.as_slice()) {
        ("user", [id]) => Ok(Room::User(id)),
        ("user", _) => Err(malformed("user:{id}")),
        ("branch", [id]) => Ok(Room::Branch(id)),
        ("branch", _) => Err(malformed("branch:{id}")),
        ("role", [role]) => Ok(Room::Role { role, branch: None }),
        ("role", [role, branch]) => Ok(Room::Role {
            role,
            branch: Some(branch),
        }),
        ("role", _) => Err(malformed("role:{role} or role:{role}:{branch}")),
        ("dm", [a, b]) if a < b => Ok(Room::Dm(a, b)),
        ("dm", [_, _]) => Err(Rejection::bad_request(format!(
            "room `{name}` must list the smaller user id first (dm:{{a}}:{{b}} with a < b)"
        ))),
        ("dm", _) => Err(malformed("dm:{a}:{b}")),
        ("channel", [channel]) => Ok(Room::Channel(channel)),
        ("channel", _) => Err(malformed("channel:{name}")),
        (prefix, ids) => match (EntityKind::from_prefix(prefix), ids) {
            (Some(kind), [id]) => Ok(Room::Entity(kind, id)),
            (Some(kind), _) => Err(malformed(&format!("{}:{{id}}", kind.prefix()))),
            (None, _) => Err(Rejection::bad_request(format!(
                "room `{name}` has an unknown prefix `{prefix}`"
            ))),
        },
    }
}

/// Whether the user behind `claims` may join `room`.
pub fn check_access(claims: &Claims, room: &Room<'_>) -> Result<(), Rejection> {
    let allowed = match *room {
        Room::User(id) => claims.sub == id,
        Room::Branch(id) => claims.branch_id.as_deref() == Some(id) || claims.is_admin(),
        Room::Role { role, branch } => {
            claims.role.as_deref() == Some(role)
                && branch.is_none_or(|b| claims.branch_id.as_deref() == Some(b))
        }
        Room::Entity(kind, id) => match &claims.rooms {
            None => true,
            Some(patterns) => {
                let name = format!("{}:{id}", kind.prefix());
                patterns.iter().any(|p| pattern_matches(p, &name))
            }
        },
        Room::Dm(a, b) => claims.sub == a || claims.sub == b,
        Room::Channel(_) => true,
    };
    if allowed {
        Ok(())
    } else {
        Err(Rejection::forbidden(denial_reason(claims, room)))
    }
}

fn denial_reason(claims: &Claims, room: &Room<'_>) -> String {
    match room {
        Room::User(_) => "a user room is only open to that user".into(),
        Room::Branch(_) => "a branch room is only open to users of that branch".into(),
        Room::Role { .. } => "a role room is only open to users with that role and branch".into(),
        Room::Entity(..) if claims.rooms.is_some() => {
            "the token's `rooms` claim does not grant this room".into()
        }
        Room::Dm(..) => "a direct-message room is only open to its two users".into(),
        _ => "not allowed".into(),
    }
}

/// Parses `name` and checks that the user may join it: the one call the
/// handlers and routes make.
pub fn authorize<'a>(claims: &Claims, name: &'a str) -> Result<Room<'a>, Rejection> {
    let room = parse(name)?;
    check_access(claims, &room)?;
    Ok(room)
}

/// Matches a `rooms`-claim pattern: `*` stands for any run of characters,
/// everything else matches itself (`order:*`, `shipment:42`, `*`).
pub fn pattern_matches(pattern: &str, room: &str) -> bool {
    // Classic two-pointer glob with backtracking to the last star: linear in
    // practice and without recursion, so a hostile pattern cannot blow the stack.
    let (p, r) = (pattern.as_bytes(), room.as_bytes());
    let (mut pi, mut ri) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ri < r.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ri));
            pi += 1;
        } else if pi < p.len() && p[pi] == r[ri] {
            pi += 1;
            ri += 1;
        } else if let Some((sp, sr)) = star {
            pi = sp + 1;
            ri = sr + 1;
            star = Some((sp, sr + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// The rooms a socket joins on connect: `user:{sub}`, `branch:{branchId}`,
/// `role:{role}`, `role:{role}:{branchId}` — those the claims allow.
pub fn automatic_rooms(claims: &Claims) -> Vec<String> {
    let mut rooms = vec![user_room(&claims.sub)];
    if let Some(branch) = &claims.branch_id {
        rooms.push(branch_room(branch));
    }
    if let Some(role) = &claims.role {
        rooms.push(format!("role:{role}"));
        if let Some(branch) = &claims.branch_id {
            rooms.push(format!("role:{role}:{branch}"));
        }
    }
    rooms
}

/// What every user room starts with.
pub(crate) const USER_PREFIX: &str = "user:";

/// `user:{id}`.
pub fn user_room(user_id: &str) -> String {
    format!("{USER_PREFIX}{user_id}")
}

/// `branch:{id}`.
pub fn branch_room(branch_id: &str) -> String {
    format!("branch:{branch_id}")
}

/// The internal room of all of a user's sockets, joined when a socket is
/// admitted — before its client sees `connect` — and used only to disconnect
/// them. `user:{id}` is joined later, after the socket's replay, so a user
/// disconnected right after connecting could otherwise keep that socket. Its
/// name is outside the grammar, like [`EVERYONE`]'s.
pub fn user_sockets_room(user_id: &str) -> String {
    format!("*user:{user_id}")
}

/// Whether `room` is one of livehub's internal rooms (never listed to clients).
pub fn is_internal(room: &str) -> bool {
    room.starts_with('*')
}

/// `{kind}:{id}`, e.g. `shipment:42`.
pub fn entity_room(kind: EntityKind, id: &str) -> String {
    format!("{}:{id}", kind.prefix())
}

/// Entity kinds whose seed-001 names are `{kind}_{id}`.
const UNDERSCORE_KINDS: &[&str] = &[
    "order",
    "quote",
    "support",
    "shipment",
    "equipment",
    "warehouse",
    "channel",
];

/// livehub's name for a seed-001 room name, if `name` is one.
pub fn canonical_room(name: &str) -> Option<String> {
    if name.contains(':') {
        return None;
    }
    let (kind, rest) = name.split_once('_')?;
    if kind == "user" {
        let (a, b) = rest.split_once('_')?;
        if a.is_empty() || b.is_empty() || b.contains('_') {
            return None;
        }
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        return Some(format!("dm:{lo}:{hi}"));
    }
    (UNDERSCORE_KINDS.contains(&kind) && !rest.is_empty()).then(|| format!("{kind}:{rest}"))
}

/// Seed 001's name for a livehub room, where it has one.
pub fn underscore_room(room: &str) -> Option<String> {
    let (kind, rest) = room.split_once(':')?;
    if kind == "dm" {
        let (a, b) = rest.split_once(':')?;
        return (!a.contains('_') && !b.contains('_')).then(|| format!("user_{a}_{b}"));
    }
    UNDERSCORE_KINDS
        .contains(&kind)
        .then(|| format!("{kind}_{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, branch: Option<&str>, role: Option<&str>) -> Claims {
        Claims {
            sub: sub.into(),
            exp: u64::MAX,
            branch_id: branch.map(Into::into),
            role: role.map(Into::into),
            name: None,
            rooms: None,
        }
    }

    fn with_rooms(mut c: Claims, rooms: &[&str]) -> Claims {
        c.rooms = Some(rooms.iter().map(|s| s.to_string()).collect());
        c
    }

    fn code(r: Result<Room<'_>, Rejection>) -> Option<&'static str> {
        r.err().map(|e| e.code.as_str())
    }

    #[test]
    fn internal_rooms_are_outside_the_grammar() {
        for room in [EVERYONE.to_string(), user_sockets_room("u1")] {
            assert!(is_internal(&room), "{room}");
            assert!(parse(&room).is_err(), "{room} must not be joinable by name");
        }
        assert!(!is_internal(&user_room("u1")));
    }

    #[test]
    fn grammar_accepts_every_kind() {
        assert_eq!(parse("user:u1"), Ok(Room::User("u1")));
        assert_eq!(parse("branch:b-1"), Ok(Room::Branch("b-1")));
        assert_eq!(
            parse("role:manager"),
            Ok(Room::Role {
                role: "manager",
                branch: None
            })
        );
        assert_eq!(
            parse("role:manager:b1"),
            Ok(Room::Role {
                role: "manager",
                branch: Some("b1")
            })
        );
        for kind in EntityKind::ALL {
            let name = format!("{}:42", kind.prefix());
            assert_eq!(parse(&name), Ok(Room::Entity(kind, "42")), "{name}");
        }
        assert_eq!(parse("dm:alice:bob"), Ok(Room::Dm("alice", "bob")));
        assert_eq!(parse("channel:general"), Ok(Room::Channel("general")));
        assert_eq!(
            parse("user:a.b@example.com"),
            Ok(Room::User("a.b@example.com"))
        );
    }

    #[test]
    fn grammar_refuses_malformed_names() {
        let bad = [
            "",
            "shipment",
            "shipment:",
            ":42",
            "shipment:42:extra",
            "shipment::42",
            "shipment:4 2",
            "shipment:42/",
            "shipment:ü",
            "shipment:*",
            "*",
            "unknown:1",
            "user:",
            "user:a:b",
            "branch:a:b",
            "role:",
            "role:a:b:c",
            "dm:a",
            "dm:a:b:c",
            "dm:bob:alice",
            "dm:same:same",
            "channel:",
            "channel:a:b",
            "Shipment:1",
        ];
        for name in bad {
            assert_eq!(code(parse(name)), Some("bad_request"), "{name:?}");
        }
    }

    #[test]
    fn grammar_length_limit_is_200_bytes() {
        let ok = format!("channel:{}", "a".repeat(MAX_ROOM_BYTES - "channel:".len()));
        assert_eq!(ok.len(), 200);
        assert!(parse(&ok).is_ok());
        let too_long = format!("{ok}a");
        assert_eq!(code(parse(&too_long)), Some("bad_request"));
    }

    #[test]
    fn user_rooms_are_private() {
        let u1 = claims("u1", Some("b1"), Some("operator"));
        assert!(authorize(&u1, "user:u1").is_ok());
        assert_eq!(code(authorize(&u1, "user:u2")), Some("forbidden"));
        let admin = claims("root", Some("b1"), Some("admin"));
        assert_eq!(code(authorize(&admin, "user:u1")), Some("forbidden"));
    }

    #[test]
    fn branch_rooms_follow_the_branch_claim_and_admins_see_all() {
        let u1 = claims("u1", Some("b1"), Some("operator"));
        assert!(authorize(&u1, "branch:b1").is_ok());
        assert_eq!(code(authorize(&u1, "branch:b2")), Some("forbidden"));
        let nobranch = claims("u2", None, None);
        assert_eq!(code(authorize(&nobranch, "branch:b1")), Some("forbidden"));
        let admin = claims("root", None, Some("admin"));
        assert!(authorize(&admin, "branch:b2").is_ok());
    }

    #[test]
    fn role_rooms_need_role_and_branch() {
        let m = claims("u1", Some("b1"), Some("manager"));
        assert!(authorize(&m, "role:manager").is_ok());
        assert!(authorize(&m, "role:manager:b1").is_ok());
        assert_eq!(code(authorize(&m, "role:manager:b2")), Some("forbidden"));
        assert_eq!(code(authorize(&m, "role:operator")), Some("forbidden"));
        let norole = claims("u2", Some("b1"), None);
        assert_eq!(code(authorize(&norole, "role:manager")), Some("forbidden"));
        let admin = claims("root", Some("b1"), Some("admin"));
        assert_eq!(
            code(authorize(&admin, "role:manager:b1")),
            Some("forbidden")
        );
    }

    #[test]
    fn entity_rooms_are_open_without_a_rooms_claim() {
        let u = claims("u1", None, None);
        for kind in EntityKind::ALL {
            assert!(authorize(&u, &entity_room(kind, "7")).is_ok());
        }
    }

    #[test]
    fn rooms_claim_is_the_only_grant_for_entity_rooms() {
        let u = with_rooms(
            claims("u1", Some("b1"), Some("operator")),
            &["order:*", "shipment:42"],
        );
        assert!(authorize(&u, "order:1").is_ok());
        assert!(authorize(&u, "order:anything").is_ok());
        assert!(authorize(&u, "shipment:42").is_ok());
        assert_eq!(code(authorize(&u, "shipment:43")), Some("forbidden"));
        assert_eq!(code(authorize(&u, "shipment:420")), Some("forbidden"));
        assert_eq!(code(authorize(&u, "quote:1")), Some("forbidden"));
        // The claim restricts entity rooms only.
        assert!(authorize(&u, "channel:general").is_ok());
        assert!(authorize(&u, "branch:b1").is_ok());
        let none = with_rooms(claims("u1", None, None), &[]);
        assert_eq!(code(authorize(&none, "order:1")), Some("forbidden"));
    }

    #[test]
    fn dm_rooms_admit_their_two_users() {
        let alice = claims("alice", None, None);
        let bob = claims("bob", None, None);
        let carol = claims("carol", None, None);
        assert!(authorize(&alice, "dm:alice:bob").is_ok());
        assert!(authorize(&bob, "dm:alice:bob").is_ok());
        assert_eq!(code(authorize(&carol, "dm:alice:bob")), Some("forbidden"));
    }

    #[test]
    fn channels_are_open() {
        assert!(authorize(&claims("x", None, None), "channel:general").is_ok());
    }

    #[test]
    fn glob_patterns() {
        assert!(pattern_matches("*", "order:1"));
        assert!(pattern_matches("order:*", "order:1"));
        assert!(pattern_matches("order:*", "order:"));
        assert!(!pattern_matches("order:*", "orders:1"));
        assert!(pattern_matches("*:42", "shipment:42"));
        assert!(pattern_matches("s*t:4*", "shipment:42"));
        assert!(!pattern_matches("shipment:42", "shipment:421"));
        assert!(!pattern_matches("", "a"));
        assert!(pattern_matches("", ""));
        assert!(pattern_matches("a**b", "ab"));
        // Pathological patterns stay fast.
        let evil = "*a".repeat(50);
        assert!(!pattern_matches(&evil, &"a".repeat(49)));
    }

    #[test]
    fn automatic_rooms_follow_the_claims() {
        assert_eq!(
            automatic_rooms(&claims("u1", Some("b1"), Some("manager"))),
            vec!["user:u1", "branch:b1", "role:manager", "role:manager:b1"]
        );
        assert_eq!(automatic_rooms(&claims("u1", None, None)), vec!["user:u1"]);
        assert_eq!(
            automatic_rooms(&claims("u1", None, Some("operator"))),
            vec!["user:u1", "role:operator"]
        );
        assert_eq!(
            automatic_rooms(&claims("u1", Some("b1"), None)),
            vec!["user:u1", "branch:b1"]
        );
    }

    #[test]
    fn automatic_rooms_pass_the_policy() {
        let c = claims("u1", Some("b1"), Some("manager"));
        for room in automatic_rooms(&c) {
            assert!(authorize(&c, &room).is_ok(), "{room}");
        }
    }
    #[test]
    fn seed_001_room_names_map_both_ways() {
        assert_eq!(canonical_room("order_123").as_deref(), Some("order:123"));
        assert_eq!(
            canonical_room("channel_general").as_deref(),
            Some("channel:general")
        );
        assert_eq!(canonical_room("user_b_a").as_deref(), Some("dm:a:b"));
        assert_eq!(canonical_room("user_a_b_c"), None);
        assert_eq!(canonical_room("order:1"), None);
        assert_eq!(canonical_room("planet_9"), None);
        assert_eq!(canonical_room("order_"), None);
        assert_eq!(underscore_room("order:123").as_deref(), Some("order_123"));
        assert_eq!(underscore_room("dm:a:b").as_deref(), Some("user_a_b"));
        assert_eq!(underscore_room("branch:1"), None);
    }
}
