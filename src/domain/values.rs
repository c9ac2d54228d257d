//! The register's value types: identifiers that check themselves, and its vocabulary.
//!
//! Every identifier here is parsed once, at the edge, and is valid from then on:
//!
//! ```text
//!   "610602100201"        ──RegionCode::parse──▶  RegionCode(610602100201)
//!   "610602"              ──RegionPrefix::parse─▶ RegionPrefix { digits: 6, .. } covers
//!                                                 610602000000 ..= 610602999999
//!   "61060219800101001X"  ──IdNumber::parse─────▶ IdNumber (checksum and birth date checked)
//!   "BT-2015-000123"      ──HouseholdId::parse──▶ HouseholdId
//! ```
//!
//! A failed parse is an [`InvalidValue`]: the reason a clerk can act on, without the field's name
//! (the caller knows where the value came from and adds that).
//!
//! This module is pure: no I/O, no clock, no storage keys.

use std::fmt;

use chrono::NaiveDate;
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// A calendar date (effective dates, procedure dates). Serialized as `YYYY-MM-DD`.
pub type Date = NaiveDate;

/// Why a value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue(pub String);

impl fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn invalid<T>(message: impl Into<String>) -> Result<T, InvalidValue> {
    Err(InvalidValue(message.into()))
}

/// A date's text, `YYYY-MM-DD`: what [`parse_date`] reads, written as chrono's `Display`
/// writes it, but digit by digit (`ShortText`) for the years 0 to 9999, where `Display` went
/// through `fmt` a character at a time; every API answer and every command the load generator
/// and the demo send carries several.
pub fn date_string(date: Date) -> String {
    match ShortText::new().date(&date) {
        Some(text) => text.as_str().to_owned(),
        None => date.to_string(),
    }
}

/// Parses a `YYYY-MM-DD` date.
pub fn parse_date(text: &str) -> Result<Date, InvalidValue> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return invalid(format!("'{text}' is not a date of the form YYYY-MM-DD"));
    }
    calendar_date(&bytes[0..4], &bytes[5..7], &bytes[8..10]).ok_or_else(|| {
        InvalidValue(format!(
            "'{text}' is not a calendar date of the form YYYY-MM-DD"
        ))
    })
}

/// The calendar date of ASCII digits for year, month and day, if it is one. Read digit by
/// digit: chrono's format parser was a visible cost where every request carries dates and
/// every member an ID number with a birth date.
fn calendar_date(year: &[u8], month: &[u8], day: &[u8]) -> Option<Date> {
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    NaiveDate::from_ymd_opt(
        i32::try_from(number(year)?).ok()?,
        number(month)?,
        number(day)?,
    )
}

/// A short ASCII text (digits and separators) written into a buffer on the stack: region codes,
/// and dates and moments as chrono writes them, for event bodies, packed states and
/// checkpoints. chrono's `Serialize` hands serde_json a `Display` that writes a character at a
/// time through `fmt`, each escaped on its own: a quarter of encoding an event's body (~3.6% of
/// the server's samples under the mixed batch load, `perf record --call-graph dwarf`); a region
/// code went through `format!` and a `String` each time a household's state was repacked. Only
/// the forms chrono writes with four-digit years and whole seconds are written here; for any
/// other, `None`, and the caller lets chrono write it.
struct ShortText {
    /// Every form written here fits: the longest, a moment to the nanosecond, is 30 bytes.
    bytes: [u8; 32],
    len: usize,
}

impl ShortText {
    fn new() -> Self {
        Self {
            bytes: [0; 32],
            len: 0,
        }
    }

    /// `n`'s last `width` decimal digits, zero-padded.
    fn digits(&mut self, n: impl Into<u64>, width: usize) -> &mut Self {
        let mut n: u64 = n.into();
        for at in (self.len..self.len + width).rev() {
            self.bytes[at] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        self.len += width;
        self
    }

    fn byte(&mut self, b: u8) -> &mut Self {
        self.bytes[self.len] = b;
        self.len += 1;
        self
    }

    /// `YYYY-MM-DD`, as chrono writes a date of the years 0 to 9999.
    fn date(&mut self, date: &Date) -> Option<&mut Self> {
        use chrono::Datelike;
        let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
        Some(
            self.digits(year, 4)
                .byte(b'-')
                .digits(date.month(), 2)
                .byte(b'-')
                .digits(date.day(), 2),
        )
    }

    /// RFC 3339 in UTC as chrono's `Serialize` writes it: the date, `T`, the time, the
    /// fraction in milli-, micro- or nanoseconds, whichever is exact (none if zero), and `Z`.
    /// A leap second (nanoseconds past a billion) is chrono's to write.
    fn instant(&mut self, instant: &chrono::DateTime<chrono::Utc>) -> Option<&mut Self> {
        use chrono::Timelike;
        let nanos = instant.nanosecond();
        if nanos >= 1_000_000_000 {
            return None;
        }
        let text = self
            .date(&instant.date_naive())?
            .byte(b'T')
            .digits(instant.hour(), 2)
            .byte(b':')
            .digits(instant.minute(), 2)
            .byte(b':')
            .digits(instant.second(), 2);
        let text = match nanos {
            0 => text,
            n if n % 1_000_000 == 0 => text.byte(b'.').digits(n / 1_000_000, 3),
            n if n % 1_000 == 0 => text.byte(b'.').digits(n / 1_000, 6),
            n => text.byte(b'.').digits(n, 9),
        };
        Some(text.byte(b'Z'))
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("only ASCII digits and separators")
    }
}

impl AsRef<str> for ShortText {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Dates as their text (`2018-12-31`) to a human-readable format, and as a day number to one
/// that is not (postcard: packed states and checkpoints), where the text took 11 bytes and the
/// number takes 3. For `#[serde(with = "date_form")]`; `date_form::option` for `Option<Date>`.
pub mod date_form {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Date;
    use chrono::Datelike;

