//! Security labels for mandatory access control (Bell–LaPadula).
//!
//! A [`Label`] is an ordered *level* plus a set of *compartments*, interned to a `(u8, u128)` pair
//! so that a dominance check is two integer comparisons. Names live in a [`LabelScheme`] that comes
//! from policy (`mac.levels`, `mac.compartments`); the default scheme has the classic four levels
//! and no compartments.
//!
//! `a` **dominates** `b` ⇔ `a.level ≥ b.level` and `a.compartments ⊇ b.compartments`. Labels form a
//! lattice under dominance: [`Label::lub`] and [`Label::glb`] are its join and meet.
//!
//! ```
//! use nodus_policy::{Label, LabelScheme};
//! let scheme = LabelScheme::new(
//!     ["UNCLASSIFIED", "CONFIDENTIAL", "SECRET", "TOP SECRET"],
//!     ["CRYPTO", "NOFORN"],
//! ).unwrap();
//! let analyst = scheme.parse("SECRET//CRYPTO,NOFORN").unwrap();
//! let report = scheme.parse("confidential//crypto").unwrap();
//! assert!(analyst.dominates(report));
//! assert!(!report.dominates(analyst));
//! assert_eq!(scheme.format(report), "CONFIDENTIAL//CRYPTO");
//! ```

use std::fmt;
use std::sync::Arc;

/// Most compartments a scheme may define (the compartment set is a 128-bit set).
pub const MAX_COMPARTMENTS: usize = 128;
/// Most levels a scheme may define.
pub const MAX_LEVELS: usize = 256;

/// An interned security label: a level index and a compartment bitset.
///
/// Ordering (`Ord`) is only a total order for use in maps; use [`Label::dominates`] for security
/// decisions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Label {
    level: u8,
    compartments: u128,
}

impl Label {
    /// The lowest label: level 0, no compartments. Every label dominates it.
    pub const BOTTOM: Label = Label {
        level: 0,
        compartments: 0,
    };

    /// A label from a level index and a compartment bitset (bit `i` = compartment `i` of the scheme).
    pub const fn new(level: u8, compartments: u128) -> Self {
        Label {
            level,
            compartments,
        }
    }

    /// The level index (0 = lowest).
    pub const fn level(self) -> u8 {
        self.level
    }

    /// The compartment bitset.
    pub const fn compartments(self) -> u128 {
        self.compartments
    }

    /// `true` when `self.level ≥ other.level` and `self`'s compartments include all of `other`'s.
    #[inline]
    pub const fn dominates(self, other: Label) -> bool {
        self.level >= other.level && (self.compartments & other.compartments) == other.compartments
    }

    /// Least upper bound (join): the lowest label that dominates both.
    #[inline]
    pub const fn lub(self, other: Label) -> Label {
        let level = if self.level >= other.level {
            self.level
        } else {
            other.level
        };
        Label {
            level,
            compartments: self.compartments | other.compartments,
        }
    }

    /// Greatest lower bound (meet): the highest label both dominate.
    #[inline]
    pub const fn glb(self, other: Label) -> Label {
        let level = if self.level <= other.level {
            self.level
        } else {
            other.level
        };
        Label {
            level,
            compartments: self.compartments & other.compartments,
        }
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Label(L{}", self.level)?;
        if self.compartments != 0 {
            write!(f, " {:#x}", self.compartments)?;
        }
        f.write_str(")")
    }
}

/// Why a label scheme or a label string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LabelError {
    /// The scheme defined no level.
    #[error("a label scheme needs at least one level")]
    NoLevels,
    /// The scheme defined more than [`MAX_LEVELS`] levels.
    #[error("a label scheme may define at most {MAX_LEVELS} levels, got {0}")]
    TooManyLevels(usize),
    /// The scheme defined more than [`MAX_COMPARTMENTS`] compartments.
    #[error("a label scheme may define at most {MAX_COMPARTMENTS} compartments, got {0}")]
    TooManyCompartments(usize),
    /// A level or compartment name was empty, held `/` or `,`, or had surrounding spaces.
    #[error("invalid label name `{0}`: names are non-empty, trimmed and hold no `/` or `,`")]
    InvalidName(String),
    /// A name appeared twice (names compare case-insensitively).
    #[error("label name `{0}` is defined twice")]
    Duplicate(String),
    /// The level part of a label string named no level of the scheme.
    #[error("unknown level `{0}`")]
    UnknownLevel(String),
    /// A compartment named in a label string is not in the scheme.
    #[error("unknown compartment `{0}`")]
    UnknownCompartment(String),
    /// A label string was malformed.
    #[error("malformed label `{0}`: expected `LEVEL` or `LEVEL//COMP1,COMP2`")]
    Malformed(String),
}

