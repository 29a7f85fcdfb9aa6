//! Byte ranges with HTTP `Range: bytes=` semantics, resolved against an
//! object's size in one place so both backends clamp and refuse identically.

use std::ops::Range;

use crate::{Result, StorageError};

/// Which bytes of an object to read; mirrors the three HTTP byte-range forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=start-end`, `end` inclusive; an `end` past the object is clamped.
    FromTo(u64, u64),
    /// `bytes=start-`: from `start` to the end of the object.
    From(u64),
    /// `bytes=-n`: the last `n` bytes (the whole object if it is shorter).
    Suffix(u64),
}

impl ByteRange {
    /// The bytes this range selects from an object of `size` bytes.
    ///
    /// As in HTTP (RFC 9110 §14.1.1), a range is unsatisfiable when it starts
    /// at or past the end, when it is a zero-length suffix, or when the object
    /// is empty. A reversed `FromTo` is refused too rather than silently
    /// serving the whole object, because here it can only be a caller bug.
    pub fn resolve(self, size: u64) -> Result<Range<u64>> {
        let unsatisfiable = Err(StorageError::RangeNotSatisfiable { size });
        match self {
            ByteRange::FromTo(start, end) if start <= end && start < size => {
                Ok(start..end.saturating_add(1).min(size))
            }
            ByteRange::From(start) if start < size => Ok(start..size),
            ByteRange::Suffix(n) if n > 0 && size > 0 => Ok(size.saturating_sub(n)..size),
            _ => unsatisfiable,
        }
    }

    /// True when no object size could satisfy this range, so a backend can
    /// refuse it without asking the server to interpret it.
    pub(crate) fn never_satisfiable(self) -> bool {
        matches!(self, ByteRange::FromTo(start, end) if start > end) || self == ByteRange::Suffix(0)
    }

    /// The value of an HTTP `Range` header selecting these bytes.
    pub(crate) fn http_header(self) -> String {
        match self {
            ByteRange::FromTo(start, end) => format!("bytes={start}-{end}"),
            ByteRange::From(start) => format!("bytes={start}-"),
            ByteRange::Suffix(n) => format!("bytes=-{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ByteRange::*;
    use crate::StorageError;

    #[test]
    fn resolves_like_http() {
        assert_eq!(FromTo(0, 99).resolve(1000).unwrap(), 0..100);
        assert_eq!(FromTo(900, 5000).resolve(1000).unwrap(), 900..1000);
        assert_eq!(FromTo(999, u64::MAX).resolve(1000).unwrap(), 999..1000);
        assert_eq!(From(10).resolve(1000).unwrap(), 10..1000);
        assert_eq!(Suffix(100).resolve(1000).unwrap(), 900..1000);
        assert_eq!(Suffix(5000).resolve(1000).unwrap(), 0..1000);
    }

    #[test]
    fn refuses_ranges_outside_the_object() {
        for (range, size) in [
            (FromTo(1000, 1100), 1000),
            (From(1000), 1000),
            (FromTo(5, 4), 1000),
            (Suffix(0), 1000),
            (Suffix(10), 0),
            (From(0), 0),
        ] {
            match range.resolve(size) {
                Err(StorageError::RangeNotSatisfiable { size: s }) => assert_eq!(s, size),
                other => panic!("{range:?} on {size} bytes gave {other:?}"),
            }
        }
    }

    #[test]
    fn renders_http_range_headers() {
        assert_eq!(FromTo(0, 99).http_header(), "bytes=0-99");
        assert_eq!(From(7).http_header(), "bytes=7-");
        assert_eq!(Suffix(3).http_header(), "bytes=-3");
    }
}