    pub fn serialize<S: Serializer>(date: &Date, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            date.serialize(serializer)
        } else {
            serializer.serialize_i32(date.num_days_from_ce())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Date, D::Error> {
        if deserializer.is_human_readable() {
            return super::date_text::deserialize(deserializer);
        }
        let days = i32::deserialize(deserializer)?;
        Date::from_num_days_from_ce_opt(days)
            .ok_or_else(|| serde::de::Error::custom(format!("day {days} is outside the calendar")))
    }

    pub mod option {
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        use super::Date;

        #[derive(Serialize, Deserialize)]
        struct Form(#[serde(with = "super")] Date);

        pub fn serialize<S: Serializer>(
            date: &Option<Date>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            date.map(Form).serialize(serializer)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Date>, D::Error> {
            Ok(Option::<Form>::deserialize(deserializer)?.map(|Form(date)| date))
        }
    }
}

/// Dates read from their text (`2018-12-31`) digit by digit, for `#[serde(with = "date_text")]`
/// on the dates of event bodies. chrono's own parser (its format machinery) was ~10% of the
/// thread that reads the log back in a replay. Written as chrono writes them (digit by digit
/// too, `ShortText`), so a body's bytes do not change, and any text the fast path does not
/// take (a year past 9999, say) goes to chrono's parser: what was read before is read the same. A format that is not human-readable
/// gets chrono's form both ways, as without this module.
pub mod date_text {
    use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

    use super::{parse_date, Date, ShortText};

    pub fn serialize<S: Serializer>(date: &Date, serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = ShortText::new();
        match text.date(date) {
            Some(text) if serializer.is_human_readable() => serializer.serialize_str(text.as_str()),
            _ => date.serialize(serializer),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Date, D::Error> {
        if !deserializer.is_human_readable() {
            return Date::deserialize(deserializer);
        }
        deserializer.deserialize_str(Text)
    }

    /// Reads the text in place (JSON's borrowed strings), without an allocation.
    struct Text;

    impl de::Visitor<'_> for Text {
        type Value = Date;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a date of the form YYYY-MM-DD")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Date, E> {
            match parse_date(text) {
                Ok(date) => Ok(date),
                Err(_) => text.parse().map_err(E::custom),
            }
        }
    }
}

/// A moment as chrono writes it (RFC 3339 in UTC: `2026-11-29T17:08:53.123456789Z`), read
/// digit by digit: the `recorded_at` of event bodies, for `#[serde(with = "instant_text")]`.
/// As with [`date_text`], it is written as chrono writes it, and chrono reads whatever the fast
/// path does not take (an offset other than `Z`, a leap second, a lower-case `t`), so every
/// body reads as before.
pub mod instant_text {
    use chrono::{DateTime, NaiveDateTime, NaiveTime, Utc};
    use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

    use super::{calendar_date, ShortText};

    pub fn serialize<S: Serializer>(
        instant: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut text = ShortText::new();
        match text.instant(instant) {
            Some(text) if serializer.is_human_readable() => serializer.serialize_str(text.as_str()),
            _ => instant.serialize(serializer),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        if !deserializer.is_human_readable() {
            return DateTime::<Utc>::deserialize(deserializer);
        }
        deserializer.deserialize_str(Text)
    }

    /// `YYYY-MM-DDTHH:MM:SS`, then `.` and one to nine digits or nothing, then `Z`.
    pub(crate) fn read(text: &str) -> Option<DateTime<Utc>> {
        let bytes = text.as_bytes();
        let (stamp, rest) = bytes.split_at_checked(19)?;
        let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1, b'T', h0, h1, b':', n0, n1, b':', s0, s1] =
            *stamp
        else {
            return None;
        };
        let date = calendar_date(&[y0, y1, y2, y3], &[m0, m1], &[d0, d1])?;
        let two = |a: u8, b: u8| {
            (a.is_ascii_digit() && b.is_ascii_digit())
                .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
        };
        let nanos = match rest {
            [b'Z'] => 0,
            [b'.', digits @ .., b'Z'] if (1..=9).contains(&digits.len()) => {
                let mut nanos = 0u32;
                for d in digits {
                    if !d.is_ascii_digit() {
                        return None;
                    }
                    nanos = nanos * 10 + u32::from(d - b'0');
                }
                nanos * 10u32.pow(9 - digits.len() as u32)
            }
            _ => return None,
        };
        // A second of 60 (a leap second) is not a valid `from_hms_nano` second: chrono reads it.
        let time = NaiveTime::from_hms_nano_opt(two(h0, h1)?, two(n0, n1)?, two(s0, s1)?, nanos)?;
        Some(NaiveDateTime::new(date, time).and_utc())
    }

    struct Text;

    impl de::Visitor<'_> for Text {
        type Value = DateTime<Utc>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an RFC 3339 date and time")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<DateTime<Utc>, E> {
            match read(text) {
                Some(instant) => Ok(instant),
                None => text.parse().map_err(E::custom),
            }
        }
    }
}

/// A checked value's integer form, and the checked way back from one.
type BinaryOut<T> = fn(&T) -> u64;
type BinaryIn<T> = fn(u64) -> Result<T, InvalidValue>;

/// Serializes a checked value as its text and deserializes it through its `parse`, so that
/// nothing unchecked gets in; neither way allocates (a checkpoint holds millions of them).
///
/// With a `binary` pair, a format that is not human-readable (postcard: packed states and
/// checkpoints) gets the value as an integer instead, through the same checks on the way in;
/// JSON (event bodies, the API's debug output) always sees the text.
macro_rules! serde_as_text {
    ($name:ident, $expecting:literal) => {
        serde_as_text!(@impls $name, $expecting, None::<(BinaryOut<$name>, BinaryIn<$name>)>);
    };
    ($name:ident, $expecting:literal, binary: $to:expr, $from:expr) => {
        serde_as_text!(@impls $name, $expecting, Some(($to as BinaryOut<$name>, $from as BinaryIn<$name>)));
    };
    (@impls $name:ident, $expecting:literal, $binary:expr) => {
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match $binary {
                    Some((to, _)) if !serializer.is_human_readable() => {
                        serializer.serialize_u64(to(self))
                    }
                    // `as_str` gives a `&str` or a text that is one (`AsRef`).
                    _ => serializer.serialize_str(self.as_str().as_ref()),
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Text;
                impl serde::de::Visitor<'_> for Text {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<$name, E> {
                        $name::parse(text).map_err(E::custom)
                    }
                }
                match $binary {
                    Some((_, from)) if !deserializer.is_human_readable() => {
                        from(u64::deserialize(deserializer)?).map_err(serde::de::Error::custom)
                    }
                    // `string`, not `str`: the visitor copies the text anyway, and a checkpoint
                    // read from a stream can then reuse one small buffer for every id instead
                    // of keeping them all (postcard lends a `str` from the input).
                    _ => deserializer.deserialize_string(Text),
                }
            }
        }
    };
}

