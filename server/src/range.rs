//! HTTP `Range` requests (RFC 9110 §14) over a file of known length.
//!
//! tower-http's `ServeFile` answers single ranges only; agents resuming a download and mirrors
//! filling gaps send several, so the server parses ranges here and answers `multipart/byteranges`.

/// Most ranges served in one request; more is treated as no `Range` header (full response).
pub const MAX_RANGES: usize = 16;

/// What to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// The whole representation (no or ignorable `Range`).
    Full,
    /// These inclusive byte ranges, in order, non-overlapping.
    Partial(Vec<(u64, u64)>),
    /// No requested range overlaps the file: `416`.
    Unsatisfiable,
}

/// Parses a `Range` header value for a representation of `len` bytes.
///
/// A malformed header is ignored (full response), as RFC 9110 allows. Overlapping or adjacent
/// ranges are coalesced so that a client cannot make one request cost many times the file.
pub fn parse(header: &str, len: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    let mut ranges = Vec::new();
    let mut any = false;
    for part in spec.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        any = true;
        if ranges.len() >= MAX_RANGES {
            return RangeRequest::Full;
        }
        let Some((first, last)) = part.split_once('-') else {
            return RangeRequest::Full;
        };
        let number = |s: &str| -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                s.parse().ok()
            }
        };
        let range = if first.is_empty() {
            let Some(suffix) = number(last) else {
                return RangeRequest::Full;
            };
            if suffix == 0 || len == 0 {
                None
            } else {
                Some((len.saturating_sub(suffix), len.saturating_sub(1)))
            }
        } else {
            let Some(start) = number(first) else {
                return RangeRequest::Full;
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match number(last) {
                    Some(end) if end >= start => end,
                    _ => return RangeRequest::Full,
                }
            };
            (start < len).then(|| (start, end.min(len.saturating_sub(1))))
        };
        if let Some(r) = range {
            ranges.push(r);
        }
    }
    if !any {
        return RangeRequest::Full;
    }
    if ranges.is_empty() {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial(coalesce(ranges))
}

/// Merges overlapping or adjacent ranges; keeps the request's order when none overlap.
fn coalesce(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut sorted = ranges.clone();
    sorted.sort_unstable();
    let overlapping = sorted
        .windows(2)
        .any(|w| matches!(w, [a, b] if b.0 <= a.1.saturating_add(1)));
    if !overlapping {
        return ranges;
    }
    ranges.clear();
    for (start, end) in sorted {
        match ranges.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => ranges.push((start, end)),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn single_ranges() {
        assert_eq!(parse("bytes=0-99", 1000), Partial(vec![(0, 99)]));
        assert_eq!(parse("bytes=500-", 1000), Partial(vec![(500, 999)]));
        assert_eq!(parse("bytes=-100", 1000), Partial(vec![(900, 999)]));
        assert_eq!(parse("bytes=-5000", 1000), Partial(vec![(0, 999)]));
        assert_eq!(parse("bytes=990-5000", 1000), Partial(vec![(990, 999)]));
    }

    #[test]
    fn multiple_ranges_keep_their_order() {
        assert_eq!(
            parse("bytes=900-909, 0-9", 1000),
            Partial(vec![(900, 909), (0, 9)])
        );
    }

    #[test]
    fn overlapping_ranges_are_coalesced() {
        assert_eq!(
            parse("bytes=0-99,50-149,150-160", 1000),
            Partial(vec![(0, 160)])
        );
        assert_eq!(parse("bytes=0-9,0-9,0-9", 1000), Partial(vec![(0, 9)]));
    }

    #[test]
    fn unsatisfiable_and_malformed() {
        assert_eq!(parse("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse("bytes=5-1", 1000), Full);
        assert_eq!(parse("items=0-1", 1000), Full);
        assert_eq!(parse("bytes=a-b", 1000), Full);
        assert_eq!(parse("bytes=", 1000), Full);
        let many: Vec<String> = (0..17)
            .map(|i| format!("{}-{}", i * 10, i * 10 + 1))
            .collect();
        assert_eq!(parse(&format!("bytes={}", many.join(",")), 1000), Full);
    }
}
