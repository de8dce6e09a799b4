//! A plugin instance's header names: the names its guest reads and writes, parsed once.
//!
//! Every header-map call names its header by bytes in guest memory. Parsing them into an
//! [`HeaderName`] validates and lowercases every byte, and a name outside the standard set
//! (`x-request-id`, `traceparent`, `x-ratelimit-limit`…) allocates its copy. A guest uses a
//! handful of names over and over, so each instance keeps the names it has used: a lookup is
//! one short hash and compare, and a custom name is a reference-count bump. The cache is bounded
//! in entries and in name length, so a guest cannot grow it.

use std::collections::HashMap;

use http::HeaderName;

/// Names kept at most: a guest that makes up names without end gets its cache emptied when
/// it fills, so the cache stays small whatever the guest does.
const MAX_NAMES: usize = 64;

/// The longest name kept (a header name may be 64 KiB long): longer ones are parsed on every
/// call, so that the cache holds at most a few KiB per instance.
const MAX_NAME_LEN: usize = 64;

/// The header names one instance's guest has used, by the exact bytes it passed.
#[derive(Default)]
pub struct HeaderNames {
    names: HashMap<Box<[u8]>, HeaderName, foldhash::fast::RandomState>,
}

impl HeaderNames {
    /// The header name `key` spells (any case); `None` when it is not a valid name.
    pub fn get(&mut self, key: &[u8]) -> Option<HeaderName> {
        if let Some(name) = self.names.get(key) {
            return Some(name.clone());
        }
        let name = HeaderName::from_bytes(key).ok()?;
        if key.len() > MAX_NAME_LEN {
            return Some(name);
        }
        if self.names.len() >= MAX_NAMES {
            self.names.clear();
        }
        self.names.insert(key.into(), name.clone());
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_header_names_do() {
        let mut names = HeaderNames::default();
        for key in [
            &b"X-Request-Id"[..],
            b"x-request-id",
            b"authorization",
            b"Traceparent",
        ] {
            let expected = HeaderName::from_bytes(key).ok();
            assert_eq!(names.get(key), expected, "{key:?}, first lookup");
            assert_eq!(names.get(key), expected, "{key:?}, cached");
        }
        assert_eq!(
            names.get(b"x-request-id").as_ref().map(HeaderName::as_str),
            Some("x-request-id")
        );
    }

    #[test]
    fn invalid_names_are_none_and_not_kept() {
        let mut names = HeaderNames::default();
        for key in [&b""[..], b"bad name", b":path", b"caf\xc3\xa9"] {
            assert_eq!(names.get(key), None, "{key:?}");
        }
        assert!(names.names.is_empty());
    }

    #[test]
    fn long_names_are_parsed_but_not_kept() {
        let mut names = HeaderNames::default();
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            names.get(long.as_bytes()).as_ref().map(HeaderName::as_str),
            Some(long.as_str())
        );
        assert!(names.names.is_empty());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut names = HeaderNames::default();
        for i in 0..1000 {
            let key = format!("x-made-up-{i}");
            assert_eq!(
                names.get(key.as_bytes()).as_ref().map(HeaderName::as_str),
                Some(key.as_str())
            );
            assert!(names.names.len() <= MAX_NAMES);
        }
    }
}