/// The names of a policy's levels (lowest first) and compartments.
#[derive(Clone, PartialEq, Eq)]
pub struct LabelScheme {
    levels: Arc<[Arc<str>]>,
    compartments: Arc<[Arc<str>]>,
    fingerprint: SchemeId,
}

/// Identifies a label scheme by its content: the level names in order and the compartment names in
/// order. A [`Label`] is only meaningful under the scheme it was parsed with; a subject records the
/// `SchemeId` of its clearance so that a renamed or reordered scheme is detected, never silently
/// reinterpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchemeId(pub u64);

impl SchemeId {
    fn of(levels: &[Arc<str>], compartments: &[Arc<str>]) -> SchemeId {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"nodus-label-scheme-v1\0");
        for (tag, names) in [(b'L', levels), (b'C', compartments)] {
            h.update([tag]);
            h.update((names.len() as u64).to_be_bytes());
            for n in names {
                h.update((n.len() as u64).to_be_bytes());
                h.update(n.as_bytes());
            }
        }
        let digest = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
        SchemeId(u64::from_be_bytes(first))
    }
}

impl fmt::Debug for LabelScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabelScheme")
            .field("levels", &self.levels)
            .field("compartments", &self.compartments)
            .finish()
    }
}

impl Default for LabelScheme {
    fn default() -> Self {
        Self::classic()
    }
}

fn check_names<'a>(names: impl Iterator<Item = &'a Arc<str>>) -> Result<(), LabelError> {
    let mut seen: Vec<String> = Vec::new();
    for n in names {
        if n.is_empty() || n.trim() != &**n || n.contains('/') || n.contains(',') {
            return Err(LabelError::InvalidName(n.to_string()));
        }
        let lower = n.to_ascii_lowercase();
        if seen.contains(&lower) {
            return Err(LabelError::Duplicate(n.to_string()));
        }
        seen.push(lower);
    }
    Ok(())
}

impl LabelScheme {
    /// A scheme from level names (lowest first) and compartment names.
    ///
    /// # Errors
    /// [`LabelError`] for no levels, too many levels or compartments, an invalid or duplicate name.
    pub fn new<L, C>(levels: L, compartments: C) -> Result<Self, LabelError>
    where
        L: IntoIterator,
        L::Item: AsRef<str>,
        C: IntoIterator,
        C::Item: AsRef<str>,
    {
        let levels: Arc<[Arc<str>]> = levels.into_iter().map(|s| Arc::from(s.as_ref())).collect();
        let compartments: Arc<[Arc<str>]> = compartments
            .into_iter()
            .map(|s| Arc::from(s.as_ref()))
            .collect();
        if levels.is_empty() {
            return Err(LabelError::NoLevels);
        }
        if levels.len() > MAX_LEVELS {
            return Err(LabelError::TooManyLevels(levels.len()));
        }
        if compartments.len() > MAX_COMPARTMENTS {
            return Err(LabelError::TooManyCompartments(compartments.len()));
        }
        check_names(levels.iter().chain(compartments.iter()))?;
        let fingerprint = SchemeId::of(&levels, &compartments);
        Ok(LabelScheme {
            levels,
            compartments,
            fingerprint,
        })
    }

