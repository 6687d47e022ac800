//! The one literal pass over the text: secret anchors and known-secret
//! forms together, leftmost-longest, resuming inside a match only where
//! another literal could begin there.

use aho_corasick::{packed, AhoCorasick, AhoCorasickKind, Input, MatchKind};

use super::EgressError;

/// The searcher: Teddy (SIMD) directly when the literals fit it (up to 64),
/// otherwise an Aho–Corasick DFA (hundreds of known-secret forms), whose
/// prefilter is chosen by aho-corasick.
enum Searcher {
    Teddy(packed::Searcher),
    Automaton(AhoCorasick),
}

/// One group of literals searched in one pass.
struct Group {
    searcher: Searcher,
    /// Added to the group's pattern ids.
    first_id: usize,
    /// For each literal, how far past a match's start the search resumes:
    /// the first offset where some literal could start inside it (its
    /// length when none can), so every occurrence of every literal is
    /// still visited, as if each start position were tried.
    resume: Vec<usize>,
}

/// The literal groups: the secret anchors and the known-secret forms are
/// searched in separate passes when together they exceed what Teddy takes,
/// so that many known secrets never cost the anchors their SIMD search.
pub(crate) struct LiteralSet {
    groups: Vec<Group>,
}

/// Teddy's limit (aho-corasick's packed searcher).
const TEDDY_MAX: usize = 64;

impl LiteralSet {
    /// Ids are positions in `anchors` followed by `known`.
    pub(crate) fn new(anchors: &[Vec<u8>], known: &[Vec<u8>]) -> Result<Self, EgressError> {
        let all: Vec<Vec<u8>> = anchors.iter().chain(known).cloned().collect();
        let parts: Vec<(usize, &[Vec<u8>])> = if all.len() <= TEDDY_MAX {
            vec![(0, &all[..])]
        } else {
            vec![(0, anchors), (anchors.len(), known)]
        };
        let groups = parts
            .into_iter()
            .filter(|(_, lits)| !lits.is_empty())
            .map(|(first_id, lits)| Group::new(lits, first_id))
            .collect::<Result<_, _>>()?;
        Ok(LiteralSet { groups })
    }

    /// Calls `found(id, start, end)` for every occurrence of every literal
    /// (at each start, the longest literal of its group starting there).
    pub(crate) fn for_each(&self, text: &[u8], mut found: impl FnMut(usize, usize, usize)) {
        for group in &self.groups {
            group.for_each(text, |id, s, e| found(group.first_id + id, s, e));
        }
    }
}

impl Group {
    fn new(literals: &[Vec<u8>], first_id: usize) -> Result<Self, EgressError> {
        let teddy = packed::Config::new()
            .match_kind(packed::MatchKind::LeftmostLongest)
            .only_teddy(true)
            .builder()
            .extend(literals)
            .build();
        let searcher = match teddy {
            Some(s) => Searcher::Teddy(s),
            None => Searcher::Automaton(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(literals)
                    .map_err(|e| EgressError::Automaton(e.to_string()))?,
            ),
        };
        let resume = literals
            .iter()
            .map(|lit| first_inner_start(lit, literals))
            .collect();
        Ok(Group {
            searcher,
            first_id,
            resume,
        })
    }

    fn for_each(&self, text: &[u8], mut found: impl FnMut(usize, usize, usize)) {
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
            let Some((id, start, end)) = m else { break };
            found(id, start, end);
            pos = start + self.resume.get(id).copied().unwrap_or(1).max(1);
        }
    }
}

/// The first offset `k` (1 ≤ k ≤ len) where a literal could begin inside
/// `lit`: `lit[k..]` is a prefix of some literal, or contains one.
fn first_inner_start(lit: &[u8], literals: &[Vec<u8>]) -> usize {
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

    #[test]
    fn every_occurrence_is_visited_even_inside_another() {
        let literals: Vec<Vec<u8>> = ["token", "ken_x", "abc", "bc"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let set = LiteralSet::new(&literals[..2], &literals[2..]).expect("builds");
        let mut seen = Vec::new();
        set.for_each(b"xx token_x abcabc", |id, s, e| seen.push((id, s, e)));
        assert_eq!(
            seen,
            vec![
                (0, 3, 8),
                (1, 5, 10),
                (2, 11, 14),
                (3, 12, 14),
                (2, 14, 17),
                (3, 15, 17)
            ]
        );
    }
}
