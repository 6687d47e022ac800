//! The literal passes over the text: secret anchors and known-secret
//! forms, in groups chosen by how often they occur, each group one
//! leftmost-longest search that resumes inside a match only where another
//! literal of the group could begin there.

use aho_corasick::{packed, AhoCorasick, AhoCorasickKind, Input, MatchKind};

use super::EgressError;

/// The searcher: Teddy (SIMD) directly when the literals fit it (up to 64),
/// otherwise an Aho–Corasick DFA (hundreds of known-secret forms), whose
/// prefilter is chosen by aho-corasick.
enum Searcher {
    Teddy(packed::Searcher),
    Automaton(AhoCorasick),
}

/// How a group is searched, by what measured fastest on this project's
/// corpora (docs/BENCHMARKS.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Token prefixes and known secrets, rare in ordinary output: "fat"
    /// Teddy (16 buckets, AVX2) when available, whose buckets keep many
    /// literals from raising false candidates in prose.
    Rare,
    /// Words that ordinary output is full of (`token`, `password`): a pass
    /// of their own, so that the many restarts after their matches cost a
    /// search over a few literals; Teddy's own choice (slim for these).
    Frequent,
}

/// One group of literals searched in one pass.
struct Group {
    searcher: Searcher,
    /// The caller's id of each of the group's literals.
    ids: Vec<usize>,
    /// For each literal, how far past a match's start the search resumes:
    /// the first offset where some literal of the group could start inside
    /// it (its length when none can), so every occurrence of every literal
    /// is still visited, as if each start position were tried.
    resume: Vec<usize>,
}

/// The literals of one pass, each with the id reported for it.
pub(crate) type Literals = Vec<(usize, Vec<u8>)>;

/// The literal groups, each searched in its own pass.
pub(crate) struct LiteralSet {
    groups: Vec<Group>,
}

/// Teddy's limit (aho-corasick's packed searcher).
pub(crate) const TEDDY_MAX: usize = 64;

impl LiteralSet {
    /// `groups`: the literals of each pass with the ids reported for them.
    pub(crate) fn new(groups: &[(Scan, Literals)]) -> Result<Self, EgressError> {
        let groups = groups
            .iter()
            .filter(|(_, lits)| !lits.is_empty())
            .map(|(scan, lits)| Group::new(*scan, lits))
            .collect::<Result<_, _>>()?;
        Ok(LiteralSet { groups })
    }

    /// Calls `found(id, start, end)` for every occurrence of every literal
    /// (at each start, the longest literal of its group starting there),
    /// group by group.
    pub(crate) fn for_each(&self, text: &[u8], mut found: impl FnMut(usize, usize, usize)) {
        for group in &self.groups {
            group.for_each(text, &mut found);
        }
    }
}

impl Group {
    fn new(scan: Scan, literals: &[(usize, Vec<u8>)]) -> Result<Self, EgressError> {
        let bytes: Vec<&[u8]> = literals.iter().map(|(_, l)| l.as_slice()).collect();
        let teddy = |fat: Option<bool>| {
            packed::Config::new()
                .match_kind(packed::MatchKind::LeftmostLongest)
                .only_teddy(true)
                .only_teddy_fat(fat)
                .builder()
                .extend(&bytes)
                .build()
        };
        let preferred = match scan {
            Scan::Rare => teddy(Some(true)),
            Scan::Frequent => None,
        };
        let searcher = match preferred.or_else(|| teddy(None)) {
            Some(s) => Searcher::Teddy(s),
            None => Searcher::Automaton(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(&bytes)
                    .map_err(|e| EgressError::Automaton(e.to_string()))?,
            ),
        };
        let resume = bytes
            .iter()
            .map(|lit| first_inner_start(lit, &bytes))
            .collect();
        Ok(Group {
            searcher,
            ids: literals.iter().map(|(id, _)| *id).collect(),
            resume,
        })
    }

    fn for_each(&self, text: &[u8], found: &mut impl FnMut(usize, usize, usize)) {
        let mut pos = 0;
        while pos < text.len() {
            let m = match &self.searcher {
                Searcher::Teddy(s) => s
                    .find_in(text, aho_corasick::Span::from(pos..text.len()))
                    .map(|m| (m.pattern().as_usize(), m.start(), m.end())),
                Searcher::Automaton(ac) => ac
                    .find(Input::new(text).span(pos..text.len()))
                    .map(|m| (m.pattern().as_usize(), m.start(), m.end())),
            };
            let Some((local, start, end)) = m else { break };
            found(self.ids[local], start, end);
            pos = start + self.resume[local].max(1);
        }
    }
}

/// The first offset `k` (1 ≤ k ≤ len) where a literal could begin inside
/// `lit`: `lit[k..]` is a prefix of some literal, or contains one.
fn first_inner_start(lit: &[u8], literals: &[&[u8]]) -> usize {
    (1..lit.len())
        .find(|&k| {
            let rest = &lit[k..];
            literals
                .iter()
                .any(|other| other.starts_with(rest) || rest.starts_with(other))
        })
        .unwrap_or(lit.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(scan: Scan, ids_literals: &[(usize, &str)]) -> (Scan, Literals) {
        let lits = ids_literals
            .iter()
            .map(|(id, l)| (*id, l.as_bytes().to_vec()))
            .collect();
        (scan, lits)
    }

    #[test]
    fn every_occurrence_is_visited_even_inside_another() {
        let set = LiteralSet::new(&[
            group(Scan::Frequent, &[(0, "token"), (1, "ken_x")]),
            group(Scan::Rare, &[(7, "abc"), (3, "bc")]),
        ])
        .expect("builds");
        let mut seen = Vec::new();
        set.for_each(b"xx token_x abcabc", |id, s, e| seen.push((id, s, e)));
        assert_eq!(
            seen,
            vec![
                (0, 3, 8),
                (1, 5, 10),
                (7, 11, 14),
                (3, 12, 14),
                (7, 14, 17),
                (3, 15, 17)
            ]
        );
    }

    #[test]
    fn groups_beyond_teddys_limit_still_find_every_literal() {
        let many: Literals = (0..TEDDY_MAX + 10)
            .map(|i| (100 + i, format!("lit{i:03}x").into_bytes()))
            .collect();
        let set = LiteralSet::new(&[(Scan::Rare, many)]).expect("builds");
        let mut seen = Vec::new();
        set.for_each(b"..lit007x..lit070x", |id, s, e| seen.push((id, s, e)));
        assert_eq!(seen, vec![(107, 2, 9), (170, 11, 18)]);
    }
}