/// A household's number (户编号): 1–64 characters of `[0-9A-Za-z_-]`, chosen by the caller.
///
/// Held in a `CompactString`: the same 24 bytes as a `String`, but an id of up to 24 characters
/// (every 户编号 in practice) lives inline. The roll keys several indexes by household, so a
/// national roll would otherwise hold a hundred million small heap allocations of ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HouseholdId(CompactString);

serde_as_text!(HouseholdId, "a household id");

impl HouseholdId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        if text.is_empty() {
            return invalid("a household id is required");
        }
        if text.len() > Self::MAX_LEN {
            return invalid(format!(
                "a household id has at most {} characters, this one has {}",
                Self::MAX_LEN,
                text.len()
            ));
        }
        if let Some(c) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return invalid(format!(
                "a household id uses only 0-9 A-Z a-z _ -, not {c:?}"
            ));
        }
        Ok(Self(CompactString::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A sentinel that orders before every valid id (it is empty, which no valid id is), for
    /// the lower bound of ranges keyed by household.
    pub fn before_all() -> Self {
        Self(CompactString::default())
    }
}

impl TryFrom<String> for HouseholdId {
    type Error = InvalidValue;
    fn try_from(text: String) -> Result<Self, InvalidValue> {
        Self::parse(&text)
    }
}

impl From<HouseholdId> for String {
    fn from(id: HouseholdId) -> String {
        id.0.into_string()
    }
}

impl fmt::Display for HouseholdId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A 12-digit statistical division code (统计用区划代码): province(2) city(2) county(2)
/// township(3) village(3). Kept as a number, so that codes order as their digits do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionCode(u64);

// Its 12 digits in event bodies; its number in packed states and checkpoints, where the text
// took 13 bytes and went through `format!` and a `String` every time.
serde_as_text!(RegionCode, "a 12-digit region code", binary: RegionCode::value, RegionCode::from_value);

impl RegionCode {
    pub const DIGITS: u8 = 12;

    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        if text.len() != usize::from(Self::DIGITS) || !text.bytes().all(|b| b.is_ascii_digit()) {
            return invalid(format!(
                "a region code is 12 digits (province 2, city 2, county 2, township 3, village 3), not '{text}'"
            ));
        }
        text.parse()
            .map(Self)
            .or_else(|_| invalid(format!("'{text}' is not a region code")))
    }

    pub fn value(&self) -> u64 {
        self.0
    }

    /// The code whose digits are `value`'s, zero-padded to 12, if it has no more.
    pub fn from_value(value: u64) -> Result<Self, InvalidValue> {
        if value < 10u64.pow(u32::from(Self::DIGITS)) {
            Ok(Self(value))
        } else {
            invalid(format!("{value} has more digits than a region code"))
        }
    }

    /// Its 12 digits, leading zeros included.
    fn as_str(&self) -> ShortText {
        let mut text = ShortText::new();
        text.digits(self.0, usize::from(Self::DIGITS));
        text
    }

    /// The code's first `digits` digits, as a prefix.
    pub fn truncate(self, digits: u8) -> RegionPrefix {
        let digits = digits.min(Self::DIGITS);
        RegionPrefix {
            digits,
            value: self.0 / 10u64.pow(u32::from(Self::DIGITS - digits)),
        }
    }
}

