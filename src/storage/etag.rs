//! An object's ETag, the one owner of its quoting. HTTP (and S3) send ETags in double quotes;
//! everything this crate stores, compares and hands out is the bare value.

use std::fmt;

/// An ETag without its quotes. Made from either form, it compares equal to both.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ETag(String);

impl ETag {
    /// Takes a tag as it comes (`"abc"` from a header, or `abc`), keeping the bare value.
    pub fn new(tag: impl AsRef<str>) -> ETag {
        ETag(tag.as_ref().trim_matches('"').to_string())
    }

    /// The bare value, as stored in documents and compared.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The header form, in double quotes (`If-Match`, `ETag`, a completed part's tag).
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// Whether `tag`, quoted or not, names this version.
    pub fn matches(&self, tag: &str) -> bool {
        self.0 == tag.trim_matches('"')
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ETag> for String {
    fn from(tag: ETag) -> String {
        tag.0
    }
}

/// The bare value of a tag as it comes, quoted or not.
pub fn unquoted(tag: impl AsRef<str>) -> String {
    ETag::new(tag).into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_and_bare_forms_are_one_tag() {
        let bare = ETag::new("abc-3");
        let quoted = ETag::new("\"abc-3\"");
        assert_eq!(bare, quoted);
        assert_eq!(quoted.as_str(), "abc-3");
        assert_eq!(quoted.to_string(), "abc-3");
        assert_eq!(bare.quoted(), "\"abc-3\"");
        assert_eq!(ETag::new(bare.quoted()), bare, "quoting round-trips");
        assert_eq!(unquoted("\"x\""), "x");
        assert_eq!(String::from(bare.clone()), "abc-3");
    }

    #[test]
    fn matching_ignores_quotes_but_not_content() {
        let tag = ETag::new("v1");
        assert!(tag.matches("v1"));
        assert!(tag.matches("\"v1\""));
        assert!(!tag.matches("v2"));
        assert!(!tag.matches("\"v1-2\""));
        assert!(!tag.matches(""));
        assert!(ETag::new("").matches("\"\""));
    }
}