    /// The classic scheme: `UNCLASSIFIED < CONFIDENTIAL < SECRET < TOP SECRET`, no compartments.
    pub fn classic() -> Self {
        let levels: Arc<[Arc<str>]> = ["UNCLASSIFIED", "CONFIDENTIAL", "SECRET", "TOP SECRET"]
            .into_iter()
            .map(Arc::from)
            .collect();
        let compartments: Arc<[Arc<str>]> = Arc::from(Vec::new());
        let fingerprint = SchemeId::of(&levels, &compartments);
        LabelScheme {
            levels,
            compartments,
            fingerprint,
        }
    }

    /// The scheme's identity: equal for equal level and compartment names in equal order, different
    /// after any rename, reorder, addition or removal.
    #[inline]
    pub fn id(&self) -> SchemeId {
        self.fingerprint
    }

    /// Level names, lowest first.
    pub fn levels(&self) -> &[Arc<str>] {
        &self.levels
    }

    /// Compartment names; compartment `i` is bit `i` of a label's compartment set.
    pub fn compartments(&self) -> &[Arc<str>] {
        &self.compartments
    }

    /// The highest label of this scheme: top level, every compartment.
    pub fn top(&self) -> Label {
        let level = u8::try_from(self.levels.len().saturating_sub(1)).unwrap_or(u8::MAX);
        let n = self.compartments.len();
        let compartments = if n >= 128 {
            u128::MAX
        } else {
            (1u128 << n) - 1
        };
        Label {
            level,
            compartments,
        }
    }