/// Its 12 digits, as `to_string` gives them but without going through `fmt`: the API writes
/// one for every household it answers with.
impl From<RegionCode> for String {
    fn from(code: RegionCode) -> String {
        code.as_str().as_ref().to_owned()
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str().as_ref())
    }
}

/// A region prefix of 0 (the whole store), 2, 4, 6, 9 or 12 digits: every level of the
/// division tree. It covers a contiguous range of [`RegionCode`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionPrefix {
    digits: u8,
    value: u64,
}

impl RegionPrefix {
    /// The lengths a prefix may have, one per level of the division tree.
    pub const LEVELS: [u8; 6] = [0, 2, 4, 6, 9, 12];

    pub const ALL: RegionPrefix = RegionPrefix {
        digits: 0,
        value: 0,
    };

    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        let digits = u8::try_from(text.len()).unwrap_or(u8::MAX);
        if !Self::LEVELS.contains(&digits) || !text.bytes().all(|b| b.is_ascii_digit()) {
            return invalid(format!(
                "a region prefix has 0, 2, 4, 6, 9 or 12 digits (whole store, province, city, county, township, village), not '{text}'"
            ));
        }
        let value = if text.is_empty() {
            0
        } else {
            text.parse()
                .or_else(|_| invalid(format!("'{text}' is not a region prefix")))?
        };
        Ok(Self { digits, value })
    }

    pub fn digits(self) -> u8 {
        self.digits
    }

    /// The first and last code the prefix covers.
    pub fn range(self) -> (RegionCode, RegionCode) {
        let scale = 10u64.pow(u32::from(RegionCode::DIGITS - self.digits));
        (
            RegionCode(self.value * scale),
            RegionCode(self.value * scale + (scale - 1)),
        )
    }

    pub fn contains(self, code: RegionCode) -> bool {
        let (first, last) = self.range();
        first <= code && code <= last
    }

    /// The length of the level below this one (12 stays 12).
    pub fn next_level(self) -> u8 {
        Self::LEVELS
            .iter()
            .copied()
            .find(|&d| d > self.digits)
            .unwrap_or(RegionCode::DIGITS)
    }
}

impl fmt::Display for RegionPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.digits == 0 {
            Ok(())
        } else {
            write!(
                f,
                "{:0width$}",
                self.value,
                width = usize::from(self.digits)
            )
        }
    }
}

/// An 18-character resident identity number (GB 11643): a 6-digit address code, an 8-digit
/// birth date, a 3-digit sequence and a check character (ISO 7064 MOD 11-2, `X` for 10).
///
/// Held as its 18 ASCII bytes inline, not as a `String`: the register keeps ~3 people per
/// household in its person index, and a national roll has ~100 million of them, so a number
/// costs 18 bytes and no allocation, and copying or hashing one never touches the heap. The
/// bytes order exactly as the text does.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdNumber([u8; 18]);

// In a packed state or a checkpoint, a number is its compact form: 9 bytes instead of 19, and
// a national roll holds ~100 million of them.
serde_as_text!(IdNumber, "an 18-character resident identity number", binary: IdNumber::compact, IdNumber::from_compact);

