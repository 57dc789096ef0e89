//! Validated inputs: a value of these types obeys its rules.

use crate::error::{Error, Field, Result, Rule, Unit};
use std::fmt;
use unicode_normalization::UnicodeNormalization;

/// The most characters a nickname or an account name may have.
pub const MAX_NICKNAME_CHARS: usize = 255;
/// The most characters a credential type may have.
pub const MAX_CREDENTIAL_TYPE_CHARS: usize = 50;
/// The most characters an external user id may have.
pub const MAX_USER_ID_CHARS: usize = 255;
/// The most bytes a plaintext API or secret key may have.
pub const MAX_SECRET_BYTES: usize = 4096;

const CREDENTIAL_TYPE_CHARS: &str = "a-z 0-9 _ . -";

/// A credential's nickname: trimmed, NFC-normalised, 1 to 255 characters, no control
/// characters.
///
/// ```
/// use credential_store::Nickname;
/// assert_eq!(Nickname::parse("  Main paper ").unwrap().as_str(), "Main paper");
/// // "e" + combining acute accent becomes one precomposed "é".
/// assert_eq!(Nickname::parse("Cafe\u{0301}").unwrap().as_str(), "Caf\u{e9}");
/// assert!(Nickname::parse(" ").is_err());
/// assert!(Nickname::parse("a\0b").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nickname(String);

impl Nickname {
    /// Trims, normalises to NFC and checks a nickname.
    pub fn parse(input: &str) -> Result<Self> {
        display_text(Field::Nickname, input, MAX_NICKNAME_CHARS).map(Nickname)
    }

    /// The nickname as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Nickname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A credential type such as `alpaca_paper`: 1 to 50 characters of `[a-z0-9_.-]`,
/// starting with a letter or a digit. Not trimmed: a type is an identifier.
///
/// ```
/// use credential_store::CredentialType;
/// assert_eq!(CredentialType::parse("alpaca_paper").unwrap().as_str(), "alpaca_paper");
/// assert!(CredentialType::parse("Alpaca").is_err());
/// assert!(CredentialType::parse("_paper").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialType(String);

impl CredentialType {
    /// Checks a credential type.
    pub fn parse(input: &str) -> Result<Self> {
        let field = Field::CredentialType;
        type_length(input)?;
        for (position, character) in input.chars().enumerate() {
            let allowed = matches!(character, 'a'..='z' | '0'..='9' | '_' | '.' | '-');
            if !allowed {
                return Err(Error::invalid(
                    field,
                    Rule::InvalidCharacter {
                        character,
                        position,
                        allowed: CREDENTIAL_TYPE_CHARS,
                    },
                ));
            }
        }
        if !input.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return Err(Error::invalid(
                field,
                Rule::InvalidStart {
                    allowed: "a letter or a digit",
                },
            ));
        }
        Ok(CredentialType(input.to_owned()))
    }