    /// Parses `LEVEL` or `LEVEL//COMP1,COMP2` (names case-insensitive, spaces around names ignored).
    ///
    /// # Errors
    /// [`LabelError::UnknownLevel`], [`LabelError::UnknownCompartment`] or [`LabelError::Malformed`].
    pub fn parse(&self, s: &str) -> Result<Label, LabelError> {
        let (level_part, comps_part) = match s.split_once("//") {
            Some((l, c)) => (l, Some(c)),
            None => (s, None),
        };
        let level_name = level_part.trim();
        if level_name.is_empty() {
            return Err(LabelError::Malformed(s.to_owned()));
        }
        let level = self
            .levels
            .iter()
            .position(|n| n.eq_ignore_ascii_case(level_name))
            .ok_or_else(|| LabelError::UnknownLevel(level_name.to_owned()))?;
        let mut compartments = 0u128;
        if let Some(c) = comps_part {
            if c.contains("//") {
                return Err(LabelError::Malformed(s.to_owned()));
            }
            for name in c.split(',') {
                let name = name.trim();
                if name.is_empty() {
                    return Err(LabelError::Malformed(s.to_owned()));
                }
                let i = self
                    .compartments
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(name))
                    .ok_or_else(|| LabelError::UnknownCompartment(name.to_owned()))?;
                compartments |= 1u128 << i;
            }
        }
        let level = u8::try_from(level).map_err(|_| LabelError::Malformed(s.to_owned()))?;
        Ok(Label {
            level,
            compartments,
        })
    }

    /// Formats a label as `LEVEL` or `LEVEL//COMP1,COMP2` (compartments in scheme order). A level or
    /// compartment this scheme does not define is shown as `L<n>` / `C<n>`.
    pub fn format(&self, label: Label) -> String {
        let mut out = match self.levels.get(usize::from(label.level)) {
            Some(n) => n.to_string(),
            None => format!("L{}", label.level),
        };
        let mut first = true;
        for bit in 0..128u32 {
            if label.compartments & (1u128 << bit) == 0 {
                continue;
            }
            out.push_str(if first { "//" } else { "," });
            first = false;
            match self.compartments.get(bit as usize) {
                Some(n) => out.push_str(n),
                None => out.push_str(&format!("C{bit}")),
            }
        }
        out
    }

    /// `true` when `label` uses only levels and compartments this scheme defines.
    pub fn contains(&self, label: Label) -> bool {
        usize::from(label.level) < self.levels.len() && self.top().dominates(label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scheme() -> LabelScheme {
        LabelScheme::new(
            ["UNCLASSIFIED", "CONFIDENTIAL", "SECRET", "TOP SECRET"],
            ["CRYPTO", "NOFORN", "SI"],
        )
        .unwrap()
    }

    #[test]
    fn parse_and_format() {
        let s = scheme();
        let l = s.parse("SECRET//CRYPTO,NOFORN").unwrap();
        assert_eq!(l, Label::new(2, 0b11));
        assert_eq!(s.format(l), "SECRET//CRYPTO,NOFORN");
        assert_eq!(s.parse(" top secret // si ").unwrap(), Label::new(3, 0b100));
        assert_eq!(s.format(Label::new(0, 0)), "UNCLASSIFIED");
        assert_eq!(s.format(Label::new(9, 1 << 7)), "L9//C7");
    }

    #[test]
    fn parse_errors_name_the_part() {
        let s = scheme();
        assert_eq!(
            s.parse("COSMIC"),
            Err(LabelError::UnknownLevel("COSMIC".into()))
        );
        assert_eq!(
            s.parse("SECRET//X"),
            Err(LabelError::UnknownCompartment("X".into()))
        );
        assert!(matches!(s.parse("SECRET//"), Err(LabelError::Malformed(_))));
        assert!(matches!(s.parse("//CRYPTO"), Err(LabelError::Malformed(_))));
        assert!(matches!(
            s.parse("SECRET//A//B"),
            Err(LabelError::Malformed(_))
        ));
    }

    #[test]
    fn scheme_errors() {
        assert_eq!(
            LabelScheme::new(Vec::<&str>::new(), ["A"]),
            Err(LabelError::NoLevels)
        );
        assert_eq!(
            LabelScheme::new(["A", "a"], Vec::<&str>::new()),
            Err(LabelError::Duplicate("a".into()))
        );
        assert!(matches!(
            LabelScheme::new(["A/B"], ["X"]),
            Err(LabelError::InvalidName(_))
        ));
        let many: Vec<String> = (0..129).map(|i| format!("C{i}")).collect();
        assert_eq!(
            LabelScheme::new(["A"], many),
            Err(LabelError::TooManyCompartments(129))
        );
    }

    #[test]
    fn classic_is_default() {
        let s = LabelScheme::default();
        assert_eq!(s.levels().len(), 4);
        assert_eq!(s.parse("TOP SECRET").unwrap().level(), 3);
        assert_eq!(s.top(), Label::new(3, 0));
    }

    fn label() -> impl Strategy<Value = Label> {
        (0u8..6, 0u128..16).prop_map(|(l, c)| Label::new(l, c))
    }

    proptest! {
        #[test]
        fn dominance_is_reflexive(a in label()) {
            prop_assert!(a.dominates(a));
        }

        #[test]
        fn dominance_is_antisymmetric(a in label(), b in label()) {
            if a.dominates(b) && b.dominates(a) {
                prop_assert_eq!(a, b);
            }
        }

        #[test]
        fn dominance_is_transitive(a in label(), b in label(), c in label()) {
            if a.dominates(b) && b.dominates(c) {
                prop_assert!(a.dominates(c));
            }
        }

        #[test]
        fn lub_is_least_upper_bound(a in label(), b in label(), c in label()) {
            let j = a.lub(b);
            prop_assert!(j.dominates(a) && j.dominates(b));
            if c.dominates(a) && c.dominates(b) {
                prop_assert!(c.dominates(j));
            }
        }

        #[test]
        fn glb_is_greatest_lower_bound(a in label(), b in label(), c in label()) {
            let m = a.glb(b);
            prop_assert!(a.dominates(m) && b.dominates(m));
            if a.dominates(c) && b.dominates(c) {
                prop_assert!(m.dominates(c));
            }
        }

        #[test]
        fn bottom_is_least(a in label()) {
            prop_assert!(a.dominates(Label::BOTTOM));
        }

        #[test]
        fn format_parse_round_trip(l in 0u8..4, c in 0u128..8) {
            let s = scheme();
            let label = Label::new(l, c);
            prop_assert_eq!(s.parse(&s.format(label)).unwrap(), label);
        }
    }
}