impl IdNumber {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: [u8; 11] = *b"10X98765432";

    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        let bytes = text.as_bytes();
        if bytes.len() != 18 || !bytes[..17].iter().all(u8::is_ascii_digit) {
            return invalid(format!(
                "an ID number is 17 digits and a check character (18 in all), not '{text}'"
            ));
        }
        let expected = Self::check_character(&bytes[..17]);
        let given = bytes[17].to_ascii_uppercase();
        if given != expected {
            return invalid(format!(
                "ID number '{text}' fails its checksum: the last character should be '{}'",
                char::from(expected)
            ));
        }
        if Self::date_of(&bytes[6..14]).is_none() {
            return invalid(format!(
                "ID number '{text}' carries the birth date {}, which is not a calendar date",
                &text[6..14]
            ));
        }
        let mut normalized = [0u8; 18];
        normalized.copy_from_slice(bytes);
        normalized[17] = given;
        Ok(Self(normalized))
    }

    /// Builds a valid number from its parts: a 6-digit address code, a birth date and a
    /// 3-digit sequence (odd for men, even for women), completing the check character.
    pub fn from_parts(area: u32, birth: Date, sequence: u16) -> Result<Self, InvalidValue> {
        if area > 999_999 || sequence > 999 {
            return invalid(format!(
                "an ID number needs a 6-digit area and a 3-digit sequence, not {area} and {sequence}"
            ));
        }
        let year = u32::try_from(chrono::Datelike::year(&birth))
            .ok()
            .filter(|year| *year <= 9999)
            .ok_or_else(|| InvalidValue(format!("birth date {birth} does not fit an ID number")))?;
        // The 17 digits as one number, which `from_compact` completes with the check
        // character: two `format!`s and a `parse` took 13% of the load generator's CPU.
        let compact = u64::from(area) * 100_000_000_000
            + u64::from(year) * 10_000_000
            + u64::from(chrono::Datelike::month(&birth)) * 100_000
            + u64::from(chrono::Datelike::day(&birth)) * 1_000
            + u64::from(sequence);
        Self::from_compact(compact)
    }

    /// The check character for 17 leading digits (ISO 7064 MOD 11-2).
    pub fn check_character(first17: &[u8]) -> u8 {
        let sum: u32 = first17
            .iter()
            .zip(Self::WEIGHTS)
            .map(|(d, w)| u32::from(d - b'0') * w)
            .sum();
        Self::CHECK[(sum % 11) as usize]
    }

    /// The calendar date of eight ASCII digits `YYYYMMDD`, if it is one. Read digit by digit:
    /// chrono's format parser was a visible cost where every member of every request (and of
    /// every household in a checkpoint) is checked.
    fn date_of(digits: &[u8]) -> Option<Date> {
        let number = |range: std::ops::Range<usize>| {
            digits[range].iter().try_fold(0u32, |n, d| {
                d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
            })
        };
        let year = i32::try_from(number(0..4)?).ok()?;
        NaiveDate::from_ymd_opt(year, number(4..6)?, number(6..8)?)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("IdNumber::parse admits 17 digits and 0-9 or X only")
    }

    /// The number as one integer: its 17 digits (the check character follows from them), so
    /// two numbers are equal exactly when their compact forms are. For indexes of millions.
    pub fn compact(&self) -> u64 {
        self.0[..17]
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))
    }

    /// The number whose [`compact`](Self::compact) form is `compact`, checked as
    /// [`parse`](Self::parse) checks text (the check character is computed, not trusted).
    pub fn from_compact(compact: u64) -> Result<Self, InvalidValue> {
        if compact >= 100_000_000_000_000_000 {
            return invalid(format!(
                "{compact} has more than the 17 digits of an ID number"
            ));
        }
        let mut digits = [b'0'; 18];
        let mut rest = compact;
        for digit in digits[..17].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        digits[17] = Self::check_character(&digits[..17]);
        // Seventeen digits and the check character computed for them: of what `parse` checks,
        // only the birth date is left. (Going through `parse` repeated the rest, and this runs
        // for every member of every state a replay or a decision unpacks.)
        if Self::date_of(&digits[6..14]).is_none() {
            return invalid(format!(
                "{compact:017} carries a birth date that is not a calendar date"
            ));
        }
        Ok(Self(digits))
    }

    /// The birth date the number carries (checked when it was parsed).
    pub fn birth_date(&self) -> Date {
        Self::date_of(&self.0[6..14]).expect("IdNumber::parse checked the birth date")
    }
}

impl TryFrom<String> for IdNumber {
    type Error = InvalidValue;
    fn try_from(text: String) -> Result<Self, InvalidValue> {
        Self::parse(&text)
    }
}

impl From<IdNumber> for String {
    fn from(id: IdNumber) -> String {
        id.as_str().to_owned()
    }
}

impl fmt::Display for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdNumber").field(&self.as_str()).finish()
    }
}

/// Declares a closed vocabulary: a serde-friendly enum with its Chinese label.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The term the register uses.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }
        }
    };
}

vocabulary! {
    /// Where a household stands on the roll.
    Status { OnRoll => "在册", Exited => "已脱贫", Removed => "已剔除" }
}

vocabulary! {
    /// 户属性.
    Attribute { General => "一般贫困户", LowIncome => "低保贫困户", DestituteSupport => "特困供养贫困户" }
}

vocabulary! {
    /// 致贫原因.
    Cause {
        Illness => "因病", Disability => "因残", Schooling => "因学", Disaster => "因灾",
        LackOfLand => "缺土地", LackOfWater => "缺水", LackOfSkills => "缺技术",
        LackOfLabor => "缺劳力", LackOfFunds => "缺资金", PoorTransport => "交通条件落后",
        LackOfDrive => "自身发展动力不足", Other => "其它",
    }
}

vocabulary! {
    /// 防返贫监测: whether and why a household is watched.
    Monitoring {
        NotMonitored => "非监测对象", UnstableExited => "脱贫不稳定户",
        Edge => "边缘易致贫户", SuddenHardship => "突发严重困难户",
    }
}