    /// The type as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CredentialType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A nickname given on insert: none or blank means "use the credential type", as the
/// existing system does.
pub(crate) fn insert_nickname(
    input: Option<&str>,
    credential_type: &CredentialType,
) -> Result<Nickname> {
    match input {
        Some(text) if !text.trim().is_empty() => Nickname::parse(text),
        _ => Ok(Nickname(credential_type.as_str().to_owned())),
    }
}

/// An account's display name: the nickname rules.
pub(crate) fn account_name(input: &str) -> Result<String> {
    display_text(Field::AccountName, input, MAX_NICKNAME_CHARS)
}

/// An external user id: kept exactly as given (it is an identity), 1 to 255
/// characters, no control characters.
pub(crate) fn user_id(input: &str) -> Result<&str> {
    let field = Field::UserId;
    let count = input.chars().count();
    if count == 0 {
        return Err(Error::invalid(field, Rule::Empty));
    }
    if count > MAX_USER_ID_CHARS {
        return Err(too_long(field, MAX_USER_ID_CHARS, count, Unit::Characters));
    }
    no_control(field, input)?;
    Ok(input)
}

/// A plaintext key: 1 to 4096 bytes. Its content never appears in an error.
pub(crate) fn secret(field: Field, plaintext: &str) -> Result<()> {
    if plaintext.is_empty() {
        return Err(Error::invalid(field, Rule::Empty));
    }
    if plaintext.len() > MAX_SECRET_BYTES {
        return Err(too_long(
            field,
            MAX_SECRET_BYTES,
            plaintext.len(),
            Unit::Bytes,
        ));
    }
    Ok(())
}

/// A credential type to look rows up by. Lookups accept what the existing system
/// may have stored outside today's rules (`Alpaca_Paper`): 1 to 50 characters, no
/// control characters, compared exactly.
pub(crate) fn lookup_type(input: &str) -> Result<&str> {
    type_length(input)?;
    no_control(Field::CredentialType, input)?;
    Ok(input)
}

/// A credential type's length: 1 to 50 characters.
fn type_length(input: &str) -> Result<()> {
    let count = input.chars().count();
    if count == 0 {
        return Err(Error::invalid(Field::CredentialType, Rule::Empty));
    }
    if count > MAX_CREDENTIAL_TYPE_CHARS {
        return Err(too_long(
            Field::CredentialType,
            MAX_CREDENTIAL_TYPE_CHARS,
            count,
            Unit::Characters,
        ));
    }
    Ok(())
}

/// The values a nickname lookup matches: the nickname as stored today (trimmed,
/// NFC), and the input exactly as given, which finds a nickname the existing system
/// stored untrimmed or in another normal form (`" Swing "`, `"Cafe\u{301}"`).
pub(crate) fn lookup_nicknames(input: &str) -> Result<(Nickname, String)> {
    let nickname = Nickname::parse(input)?;
    let exact = if input.chars().count() <= MAX_NICKNAME_CHARS {
        input.to_owned()
    } else {
        nickname.as_str().to_owned()
    };
    Ok((nickname, exact))
}

/// A batch size for maintenance operations.
pub(crate) fn batch_size(size: usize) -> Result<i64> {
    const MAX: usize = 100_000;
    if !(1..=MAX).contains(&size) {
        return Err(Error::invalid(
            Field::BatchSize,
            Rule::OutOfRange { min: 1, max: MAX },
        ));
    }
    Ok(size as i64)
}

/// The most bytes an input that NFC makes `max` characters or fewer can take: a
/// longer input is refused before it is normalised, so that no caller makes the
/// crate normalise megabytes to learn that they are too long. NFC composes at most
/// 4 code points into one character (the longest canonical decomposition, such as
/// U+1F82's), of at most 4 bytes each: 16 bytes per character, so the bound never
/// refuses an input that fits (255 Hangul syllables typed as conjoining jamo, NFD
/// as macOS gives it, are 2,295 bytes).
pub const MAX_INPUT_BYTES_PER_CHAR: usize = 16;

fn max_input_bytes(max: usize) -> usize {
    MAX_INPUT_BYTES_PER_CHAR * max
}

fn display_text(field: Field, input: &str, max: usize) -> Result<String> {
    let input = input.trim();
    if input.len() > max_input_bytes(max) {
        return Err(too_long(
            field,
            max_input_bytes(max),
            input.len(),
            Unit::Bytes,
        ));
    }
    let text: String = input.nfc().collect();
    let count = text.chars().count();
    if count == 0 {
        return Err(Error::invalid(field, Rule::Empty));
    }
    if count > max {
        return Err(too_long(field, max, count, Unit::Characters));
    }
    no_control(field, &text)?;
    Ok(text)
}

fn no_control(field: Field, text: &str) -> Result<()> {
    match text.chars().position(char::is_control) {
        Some(position) => Err(Error::invalid(field, Rule::ControlCharacter { position })),
        None => Ok(()),
    }
}

fn too_long(field: Field, max: usize, actual: usize, unit: Unit) -> Error {
    Error::invalid(field, Rule::TooLong { max, actual, unit })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_of(result: Result<impl fmt::Debug>) -> (Field, Rule) {
        match result {
            Err(Error::Invalid { field, rule }) => (field, rule),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn nickname_length_counts_characters_not_bytes() {
        let at_limit = "é".repeat(255); // 510 bytes
        assert_eq!(
            Nickname::parse(&at_limit).unwrap().as_str().chars().count(),
            255
        );
        let over = "é".repeat(256);
        assert_eq!(
            rule_of(Nickname::parse(&over)),
            (
                Field::Nickname,
                Rule::TooLong {
                    max: 255,
                    actual: 256,
                    unit: Unit::Characters
                }
            )
        );
    }

    #[test]
    fn nickname_is_trimmed_and_nfc_normalised_before_counting() {
        // 255 × (e + combining acute) is 510 characters before NFC, 255 after.
        let decomposed = "e\u{0301}".repeat(255);
        let n = Nickname::parse(&format!("  {decomposed}\t")).unwrap();
        assert_eq!(n.as_str(), "é".repeat(255));
        assert_eq!(
            Nickname::parse("Cafe\u{0301}").unwrap(),
            Nickname::parse("Café").unwrap()
        );
    }

    #[test]
    fn nickname_refuses_blank_and_control_characters() {
        assert_eq!(
            rule_of(Nickname::parse(" \t ")),
            (Field::Nickname, Rule::Empty)
        );
        assert_eq!(
            rule_of(Nickname::parse("a\0b")),
            (Field::Nickname, Rule::ControlCharacter { position: 1 })
        );
        assert_eq!(
            rule_of(Nickname::parse("line\nbreak")),
            (Field::Nickname, Rule::ControlCharacter { position: 4 })
        );
        // Format characters such as a right-to-left mark are not control characters.
        assert!(Nickname::parse("paper \u{200F}1").is_ok());
    }

    #[test]
    fn credential_type_rules() {
        assert!(CredentialType::parse("alpaca_paper").is_ok());
        assert!(CredentialType::parse("9.to-5_x").is_ok());
        assert!(CredentialType::parse(&"a".repeat(50)).is_ok());
        assert_eq!(
            rule_of(CredentialType::parse(&"a".repeat(51))),
            (
                Field::CredentialType,
                Rule::TooLong {
                    max: 50,
                    actual: 51,
                    unit: Unit::Characters
                }
            )
        );
        assert_eq!(
            rule_of(CredentialType::parse("")),
            (Field::CredentialType, Rule::Empty)
        );
        assert!(matches!(
            rule_of(CredentialType::parse("Alpaca")),
            (
                Field::CredentialType,
                Rule::InvalidCharacter {
                    character: 'A',
                    position: 0,
                    ..
                }
            )
        ));
        assert!(matches!(
            rule_of(CredentialType::parse(" alpaca")),
            (
                Field::CredentialType,
                Rule::InvalidCharacter { character: ' ', .. }
            )
        ));
        assert!(matches!(
            rule_of(CredentialType::parse("-paper")),
            (Field::CredentialType, Rule::InvalidStart { .. })
        ));
    }

    #[test]
    fn blank_insert_nickname_defaults_to_the_type() {
        let t = CredentialType::parse("alpaca_live").unwrap();
        assert_eq!(insert_nickname(None, &t).unwrap().as_str(), "alpaca_live");
        assert_eq!(
            insert_nickname(Some("   "), &t).unwrap().as_str(),
            "alpaca_live"
        );
        assert_eq!(
            insert_nickname(Some(" main "), &t).unwrap().as_str(),
            "main"
        );
    }

    #[test]
    fn error_messages_name_field_and_rule() {
        let err = Nickname::parse(&"x".repeat(256)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid nickname: must be at most 255 characters (got 256)"
        );
        let err = secret(Field::ApiKey, &"k".repeat(5000)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid api_key: must be at most 4096 bytes (got 5000)"
        );
    }
}
