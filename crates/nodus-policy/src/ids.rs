//! Identifiers: tenants and actors.
//!
//! Both are cheap to clone (`Arc<str>` inside) and validated on construction, so a value of these
//! types is always a well-formed id: 1 to 128 characters from `[A-Za-z0-9._@:-]`, starting with an
//! ASCII letter or digit. The restriction keeps ids safe to use as file names (`tenants/<id>.toml`),
//! SQL values and log fields without escaping.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The string was empty.
    #[error("{kind} id is empty")]
    Empty {
        /// Which kind of id (`tenant`, `actor`).
        kind: &'static str,
    },
    /// The string was longer than [`MAX_ID_LEN`].
    #[error("{kind} id `{id}` is {len} bytes long, the limit is {MAX_ID_LEN}")]
    TooLong {
        /// Which kind of id.
        kind: &'static str,
        /// The first characters of the rejected id.
        id: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The string held a character outside `[A-Za-z0-9._@:-]` or did not start with a letter or digit.
    #[error(
        "{kind} id `{id}` has an invalid character at byte {at}: ids use `A-Z a-z 0-9 . _ @ : -` and start with a letter or digit"
    )]
    InvalidChar {
        /// Which kind of id.
        kind: &'static str,
        /// The rejected id.
        id: String,
        /// Byte offset of the first offending character.
        at: usize,
    },
}

fn validate(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > MAX_ID_LEN {
        let id: String = s.chars().take(32).collect();
        return Err(IdError::TooLong {
            kind,
            id,
            len: s.len(),
        });
    }
    for (at, c) in s.char_indices() {
        let ok = if at == 0 {
            c.is_ascii_alphanumeric()
        } else {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | ':' | '-')
        };
        if !ok {
            return Err(IdError::InvalidChar {
                kind,
                id: s.to_owned(),
                at,
            });
        }
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s` and wraps it.
            ///
            /// # Errors
            /// [`IdError`] when `s` is empty, longer than [`MAX_ID_LEN`] or holds a character
            /// outside `[A-Za-z0-9._@:-]`.
            pub fn new(s: impl AsRef<str>) -> Result<Self, IdError> {
                let s = s.as_ref();
                validate($kind, s)?;
                Ok(Self(Arc::from(s)))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The shared string behind the id (cloning it never allocates).
            pub fn as_arc(&self) -> &Arc<str> {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(&*s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A tenant: the unit of isolation. Every policy snapshot, key, audit record and object
    /// belongs to exactly one tenant (or to the system).
    ///
    /// ```
    /// use nodus_policy::TenantId;
    /// let t = TenantId::new("acme").unwrap();
    /// assert_eq!(t.as_str(), "acme");
    /// assert!(TenantId::new("../etc").is_err());
    /// ```
    TenantId,
    "tenant"
);

string_id!(
    /// An actor: a user, service account or node acting within a tenant.
    ///
    /// ```
    /// use nodus_policy::ActorId;
    /// let a = ActorId::new("alice@example.com").unwrap();
    /// assert_eq!(a.to_string(), "alice@example.com");
    /// ```
    ActorId,
    "actor"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_ids() {
        for s in [
            "acme",
            "t1",
            "alice@example.com",
            "svc:sync-1",
            "a.b_c-d",
            "A",
        ] {
            assert!(TenantId::new(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn rejects_bad_ids() {
        assert_eq!(TenantId::new(""), Err(IdError::Empty { kind: "tenant" }));
        assert!(matches!(
            TenantId::new("-x"),
            Err(IdError::InvalidChar { at: 0, .. })
        ));
        assert!(matches!(
            ActorId::new("a b"),
            Err(IdError::InvalidChar { at: 1, .. })
        ));
        assert!(matches!(
            TenantId::new("a/b"),
            Err(IdError::InvalidChar { .. })
        ));
        assert!(matches!(
            TenantId::new("x".repeat(129)),
            Err(IdError::TooLong { len: 129, .. })
        ));
        let e = TenantId::new("a/b").unwrap_err().to_string();
        assert!(e.contains("`a/b`"), "{e}");
    }

    #[test]
    fn serde_round_trip_validates() {
        let t: TenantId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"acme\"");
        assert!(serde_json::from_str::<TenantId>("\"a b\"").is_err());
    }
}