vocabulary! {
    /// 与户主关系.
    Relation {
        Head => "户主", Spouse => "配偶", Child => "子女", ChildInLaw => "儿媳/女婿",
        Grandchild => "孙子女", Parent => "父母", Grandparent => "祖父母", Sibling => "兄弟姐妹",
        Other => "其他",
    }
}

vocabulary! {
    /// 健康状况.
    Health { Healthy => "健康", ChronicIllness => "长期慢性病", SeriousIllness => "患有大病", Disabled => "残疾" }
}

vocabulary! {
    /// 劳动技能.
    Labor { Skilled => "技能劳动力", Ordinary => "普通劳动力", Weak => "弱劳动力", Lost => "丧失劳动力", NoLabor => "无劳动力" }
}

vocabulary! {
    /// 文化程度.
    Schooling {
        Preschool => "学龄前", InSchool => "在校生", Illiterate => "文盲或半文盲", Primary => "小学",
        Junior => "初中", Senior => "高中", College => "大专及以上",
    }
}

vocabulary! {
    /// 帮扶措施.
    MeasureKind {
        Industry => "产业扶持", Employment => "就业扶持", Relocation => "易地扶贫搬迁",
        Housing => "危房改造", Education => "教育扶贫", Health => "健康扶贫",
        Microcredit => "小额信贷", Ecology => "生态扶贫", Guarantee => "兜底保障", Other => "其他",
    }
}

vocabulary! {
    /// Why a household leaves the roll.
    ExitReason { LiftedOut => "脱贫", Removed => "错评剔除", Dissolved => "自然销户" }
}

vocabulary! {
    /// Why a member joins a household.
    MemberAddedReason { Birth => "新生儿", MarriageIn => "婚入", TransferIn => "迁入", Other => "其他" }
}

vocabulary! {
    /// Why a member leaves a household.
    MemberRemovedReason {
        Death => "死亡", MarriageOut => "婚出", Emigration => "迁出", Imprisonment => "服刑",
        TransferOut => "转出", Other => "其他",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Completes 17 digits with their check character.
    fn with_check(first17: &str) -> String {
        let check = IdNumber::check_character(first17.as_bytes());
        format!("{first17}{}", char::from(check))
    }

    #[test]
    fn id_numbers() {
        let good = with_check("61060219800101001");
        assert!(IdNumber::parse(&good).is_ok());
        // The standard's published example.
        assert!(IdNumber::parse("11010519491231002X").is_ok());
        assert!(IdNumber::parse("11010519491231002x").is_ok());
        for bad in [
            "",
            "1101051949123100",
            "110105194912310021",
            "11010519491331002X",
            "1101051949123100AX",
            "11010519491231002X0",
        ] {
            assert!(IdNumber::parse(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(
            IdNumber::parse("11010519491231002X").unwrap().birth_date(),
            NaiveDate::from_ymd_opt(1949, 12, 31).unwrap()
        );
    }

    #[test]
    fn id_numbers_from_their_parts() {
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        // (area, birth, sequence) → the ID, or None where the parts do not make one.
        let cases = [
            (110105, date(1949, 12, 31), 2, Some("11010519491231002X")),
            (
                610602,
                date(2008, 3, 7),
                41,
                Some(&*with_check("61060220080307041")),
            ),
            (
                1,
                date(987, 1, 2),
                999,
                Some(&*with_check("00000109870102999")),
            ),
            (1_000_000, date(1980, 1, 1), 1, None),
            (610602, date(1980, 1, 1), 1000, None),
            (610602, date(10_000, 1, 1), 1, None),
            (610602, date(-1, 1, 1), 1, None),
        ];
        for (area, birth, sequence, want) in cases {
            let got = IdNumber::from_parts(area, birth, sequence).ok();
            assert_eq!(
                got.as_ref().map(ToString::to_string).as_deref(),
                want,
                "{area} {birth} {sequence}"
            );
        }
    }

    #[test]
    fn region_codes_and_prefixes() {
        let code = RegionCode::parse("610602100201").unwrap();
        assert_eq!(code.to_string(), "610602100201");
        for bad in ["61060210020", "6106021002011", "61060210020a", ""] {
            assert!(RegionCode::parse(bad).is_err(), "{bad:?}");
            assert!(
                serde_json::from_value::<RegionCode>(bad.into()).is_err(),
                "{bad:?}"
            );
        }
        // Its digits in JSON (event bodies), leading zeros too; its number in postcard
        // (packed states, checkpoints), read back through the same bound.
        for text in ["610602100201", "000000000001", "999999999999"] {
            let code = RegionCode::parse(text).unwrap();
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<RegionCode>(&json).unwrap(), code);
            let packed = postcard::to_stdvec(&code).unwrap();
            assert!(packed.len() <= 6, "{text}: {} bytes", packed.len());
            assert_eq!(postcard::from_bytes::<RegionCode>(&packed).unwrap(), code);
        }
        let too_long = postcard::to_stdvec(&1_000_000_000_000u64).unwrap();
        assert!(postcard::from_bytes::<RegionCode>(&too_long).is_err());
        for (text, covers) in [
            ("", true),
            ("61", true),
            ("6106", true),
            ("610602", true),
            ("610602100", true),
            ("610602100201", true),
            ("610603", false),
            ("610602101", false),
        ] {
            let prefix = RegionPrefix::parse(text).unwrap();
            assert_eq!(prefix.contains(code), covers, "{text}");
            assert_eq!(prefix.to_string(), text);
        }
        for bad in [
            "6",
            "610",
            "61060",
            "6106021",
            "61060210",
            "6106021002",
            "61x602",
        ] {
            assert!(RegionPrefix::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(code.truncate(9).to_string(), "610602100");
        assert_eq!(RegionPrefix::parse("610602").unwrap().next_level(), 9);
        assert_eq!(RegionPrefix::ALL.next_level(), 2);
    }

    #[test]
    fn household_ids() {
        assert!(HouseholdId::parse("BT-2015_0001").is_ok());
        for bad in ["", "a b", "户1", &"x".repeat(65)] {
            assert!(HouseholdId::parse(bad).is_err(), "{bad}");
        }
    }

    /// Packed states and checkpoints (postcard) carry numbers and dates compactly and read
    /// them back through the same checks; JSON still carries the text.
    #[test]
    fn compact_binary_forms_round_trip_and_json_keeps_the_text() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Sample {
            person: IdNumber,
            #[serde(with = "date_form")]
            on: Date,
            #[serde(with = "date_form::option")]
            until: Option<Date>,
        }
        let date = |text: &str| parse_date(text).expect("a valid date");
        let cases = [
            ("11010519491231002X", "0001-01-01", None),
            ("11010519491231002X", "1949-12-31", Some("2018-12-31")),
            (
                with_check("61060219800101001").as_str(),
                "2020-02-29",
                Some("9999-12-31"),
            ),
        ]
        .map(|(person, on, until)| Sample {
            person: IdNumber::parse(person).expect("a valid number"),
            on: date(on),
            until: until.map(date),
        });
        for sample in cases {
            let bytes = postcard::to_stdvec(&sample).expect("encodes");
            assert!(
                bytes.len() <= 9 + 3 + 4,
                "{} bytes for {sample:?}",
                bytes.len()
            );
            let read: Sample = postcard::from_bytes(&bytes).expect("decodes");
            assert_eq!(read, sample);
            let json = serde_json::to_string(&sample).expect("encodes");
            assert!(
                json.contains(&format!("\"{}\"", sample.person.as_str())),
                "{json}"
            );
            assert!(json.contains(&format!("\"{}\"", sample.on)), "{json}");
            assert_eq!(serde_json::from_str::<Sample>(&json).ok(), Some(sample));
        }
        // A compact form with too many digits, or whose birth date is no date, is refused.
        for bad in [100_000_000_000_000_000u64, 11_010_519_491_331_002] {
            let bytes = postcard::to_stdvec(&(bad, 0i32, None::<i32>)).expect("encodes");
            assert!(postcard::from_bytes::<Sample>(&bytes).is_err(), "{bad}");
        }
        let outside = postcard::to_stdvec(&(11_010_519_491_231_002u64, i32::MAX, None::<i32>));
        let outside = outside.expect("encodes");
        assert!(postcard::from_bytes::<Sample>(&outside).is_err());
    }

    #[test]
    fn dates() {
        assert!(parse_date("2018-12-31").is_ok());
        for bad in ["2018-02-30", "2018-1-1", "20181231", "", "2018-12-31T00:00"] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Stamped {
        #[serde(with = "date_text")]
        on: Date,
        #[serde(with = "instant_text")]
        at: chrono::DateTime<chrono::Utc>,
    }

    /// chrono, as serde reads dates and moments without these modules, is the oracle: a text
    /// reads to the same value or fails as it does.
    fn reads_as_chrono_does(on: &str, at: &str) {
        let json = serde_json::json!({ "on": on, "at": at }).to_string();
        let ours = serde_json::from_str::<Stamped>(&json).ok();
        let chrono = on.parse::<Date>().ok().zip(at.parse().ok());
        assert_eq!(ours, chrono.map(|(on, at)| Stamped { on, at }), "{json}");
    }

    #[test]
    fn dates_and_moments_in_text_read_as_chrono_reads_them() {
        let cases = [
            ("2018-12-31", "2026-11-29T17:08:53.123456789Z"),
            ("2018-12-31", "2026-11-29T17:08:53Z"),
            ("0001-01-01", "2026-11-29T17:08:53.1Z"),
            ("9999-12-31", "2026-11-29T17:08:53.123Z"),
            ("2020-02-29", "2026-11-29T17:08:53.000001Z"),
            ("+12345-01-01", "2026-11-29T17:08:53+08:00"),
            ("2018-02-30", "2026-11-29T23:59:60.5Z"),
            ("2018-1-1", "2026-11-29t17:08:53Z"),
            ("2018-12-31", "2026-11-29 17:08:53Z"),
            ("2018-12-31", "2026-11-29T17:08:53.1234567890Z"),
            ("2018-12-31", "2026-11-29T17:08:53.Z"),
            ("2018-12-31", "2026-11-29T24:00:00Z"),
            ("2018-12-31", "2026-13-29T17:08:53Z"),
            ("2018-12-31", "2026-11-29T17:08:5aZ"),
            ("2018-12-31", "2026-11-29T17:08:53"),
            ("", ""),
        ];
        for (on, at) in cases {
            reads_as_chrono_does(on, at);
        }
    }

    use proptest::prelude::*;

    proptest! {
        /// chrono's `Display` is the oracle for `date_string`, on every day chrono holds (the
        /// years outside 0 to 9999 are chrono's to write), and `parse_date` reads it back.
        #[test]
        fn a_date_is_written_as_chrono_writes_it(day in -4_000_000i32..4_000_000) {
            let date = Date::from_num_days_from_ce_opt(day).expect("in chrono's range");
            let text = date_string(date);
            prop_assert_eq!(&text, &date.to_string());
            if (0..=9999).contains(&chrono::Datelike::year(&date)) {
                prop_assert_eq!(parse_date(&text).ok(), Some(date));
            }
        }

        /// `parse` is the oracle for `from_compact`: a compact form reads as its seventeen
        /// digits and their check character parse, or is refused as they are.
        #[test]
        fn a_compact_number_reads_as_its_text_parses(
            compact in prop_oneof![
                0u64..100_000_000_000_000_000,
                (0u64..1_000_000, 0i64..3_000_000, 0u64..1_000).prop_map(|(area, day, seq)| {
                    let birth = Date::from_num_days_from_ce_opt(day as i32).expect("in range");
                    let ymd: u64 = birth.format("%Y%m%d").to_string().parse().unwrap_or(0);
                    (area * 100_000_000 + ymd) * 1_000 + seq
                }),
            ],
        ) {
            let text = with_check(&format!("{compact:017}"));
            let parsed = IdNumber::parse(&text).ok();
            prop_assert_eq!(IdNumber::from_compact(compact).ok(), parsed);
            if let Some(number) = parsed {
                prop_assert_eq!(number.compact(), compact);
            }
        }

        /// Dates and moments are written byte for byte as chrono writes them, inside the years
        /// the fast path takes and outside them (chrono's range is ±262,143 years), leap seconds
        /// too.
        #[test]
        fn dates_and_moments_are_written_as_chrono_writes_them(
            // Mostly the years 0 to 9999, which the fast path writes.
            day in prop_oneof![4 => 0i32..3_652_425, 1 => -95_000_000i32..96_000_000],
            seconds in prop_oneof![
                4 => -62_167_219_200i64..253_402_300_800,
                1 => -8_334_000_000_000i64..8_210_000_000_000,
            ],
            nanos in prop_oneof![
                Just(0u32),
                (0u32..1_000).prop_map(|n| n * 1_000_000),
                (0u32..1_000_000).prop_map(|n| n * 1_000),
                0u32..2_000_000_000,
            ],
        ) {
            #[derive(Serialize)]
            struct On(#[serde(with = "date_text")] Date);
            #[derive(Serialize)]
            struct At(#[serde(with = "instant_text")] chrono::DateTime<chrono::Utc>);
            if let Some(on) = Date::from_num_days_from_ce_opt(day) {
                prop_assert_eq!(serde_json::to_string(&On(on)).ok(), serde_json::to_string(&on).ok());
            }
            // A leap second only ends a minute.
            let seconds = if nanos >= 1_000_000_000 { seconds - seconds.rem_euclid(60) + 59 } else { seconds };
            if let Some(at) = chrono::DateTime::from_timestamp(seconds, nanos) {
                prop_assert_eq!(serde_json::to_string(&At(at)).ok(), serde_json::to_string(&at).ok());
            }
        }

        /// Every moment chrono writes in years 1 to 9999 reads back as itself, through the fast
        /// path.
        #[test]
        fn a_moment_as_chrono_writes_it_reads_back(
            // From 0001-01-01 to the end of 9999, in seconds.
            seconds in 0i64..315_537_897_600,
            nanos in prop_oneof![
                Just(0u32),
                (0u32..1_000).prop_map(|n| n * 1_000_000),
                (0u32..1_000_000).prop_map(|n| n * 1_000),
                0u32..1_000_000_000,
            ],
        ) {
            let at = chrono::DateTime::from_timestamp(seconds - 62_135_596_800, nanos)
                .expect("a moment in range");
            let stamped = Stamped { on: at.date_naive(), at };
            let json = serde_json::to_string(&stamped).expect("encodes");
            let text = serde_json::to_value(at).expect("encodes");
            let text = text.as_str().expect("a moment is text");
            prop_assert_eq!(instant_text::read(text), Some(at), "{}", text);
            prop_assert_eq!(serde_json::from_str::<Stamped>(&json).ok(), Some(stamped));
        }
    }
}
